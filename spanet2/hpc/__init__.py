"""spanet2.hpc."""
