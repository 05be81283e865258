"""spanet2.generate."""
