"""README.md stands alone and stays true: every repository path it names exists, it points nowhere outside the
repository, its upstream-flag table lists every upstream flag, and it cites SPANet's papers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from test_cli_flags import UPSTREAM_PREDICT, UPSTREAM_TEST, UPSTREAM_TRAIN

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _tracked_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {f.split("/", 1)[0] for f in files.splitlines() if "/" in f}


def test_every_repository_path_in_the_readme_exists():
    """Tokens like `configs/scan/tour.yaml` or `benchmarks/io.py` under a tracked top-level folder (commands
    write runs/, data/, ... which are not tracked, so they are not checked)."""
    tops = _tracked_top_level()
    tops_alternation = "|".join(map(re.escape, sorted(tops)))
    pattern = re.compile(r"(?<![\w./-])((?:" + tops_alternation + r")/[\w./{},*<>-]*[\w*}>])")
    checked, missing = 0, []
    for token in pattern.findall(README):
        if any(c in token for c in "<>*{"):  # a pattern (configs/options/*.json, runs/<name>/...)
            token = token.split("*")[0].split("<")[0].split("{")[0].rsplit("/", 1)[0]
        checked += 1
        if not (ROOT / token).exists():
            missing.append(token)
    assert checked > 20 and not missing, missing
    for name in ("LICENSE",):
        assert name in README and (ROOT / name).exists()


def test_readme_points_nowhere_outside_the_repository():
    assert not re.search(r"(?<!\.)\.\./", README) and "shared/" not in README


def test_readme_flag_table_lists_every_upstream_flag():
    table = README.split("### Upstream SPANet flags", 1)[1].split("\n### ", 1)[0]
    for command, flags in (("train", UPSTREAM_TRAIN), ("test", UPSTREAM_TEST), ("predict", UPSTREAM_PREDICT)):
        rows = [line for line in table.splitlines() if line.startswith(f"| {command} |")]
        for spelled in flags:
            name = "/".join(spelled)
            assert any(f"`{name}`" in row for row in rows), (command, name)
            meaning = flags[spelled]
            row = next(r for r in rows if f"`{name}`" in r)
            assert ("refused" in row) == (meaning is None), row


def test_readme_cites_spanets_papers():
    for needle in ("arXiv:2010.09206", "Phys. Rev. D 105 (2022) 112008", "arXiv:2106.03898",
                   "SciPost Phys. 12 (2022) 178"):  # fmt: skip
        assert needle in README, needle
