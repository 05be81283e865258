"""κλ constraints from the event store: signal model, selection, templates, likelihoods, intervals, L scans."""

__all__: list[str] = []
