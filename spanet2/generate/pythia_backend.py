"""The Pythia 8 + fastjet back end's public names (the code lives in ``spanet2.generate.pythia``).

The [pythia] extra: without it importing this module fails with ImportError, which the generate CLI
reports as a one-line user error (``--shower pythia`` needs ``pip install '.[pythia]'``).
"""

from __future__ import annotations

from spanet2.generate.pythia.extraction import ShoweredBlock

# private helpers that tests/generate/test_gen_pythia.py imports from here (`as`: a deliberate re-export)
from spanet2.generate.pythia.extraction import _extract as _extract
from spanet2.generate.pythia.extraction import _heaviest_quark as _heaviest_quark
from spanet2.generate.pythia.shower import (
    DEFAULT_PYTHIA,
    PythiaError,
    PythiaSettings,
    pythia_data_dir,
    pythia_detector,
    pythia_shower,
    shower_block,
)

__all__ = [
    "PythiaError",
    "PythiaSettings",
    "DEFAULT_PYTHIA",
    "pythia_data_dir",
    "ShoweredBlock",
    "shower_block",
    "pythia_shower",
    "pythia_detector",
]
