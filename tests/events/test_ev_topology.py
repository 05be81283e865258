"""Event-file YAML: the shipped hh4b topology, permutation groups, round trip, and every malformed case."""

from __future__ import annotations

import logging

import pytest

from spanet2.errors import ConfigError
from spanet2.events import topology as topo_mod
from spanet2.events.topology import dump_topology, load_topology


def test_public_api_pinned():
    assert sorted(topo_mod.__all__) == sorted(
        [
            "InputFeature",
            "InputSource",
            "Particle",
            "EventTopology",
            "load_topology",
            "parse_topology",
            "dump_topology",
            "topology_to_dict",
            "INPUT_KINDS",
            "KNOWN_NORMALIZATIONS",
        ]
    )


def test_hh4b_topology(hh4b_yaml):
    t = load_topology(hh4b_yaml)
    assert [s.name for s in t.sequential_inputs] == ["Source"]
    assert [s.name for s in t.global_inputs] == ["Kappa"]
    src = t.sequential_inputs[0]
    assert [(f.name, f.log_scale, f.normalize) for f in src.features] == [
        ("mass", True, True),
        ("pt", True, True),
        ("eta", False, True),
        ("phi", False, True),
        ("btag", False, False),
    ]
    assert t.feature_paths() == [
        "INPUTS/Source/mass",
        "INPUTS/Source/pt",
        "INPUTS/Source/eta",
        "INPUTS/Source/phi",
        "INPUTS/Source/btag",
        "INPUTS/Kappa/kappa",
    ]
    assert t.target_paths() == ["TARGETS/h1/b1", "TARGETS/h1/b2", "TARGETS/h2/b1", "TARGETS/h2/b2"]
    assert t.classification_paths() == ["CLASSIFICATIONS/EVENT/signal"]
    assert t.regressions == {}
    assert t.event_permutation_group() == [(0, 1), (1, 0)]
    assert t.daughter_permutation_group("h1") == [(0, 1), (1, 0)]
    assert t.daughter_source("h2", "b2") == "Source"


def test_round_trip_is_exact(hh4b_yaml, tmp_path):
    t = load_topology(hh4b_yaml)
    dump_topology(t, tmp_path / "out.yaml")
    t2 = load_topology(tmp_path / "out.yaml")
    assert t2.inputs == t.inputs and t2.particles == t.particles
    assert t2.event_permutations == t.event_permutations
    assert t2.particle_permutations == t.particle_permutations
    assert t2.classifications == t.classifications and t2.regressions == t.regressions


def _write(tmp_path, text, name="event.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


TTBAR = """
INPUTS:
  SEQUENTIAL:
    Jets: {pt: log_normalize, eta: normalize, btag: none}
    Leptons: {pt: log_normalize, eta: normalize}
  GLOBAL:
    Met: {met: log_normalize}
EVENT:
  t1: [q1, q2, b]
  t2: [q1, q2, b]
  lt:
    - b: Jets
    - l: Leptons
PERMUTATIONS:
  EVENT: [[t1, t2]]
  t1: [[q1, q2]]
  t2: [[[q1, q2]]]
REGRESSIONS:
  EVENT: [neutrino_eta, {log_mass: log_gaussian}, [pt, laplacian]]
  t1:
    PARTICLE: [mass]
CLASSIFICATIONS:
  EVENT: [signal, n_tops]
"""


def test_general_topology(tmp_path):
    t = load_topology(_write(tmp_path, TTBAR))
    assert t.particle("lt").daughter_sources == ("Jets", "Leptons")
    assert t.daughter_source("t1", "b") == "Jets"
    assert t.daughter_source("lt", "l") == "Leptons"
    assert t.event_permutation_group() == [(0, 1, 2), (1, 0, 2)]
    assert t.particle_permutations["t1"] == t.particle_permutations["t2"] == ((("q1", "q2"),),)
    assert t.daughter_permutation_group("lt") == [(0, 1)]
    assert t.regressions["EVENT"] == (
        ("neutrino_eta", "gaussian"),
        ("log_mass", "log_gaussian"),
        ("pt", "laplacian"),
    )
    assert t.regression_paths() == [
        "REGRESSIONS/EVENT/neutrino_eta",
        "REGRESSIONS/EVENT/log_mass",
        "REGRESSIONS/EVENT/pt",
        "REGRESSIONS/t1/PARTICLE/mass",
    ]
    assert t.classification_paths() == ["CLASSIFICATIONS/EVENT/signal", "CLASSIFICATIONS/EVENT/n_tops"]
    dump_topology(t, tmp_path / "again.yaml")
    t2 = load_topology(tmp_path / "again.yaml")
    assert (t2.particles, t2.regressions, t2.event_permutations) == (
        t.particles,
        t.regressions,
        t.event_permutations,
    )


def test_symmetric_group_and_cycles(tmp_path):
    text = """
INPUTS: {SEQUENTIAL: {Source: {pt: none}}}
EVENT: {a: [x, y, z, w], b: [x, y], c: [x, y]}
PERMUTATIONS:
  EVENT: [b, c]
  a: [[x, y, z]]
"""
    t = load_topology(_write(tmp_path, text))
    assert len(t.daughter_permutation_group("a")) == 6  # full S3 on x, y, z; w fixed
    assert all(p[3] == 3 for p in t.daughter_permutation_group("a"))
    assert t.event_permutation_group() == [(0, 1, 2), (0, 2, 1)]
    cyc = load_topology(_write(tmp_path, text.replace("a: [[x, y, z]]", "a: [[[x, y, z]]]"), "c.yaml"))
    assert len(cyc.daughter_permutation_group("a")) == 3  # one 3-cycle generates Z3
    two = load_topology(_write(tmp_path, text.replace("a: [[x, y, z]]", "a: [[[x, y], [z, w]]]"), "d.yaml"))
    assert two.daughter_permutation_group("a") == [(0, 1, 2, 3), (1, 0, 3, 2)]


def test_unknown_normalisation_word_warns_naming_it(tmp_path, caplog):
    text = "INPUTS: {SEQUENTIAL: {Source: {pt: log_normalise, eta: normalize}}}\nEVENT: {h: [a, b]}\n"
    with caplog.at_level(logging.WARNING, logger="spanet2.events.topology"):
        t = load_topology(_write(tmp_path, text))
    assert "INPUTS/SEQUENTIAL/Source/pt='log_normalise'" in caplog.text
    assert "eta" not in caplog.text
    feat = t.inputs[0].features[0]
    assert (feat.log_scale, feat.normalize) == (True, False)  # substring rule, as upstream


GOOD = "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT: {h1: [b1, b2], h2: [b1, b2]}\n"

MALFORMED_YAML = [
    ("empty", "", "the event file is empty"),
    ("only-comment", "# nothing here\n", "the event file is empty"),
    ("not-a-mapping", "- INPUTS\n- EVENT\n", "expected a mapping"),
    ("unknown-section", GOOD + "TARGETS: {}\n", "TARGETS"),
    ("missing-inputs", "EVENT: {h1: [b1, b2]}\n", "INPUTS: missing required section"),
    ("missing-event", "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\n", "EVENT: missing required section"),
    ("bad-syntax", "INPUTS: {SEQUENTIAL: [\nEVENT: x\n", "not valid YAML"),
    (
        "unknown-input-kind",
        "INPUTS: {SEQUENCE: {Source: {pt: none}}}\nEVENT: {h1: [b1]}\n",
        "INPUTS/SEQUENCE",
    ),
    ("perm-unknown-particle", GOOD + "PERMUTATIONS: {EVENT: [[h1, h3]]}\n", "PERMUTATIONS/EVENT"),
    ("perm-unknown-owner", GOOD + "PERMUTATIONS: {h3: [[b1, b2]]}\n", "PERMUTATIONS/h3"),
    ("perm-unknown-daughter", GOOD + "PERMUTATIONS: {h1: [[b1, b3]]}\n", "PERMUTATIONS/h1"),
    ("perm-repeated-name", GOOD + "PERMUTATIONS: {EVENT: [[h1, h1]]}\n", "PERMUTATIONS/EVENT"),
    (
        "particle-no-daughters",
        "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT: {h1: [b1], h2: []}\n",
        "EVENT/h2",
    ),
    ("particle-null-daughters", "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT:\n  h1:\n", "EVENT/h1"),
    (
        "duplicate-particle",
        "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT:\n  h1: [b1]\n  h1: [b2]\n",
        "h1: duplicate key on line 4",
    ),
    ("duplicate-daughter", "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT: {h1: [b1, b1]}\n", "EVENT/h1"),
    (
        "duplicate-input",
        "INPUTS: {SEQUENTIAL: {Source: {pt: none}}, GLOBAL: {Source: {met: none}}}\nEVENT: {h1: [b1]}\n",
        "INPUTS: duplicate input name 'Source'",
    ),
    (
        "duplicate-feature",
        "INPUTS:\n  SEQUENTIAL:\n    Source:\n      pt: none\n      pt: log\nEVENT: {h1: [b1]}\n",
        "pt: duplicate key on line 5",
    ),
    (
        "unknown-daughter-input",
        "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT: {h1: [{b1: Jets}]}\n",
        "EVENT/h1/b1",
    ),
    (
        "feature-named-mask",
        "INPUTS: {SEQUENTIAL: {Source: {MASK: none}}}\nEVENT: {h1: [b1]}\n",
        "INPUTS/SEQUENTIAL/Source/MASK",
    ),
    ("no-sequential", "INPUTS: {GLOBAL: {Met: {met: none}}}\nEVENT: {h1: [b1]}\n", "INPUTS/SEQUENTIAL"),
    ("regression-type", GOOD + "REGRESSIONS: {EVENT: [{m: cauchy}]}\n", "REGRESSIONS/EVENT/m"),
    (
        "classification-unknown-particle",
        GOOD + "CLASSIFICATIONS: {h3: {PARTICLE: [x]}}\n",
        "CLASSIFICATIONS/h3",
    ),
    (
        "swap-different-sizes",
        "INPUTS: {SEQUENTIAL: {Source: {pt: none}}}\nEVENT: {h1: [b1, b2], h2: [b1]}\n"
        "PERMUTATIONS: {EVENT: [[h1, h2]]}\n",
        "PERMUTATIONS/EVENT",
    ),
]


@pytest.mark.parametrize("case,text,key", MALFORMED_YAML, ids=[c[0] for c in MALFORMED_YAML])
def test_malformed_event_file(case, text, key, tmp_path, run_cli, upstream_file):
    path = _write(tmp_path, text, f"{case}.yaml")
    with pytest.raises(ConfigError):
        load_topology(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = run_cli("validate", path, upstream_file)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(path) in err and key in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_event_file(tmp_path, run_cli, upstream_file):
    rc, _, err = run_cli("validate", tmp_path / "nope.yaml", upstream_file)
    assert rc == 2 and "nope.yaml" in err and "not found" in err and err.count("\n") == 1


UPSTREAM_STYLE = {
    # the shapes of upstream SPANet's shipped event files: empty GLOBAL / REGRESSIONS / CLASSIFICATIONS,
    # particles of different sizes, a one-daughter particle, event-level regressions
    "full_hadronic_ttbar": (
        "INPUTS:\n  SEQUENTIAL:\n    Source:\n      mass: log_normalize\n      pt: log_normalize\n"
        "      eta: normalize\n      phi: normalize\n      btag: none\n  GLOBAL:\n\n"
        "EVENT:\n  t1:\n    - q1\n    - q2\n    - b\n  t2:\n    - q1\n    - q2\n    - b\n"
        "PERMUTATIONS:\n    EVENT:\n      - [ t1, t2 ]\n    t1:\n      - [ q1, q2 ]\n    t2:\n      - [ q1, q2 ]\n"
        "REGRESSIONS:\n\nCLASSIFICATIONS:\n"
    ),
    "semi_leptonic_ttH": (
        "INPUTS:\n  SEQUENTIAL:\n    Momenta:\n      mass: log_normalize\n      pt: log_normalize\n"
        "      sin_phi: normalize\n      qtag: none\n  GLOBAL:\n    Met:\n      met: log_normalize\n"
        "EVENT:\n  lt:\n    - b\n  ht:\n    - b\n    - q1\n    - q2\n  h:\n    - b1\n    - b2\n"
        "PERMUTATIONS:\n    ht:\n      - [ q1, q2 ]\n    h:\n      - [ b1, b2 ]\n"
        "REGRESSIONS:\n  EVENT:\n    - neutrino_eta\n    - log_invariant_mass\n"
        "CLASSIFICATIONS:\n  EVENT:\n    - signal\n"
    ),
}


def test_upstream_style_files_load(tmp_path):
    full = load_topology(_write(tmp_path, UPSTREAM_STYLE["full_hadronic_ttbar"], "full.yaml"))
    assert full.global_inputs == () and full.classifications == {} and full.regressions == {}
    assert full.event_permutation_group() == [(0, 1), (1, 0)]
    assert full.daughter_permutation_group("t1") == [(0, 1, 2), (1, 0, 2)]
    tth = load_topology(_write(tmp_path, UPSTREAM_STYLE["semi_leptonic_ttH"], "tth.yaml"))
    assert tth.particle_names == ("lt", "ht", "h") and tth.event_permutation_group() == [(0, 1, 2)]
    assert tth.daughter_permutation_group("lt") == [(0,)]
    assert tth.target_paths() == [
        "TARGETS/lt/b",
        "TARGETS/ht/b",
        "TARGETS/ht/q1",
        "TARGETS/ht/q2",
        "TARGETS/h/b1",
        "TARGETS/h/b2",
    ]
    assert tth.regression_paths() == [
        "REGRESSIONS/EVENT/neutrino_eta",
        "REGRESSIONS/EVENT/log_invariant_mass",
    ]
