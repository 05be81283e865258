"""spanet2.training."""
