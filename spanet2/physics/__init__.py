"""spanet2.physics."""
