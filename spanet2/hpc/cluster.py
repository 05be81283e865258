"""Connect to a Ray cluster (existing head or a local one), token auth, and the dashboard REST API."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spanet2.errors import InputError

__all__ = [
    "RaySession",
    "auth_token",
    "dashboard_get",
    "ensure_private_token",
    "node_identity",
    "ray_session",
    "tunnel_command",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySession:
    """What a driver needs to know about the Ray cluster it is attached to."""

    address: str
    dashboard_url: str | None
    started_here: bool
    total_cpus: float
    total_gpus: float


def auth_token() -> str | None:
    """Ray's cluster token: `RAY_AUTH_TOKEN`, else the file `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = _token_path()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def ensure_private_token() -> Path | None:
    """Make Ray's token file private before Ray can create it world-readable: create it (32 random bytes,
    hex) mode 0600 in a 0700 folder when missing, and fix the modes of an existing one. Returns its path,
    or None when the token comes from RAY_AUTH_TOKEN (nothing on disk)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = _token_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_uid == os.getuid():
        os.chmod(path.parent, 0o700)
    if not path.exists() or not path.read_text().strip():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return path


def node_identity() -> dict[str, str]:
    """Where this process runs: `node_name` (the SLURM node, else the host name) and the Ray `node_id`
    ("" outside Ray). Trials and repeats record it, so a run shows which node trained it."""
    name = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    node_id = ""
    with contextlib.suppress(ImportError):
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
    return {"node_name": name, "node_id": node_id}


def dashboard_get(url: str, route: str, *, token: str | None = None, timeout_s: float = 10.0) -> Any:
    """GET `route` (e.g. "/api/jobs/") from the Ray dashboard at `url` with the bearer token; parsed JSON.

    Raises urllib.error.HTTPError (401 without a valid token) or URLError when unreachable.
    """
    if not url.startswith("http"):
        url = "http://" + url
    token = auth_token() if token is None else token
    request = urllib.request.Request(url.rstrip("/") + route)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - local dashboard URL
        return json.loads(response.read().decode())


def tunnel_command(dashboard_port: int, *, host: str, login_node: str = "<login-node>") -> str:
    """The SSH command that forwards a dashboard bound to 127.0.0.1 on `host` to the user's laptop."""
    return (
        f"ssh -N -L {dashboard_port}:127.0.0.1:{dashboard_port} -J {login_node} {host}"
        f"   # then open http://127.0.0.1:{dashboard_port}"
    )


def _set_auth_mode() -> str:
    """Token auth (Ray >= 2.52) unless the user chose a mode: set RAY_AUTH_MODE explicitly, because Ray's own
    default depends on whether a token file happens to exist already."""
    mode = os.environ.get("RAY_AUTH_MODE") or "token"
    if os.environ.get("RAY_AUTH_MODE") != mode:
        os.environ["RAY_AUTH_MODE"] = mode
        if "ray._raylet" in sys.modules:
            # Ray's core caches its config (the auth mode included) when first imported: refresh it, as
            # Ray does itself when it switches a local cluster to token mode.
            with contextlib.suppress(ImportError, AttributeError):
                from ray._raylet import Config

                Config.initialize("")
    if mode != "token":
        log.warning("RAY_AUTH_MODE=%s: the Ray dashboard and jobs API accept anyone who reaches them", mode)
    return mode


def _short_temp_dir() -> str:
    """A private folder for Ray's session files: Ray makes its temp dir mode 0777, so it lives inside a
    0700 folder of ours (removed with it at the end). Ray's Unix sockets live under it: paths < 108 chars."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    private = tempfile.mkdtemp(prefix="rs2_", dir=base)  # mode 0700
    return os.path.join(private, "r")


@contextlib.contextmanager
def ray_session(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: float | None = None,
    dashboard: bool = True,
    dashboard_port: int | None = None,
) -> Iterator[RaySession]:
    """Attach to Ray for the duration of a `with` block.

    `address` (or `RAY_ADDRESS`): "auto", "ip:port" of a running head (e.g. the SLURM script's). Otherwise a
    local Ray is started with the dashboard bound to 127.0.0.1 and stopped at the end. Either way token auth
    is on (RAY_AUTH_MODE=token) unless RAY_AUTH_MODE says otherwise. Never calls `ray stop`: only what this process started is shut down.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():  # a caller (test, notebook) already attached us: use that, leave it running
        yield _describe(ray, started_here=False)
        return
    if _set_auth_mode() == "token":
        ensure_private_token()  # ours, 0600 in 0700, before Ray would write one 0644
    if address:
        try:
            context = ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise InputError("--address", address, f"cannot connect to the Ray cluster: {exc}") from None
        started = False
        dashboard_url = getattr(context, "dashboard_url", None) or os.environ.get("RAY_DASHBOARD_URL")
    else:
        temp_dir = _short_temp_dir()
        kwargs: dict[str, Any] = {
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "include_dashboard": dashboard,
            "dashboard_host": "127.0.0.1",
            "_temp_dir": temp_dir,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if dashboard_port is not None:
            kwargs["dashboard_port"] = dashboard_port
        context = ray.init(**kwargs)
        started = True
        dashboard_url = getattr(context, "dashboard_url", None)
    try:
        session = _describe(ray, started_here=started, dashboard_url=dashboard_url)
        log.info(
            "ray: %s (cpus %.0f, gpus %.2f), dashboard %s",
            session.address,
            session.total_cpus,
            session.total_gpus,
            session.dashboard_url,
        )
        yield session
    finally:
        if started or address:
            ray.shutdown()
        if started:  # the session folder (sockets, logs) is this process's own: private and removed at exit
            shutil.rmtree(os.path.dirname(temp_dir), ignore_errors=True)


def _describe(ray: Any, *, started_here: bool, dashboard_url: str | None = None) -> RaySession:
    context = ray.get_runtime_context()
    resources = ray.cluster_resources()
    url = dashboard_url or os.environ.get("RAY_DASHBOARD_URL") or None
    if url and not url.startswith("http"):
        url = "http://" + url
    return RaySession(
        address=context.gcs_address,
        dashboard_url=url,
        started_here=started_here,
        total_cpus=float(resources.get("CPU", 0.0)),
        total_gpus=float(resources.get("GPU", 0.0)),
    )
