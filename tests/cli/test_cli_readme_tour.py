"""The README's "A short tour" runs as written: its commands are read from README.md and executed in order in a
fresh folder, at the reduced sizes of the documented size switch SPANET2_SMOKE_TEST=1."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_commands(text: str) -> list[list[str]]:
    """The argv lists of the first code block under "## A short tour": continuation lines joined, trailing
    comments dropped, `a && b` split."""
    section = text.split("## A short tour", 1)[1]
    block = re.search(r"```[^\n]*\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


def test_the_tour_is_parsed_as_the_reader_sees_it():
    commands = tour_commands(README.read_text())
    assert commands[0] == ["spanet2", "init", "tour"] and commands[1] == ["cd", "tour"]
    assert all(c[0] in ("spanet2", "cd") for c in commands)
    generate = next(c for c in commands if c[1:3] == ["generate", "sets"])
    assert generate[generate.index("--kappa") + 1].startswith("-5,")  # a negative first value, as written
    store = next(c for c in commands if c[1:3] == ["store", "build"])
    assert store[-2:] == ["-o", "events.zarr"]  # the continuation line was joined
    assert [c[1] for c in commands if c[0] == "spanet2"][-3:] == ["scan", "tune", "study"]


@pytest.mark.slow
def test_readme_tour_runs_in_order_at_smoke_sizes(tmp_path):
    env = {**os.environ, "SPANET2_SMOKE_TEST": "1", "OMP_NUM_THREADS": "2", "RAY_DISABLE_USAGE_STATS": "1"}
    cwd = tmp_path
    for argv in tour_commands(README.read_text()):
        if argv[0] == "cd":
            cwd = cwd / argv[1]
            continue
        result = subprocess.run([sys.executable, "-m", "spanet2", *argv[1:]], cwd=cwd, env=env,
                                capture_output=True, text=True, timeout=900)  # fmt: skip
        assert result.returncode == 0, f"{shlex.join(argv)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        if argv[1] == "generate":
            assert "SPANET2_SMOKE_TEST is set" in result.stderr  # the switch says what it did
        if argv[1] == "validate":
            assert result.stdout.startswith("OK")
        if argv[1] == "tune":  # the dashboard and the tunnel to it are printed before the search
            assert "Ray dashboard: http://127.0.0.1:" in result.stdout and "ssh -N -L" in result.stdout
    tour = tmp_path / "tour"
    assert (tour / "configs/events/hh4b.yaml").is_file() and os.access(tour / "slurm/tune.sh", os.X_OK)
    with h5py.File(tour / "data/classification_test.h5") as h5:
        kappas = set(h5["INPUTS/Kappa/kappa"][()].tolist())
    assert {-5.0, -3.0, -1.0, 12.0} <= kappas
    with h5py.File(tour / "pred.h5") as h5:
        assert "EMBEDDINGS/EVENT" in h5  # predict -v = upstream's --output_vectors
    assert (tour / "events.zarr").is_dir()
    results = (tour / "runs/scan_tour/results.json").read_text()
    assert "min_dr_dnn" in results and "spanet2" in results  # the scan read both methods of the tour's store
    assert (tour / "runs/tune/best_options.json").is_file()
    assert (tour / "runs/demo/report.md").is_file() and (tour / "runs/demo/report.html").is_file()
