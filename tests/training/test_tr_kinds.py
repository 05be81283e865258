"""The model-kind registry: every kind answers the same questions; hpc and cli never branch on a kind's name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from spanet2.errors import InputError
from spanet2.training import kinds
from spanet2.training.dnn import DNNOptions
from spanet2.training.options import Options

PACKAGE = Path(kinds.__file__).resolve().parents[1]
_NAME_SWITCH = re.compile(r"""[=!]=\s*["'](spanet2|dnn)["']|["'](spanet2|dnn)["']\s*[=!]=""")


def test_the_registered_kinds():
    assert kinds.kind_names() == ("spanet2", "dnn")
    spanet2, dnn = kinds.get_kind("spanet2"), kinds.get_kind("dnn")
    assert spanet2.option_names() == frozenset(f.name for f in dataclasses.fields(Options))
    assert dnn.option_names() == frozenset(f.name for f in dataclasses.fields(DNNOptions))
    assert spanet2.default_options() == Options() and dnn.default_options() == DNNOptions()
    assert (spanet2.uses_event_file, spanet2.pairs_jets, spanet2.multi_worker, spanet2.gpu_option) == (
        True, True, True, "num_gpu",
    )  # fmt: skip
    assert (dnn.uses_event_file, dnn.pairs_jets, dnn.multi_worker, dnn.gpu_option) == (
        False,
        False,
        False,
        None,
    )
    assert (spanet2.train_command, dnn.train_command) == ("train", "dnn train")


def test_an_unknown_kind_names_the_flag():
    with pytest.raises(InputError, match="--model: expected spanet2 or dnn, got 'bdt'"):
        kinds.get_kind("bdt")


@pytest.mark.parametrize("name", ["spanet2", "dnn"])
def test_options_round_trip_through_the_kind(name, tmp_path):
    kind = kinds.get_kind(name)
    options = kind.default_options().replace(epochs=3)
    kind.save_options(options, tmp_path / "options.json")
    assert kind.load_options(tmp_path / "options.json") == options


def test_hpc_and_cli_look_kinds_up():
    switches = []
    for part in ("hpc", "cli"):
        for path in sorted((PACKAGE / part).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if _NAME_SWITCH.search(line):
                    switches.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not switches, "\n".join(switches)
