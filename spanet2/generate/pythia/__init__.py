"""Pythia 8 + fastjet detector back end: shower and hadronise our parton events, cluster anti-kT jets.

Needs the [pythia] extra (pythia8mc, fastjet, awkward). The rooms, in the order an event passes them:

- ``records.py``: the parton events as Les Houches records (colour flow, incoming partons) and the
  ``LHAup`` feed that hands them to Pythia.
- ``shower.py``: Pythia's configuration, one Pythia per process, blocks of events with their own seeds,
  the process pool; ``pythia_shower`` / ``pythia_detector``, the entry points.
- ``extraction.py``: from Pythia's event record to particle-level jets (fastjet), their B/C-hadron
  flavour, isolated leptons, neutrinos and the H → b b̄ truth quarks (``ShoweredBlock``).
- ``response.py``: the fast detector's smearing, acceptance and b-tagging (``generate/detector.py``)
  applied to those jets, and the MET.

Callers import the public names from ``spanet2.generate.pythia_backend``.
"""
