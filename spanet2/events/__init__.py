"""spanet2.events."""
