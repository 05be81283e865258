"""spanet2.report."""
