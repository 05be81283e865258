"""spanet2.stats."""
