"""The scan's Dask scheduler speaks TLS: with the job's credentials a client runs tasks; without them
(plain TCP, TLS without a certificate, or another certificate) it is refused."""

from __future__ import annotations

import json
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spanet2.errors import InputError
from spanet2.stats.parallel import dask_client
from spanet2.stats.security import write_credentials

DASK = str(Path(sys.executable).parent / "dask")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def tls_scheduler(tmp_path):
    """`dask scheduler` + one `dask worker` started with the flags slurm/scan.sh uses; yields (file, tls dir)."""
    tls = write_credentials(tmp_path / "tls")
    flags = [
        "--tls-ca-file",
        str(tls / "ca.pem"),
        "--tls-cert",
        str(tls / "cert.pem"),
        "--tls-key",
        str(tls / "key.pem"),
    ]
    port = _free_port()
    sched_file = tmp_path / "scheduler.json"
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *flags,
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.exists(), "the TLS scheduler did not start"
        procs.append(
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    f"tls://127.0.0.1:{port}",
                    *flags,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--local-directory",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        yield sched_file, tls, port
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_credentials_are_private(tmp_path):
    tls = write_credentials(tmp_path / "tls")
    assert stat.S_IMODE(os.stat(tls).st_mode) == 0o700
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert stat.S_IMODE(os.stat(tls / name).st_mode) == 0o600
    assert (tls / "key.pem").read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_client_without_the_credentials_is_refused(tls_scheduler):
    from distributed import Client
    from distributed.security import Security

    sched_file, tls, port = tls_scheduler
    address = json.loads(sched_file.read_text())["address"]
    assert address == f"tls://127.0.0.1:{port}"
    # with the credentials: tasks run on the job's worker
    with dask_client(str(sched_file), tls_dir=tls) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6
        assert client.dashboard_link.startswith("http://127.0.0.1:")
    # without them: the scan refuses to try, and every other way in is refused by the scheduler
    with pytest.raises(InputError, match="speaks TLS; give its credentials with --tls-dir"):
        with dask_client(str(sched_file)):
            pass
    for attempt in (
        lambda: Client(f"tcp://127.0.0.1:{port}", timeout="3s"),  # plain TCP to a TLS port
        lambda: Client(address, timeout="3s", security=Security.temporary()),  # a certificate of its own
    ):
        with pytest.raises((OSError, TimeoutError)):
            client = attempt()
            client.close()
    # the CA alone (a leaked scheduler.json + ca.pem) is not enough: the scheduler requires a client certificate
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    ctx.check_hostname = False
    with pytest.raises(OSError):  # ssl.SSLError (certificate required) or a reset connection
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw) as conn:
                conn.sendall(b"\0" * 8)
                assert conn.recv(1) != b"", "the scheduler kept talking to a client without a certificate"
    with pytest.raises(InputError, match="no ca.pem"):
        with dask_client(str(sched_file), tls_dir=tls.parent / "elsewhere"):
            pass


def test_a_stale_world_readable_temporary_does_not_leave_the_key_readable(tmp_path):
    folder = tmp_path / "tls"
    folder.mkdir()
    stale = folder / ".key.pem.tmp"
    stale.write_text("left over by a killed run")
    stale.chmod(0o644)
    write_credentials(folder)
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert ((folder / name).stat().st_mode & 0o777) == 0o600, name
    assert not stale.exists()
