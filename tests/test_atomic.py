"""atomic_path: outputs appear complete or not at all, and nothing of another kind is ever deleted."""

from __future__ import annotations

import pytest

from spanet2.atomic import atomic_path
from spanet2.errors import InputError


def test_a_file_never_replaces_a_folder_and_a_folder_never_replaces_a_file(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    with pytest.raises(InputError, match="exists as a folder"):
        with atomic_path(folder) as tmp:
            tmp.write_text("new")
    assert (folder / "keep.txt").read_text() == "keep"
    file = tmp_path / "f.h5"
    file.write_text("old")
    with pytest.raises(InputError, match="exists as a file"):
        with atomic_path(file, is_dir=True) as tmp:
            (tmp / "x").write_text("new")
    assert file.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.h5"]  # no temporary left behind


def test_same_kind_is_replaced_only_when_complete(tmp_path):
    file = tmp_path / "out.txt"
    file.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(file) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert file.read_text() == "old"
    with atomic_path(file) as tmp:
        tmp.write_text("new")
    assert file.read_text() == "new"
    store = tmp_path / "store"
    with atomic_path(store, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(store, is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in store.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt", "store"]


def test_cli_output_over_a_folder_is_exit_2_and_keeps_the_folder(tmp_path, run_cli):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    rc, _, err = run_cli(
        "generate",
        "background",
        "--events",
        5,
        "--background-model",
        "approx",
        "--output",
        folder,
        "--no-progress",
    )
    assert rc == 2 and "exists as a folder" in err and "Traceback" not in err
    assert (folder / "keep.txt").read_text() == "keep"


def test_a_symlinked_output_is_refused_and_nothing_is_left_behind(tmp_path):
    target = tmp_path / "real_configs"
    target.mkdir()
    (target / "mine.yaml").write_text("keep")
    link = tmp_path / "configs"
    link.symlink_to(target)
    with pytest.raises(InputError, match="symbolic link"):
        with atomic_path(link, is_dir=True) as tmp:
            (tmp / "x").write_text("new")
    assert (target / "mine.yaml").read_text() == "keep" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs", "real_configs"]


def test_init_force_over_a_symlinked_configs_is_one_line(tmp_path, run_cli):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "tour").mkdir()
    (tmp_path / "tour" / "configs").symlink_to(target)
    rc, _, err = run_cli("init", tmp_path / "tour", "--force")
    assert rc == 2 and "symbolic link" in err and "Traceback" not in err
    assert not [p for p in (tmp_path / "tour").iterdir() if p.name.startswith(".")]
