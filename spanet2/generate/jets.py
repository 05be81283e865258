"""Compatibility alias: the padded-jets record lives in `spanet2.events.jets`."""

from spanet2.events.jets import JetEvents, PaddedJets

__all__ = ["JetEvents", "PaddedJets"]
