"""TLS for the Dask scheduler: temporary credentials on disk (for `slurm/scan.sh`) and the Security to use them.

Any scheduler the scan starts or joins beyond this process speaks TLS with mutual certificates: a client or
worker without the job's credentials is refused. The credentials are one self-signed certificate and key
(distributed's `Security.temporary`), written with owner-only permissions into a fresh folder.

    python -m spanet2.stats.security DIR     # writes DIR/ca.pem, DIR/cert.pem, DIR/key.pem
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from spanet2.errors import InputError

__all__ = ["CREDENTIAL_FILES", "load_security", "temporary_security", "write_credentials"]

CREDENTIAL_FILES = ("ca.pem", "cert.pem", "key.pem")


def temporary_security():
    """An in-memory self-signed Security for a cluster started by this process (TLS, encryption required)."""
    from distributed.security import Security

    return Security.temporary()


def write_credentials(directory: str | os.PathLike) -> Path:
    """Write a fresh self-signed CA/certificate/key into `directory` (mode 0700, files 0600); returns it.

    The same certificate serves scheduler, workers and clients (as `Security.temporary` does in memory);
    whoever can read the folder can join the cluster, nobody else.
    """
    security = temporary_security()
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    contents = {
        "ca.pem": security.tls_ca_file,
        "cert.pem": security.tls_client_cert,
        "key.pem": security.tls_client_key,
    }
    for name, text in contents.items():
        tmp = folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT keeps the mode of a stale temporary file from an interrupted run
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, folder / name)
    return folder


def load_security(directory: str | os.PathLike):
    """The client Security for credentials written by `write_credentials` (InputError names a missing file)."""
    from distributed.security import Security

    folder = Path(directory)
    for name in CREDENTIAL_FILES:
        if not (folder / name).is_file():
            raise InputError(
                "--tls-dir", str(folder), f"no {name} there; expected the credentials of `slurm/scan.sh`"
            )
    ca, cert, key = (str(folder / name) for name in CREDENTIAL_FILES)
    return Security(
        require_encryption=True,
        tls_ca_file=ca,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m spanet2.stats.security DIR", file=sys.stderr)
        return 2
    print(write_credentials(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
