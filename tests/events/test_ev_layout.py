"""events/layout.py: the one module that spells the HDF5 paths."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from spanet2.errors import DataError
from spanet2.events import hdf5, layout
from spanet2.events.topology import load_topology

PACKAGE = Path(layout.__file__).resolve().parents[1]
# a string literal that starts with a group of the layout and a '/': an HDF5 path spelled out
_PATH_LITERAL = re.compile(r"""f?["'](INPUTS|TARGETS|WEIGHTS|TRUTH|GLOBAL_EXTRA|EMBEDDINGS)/""")
# the event-file YAML (topology) names its sections with the same words; those are not HDF5 paths
_YAML_KEYS = {"events/topology.py", "training/model.py"}
# files another change owns for now; they still spell paths (the closing note lists them)
_NOT_YET = {"report/study.py", "report/study_report.py"}


def test_paths_are_built_by_the_layout():
    assert layout.input_path("Source", "pt") == "INPUTS/Source/pt"
    assert layout.mask_path("Source") == layout.JET_MASK_PATH == "INPUTS/Source/MASK"
    assert layout.target_path("h1", "b2") == "TARGETS/h1/b2"
    assert layout.classification_path("EVENT/signal") == layout.SIGNAL_LABEL_PATH
    assert layout.HH_PAIRING_PATHS == ("TARGETS/h1/b1", "TARGETS/h1/b2", "TARGETS/h2/b1", "TARGETS/h2/b2")
    assert layout.WEIGHT_PATH == "WEIGHTS/weight" and layout.KAPPA_TERMS_PATH == "WEIGHTS/kappa_terms"
    assert layout.strip_group(layout.SIGNAL_LABEL_PATH) == "EVENT/signal"
    assert layout.canonical_path("SpecialKey.Targets/h1/b1") == "TARGETS/h1/b1"


def test_hdf5_reexports_the_layout_names():
    for name in (
        "SPECIAL_KEY_SPELLINGS",
        "EXTRA_GROUPS",
        "canonical_path",
        "resolve_dataset",
        "first_mask_path",
    ):
        assert getattr(hdf5, name) is getattr(layout, name)


def test_no_other_module_spells_an_hdf5_path():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "events/layout.py" or rel in _YAML_KEYS | _NOT_YET:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _PATH_LITERAL.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_decode_inputs_zeroes_padding_and_names_bad_values(hh4b_yaml):
    topology = load_topology(hh4b_yaml)
    mask = np.array([[True, False]])
    arrays = {layout.mask_path("Source"): mask, layout.KAPPA_INPUT_PATH: np.array([1.0])}
    for feature in topology.input("Source").feature_names:
        arrays[layout.jet_path(feature)] = np.array([[2.0, np.nan]])
    sequential, masks, globals_ = layout.decode_inputs("f.h5", arrays, topology, {"Source": 3}, 0)
    assert sequential["Source"].shape == (1, 3, len(topology.input("Source").features))
    assert np.all(sequential["Source"][0, 1:] == 0.0) and masks["Source"].tolist() == [[True, False, False]]
    assert globals_["Kappa"].tolist() == [[1.0]]
    arrays[layout.jet_path("pt")] = np.array([[np.inf, 0.0]])
    with pytest.raises(DataError, match="INPUTS/Source/pt: non-finite value at event 7, jet 0"):
        layout.decode_inputs("f.h5", arrays, topology, {"Source": 2}, 7)
