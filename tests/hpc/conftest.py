"""hpc test fixtures: one local Ray (2 CPUs, dashboard on 127.0.0.1) shared by the in-process hpc tests.

Ray is started on first use and shut down as soon as the last hpc test has run (not at the end of the whole
session), so other areas' tests never run next to an idle Ray.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_cluster import slurm_two_nodes  # noqa: F401  (the two-node cluster of test_hpc_slurm_nodes.py)

_HERE = Path(__file__).resolve().parent
_STARTED: list = []


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray; `spanet2 tune`/`repeat` run in-process attach to it instead of starting their own."""
    ray = pytest.importorskip("ray")
    from spanet2.hpc.cluster import _set_auth_mode, _short_temp_dir

    if not ray.is_initialized():
        _set_auth_mode()  # token auth, as spanet2's own sessions (cluster.ray_session)
        context = ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=_short_temp_dir(),
        )
        ray.test_dashboard_url = "http://" + context.dashboard_url if context.dashboard_url else None
        _STARTED.append(ray)
    yield ray
    _shutdown()


def _shutdown() -> None:
    while _STARTED:
        _STARTED.pop().shutdown()


def pytest_runtest_teardown(item, nextitem):
    if _STARTED and (nextitem is None or _HERE not in Path(str(nextitem.path)).resolve().parents):
        _shutdown()
