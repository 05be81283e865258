"""Shared test configuration: gpu-marked tests skip without CUDA; helpers to run the CLI in-process."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing means no gpu either
        has_gpu = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


@pytest.fixture
def run_cli(capsys):
    """Run `spanet2 ARGS...` in-process; return (exit_code, stdout, stderr)."""
    from spanet2.cli import main

    def _run(*args: str):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else 2
        out = capsys.readouterr()
        return rc, out.out, out.err

    return _run
from slurm_cluster import slurm_cluster  # noqa: E402,F401
