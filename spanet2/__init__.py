"""SPANet2: symmetry-preserving attention networks for HH -> bbbb and kappa_lambda constraints."""

__version__ = "0.2.0"
