"""Ray connection helpers, the dashboard REST API with token auth, DeepSpeed configs, SLURM script syntax."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from spanet2.errors import ConfigError
from spanet2.hpc import cluster
from spanet2.hpc.cluster import auth_token, dashboard_get, ray_session, tunnel_command
from spanet2.hpc.deepspeed_config import deepspeed_config, write_deepspeed_config

REPO = Path(__file__).resolve().parents[2]


def test_public_api():
    assert set(cluster.__all__) == {
        "RaySession",
        "auth_token",
        "dashboard_get",
        "ensure_private_token",
        "node_identity",
        "ray_session",
        "tunnel_command",
    }


def test_auth_token_precedence(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert auth_token() == "from-file"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == "from-env"


def test_token_is_created_private_and_an_existing_one_is_made_private(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    path = tmp_path / "ray" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert cluster.ensure_private_token() == path
    token = path.read_text().strip()
    assert len(token) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    os.chmod(path, 0o644)
    os.chmod(path.parent, 0o755)
    cluster.ensure_private_token()
    assert path.read_text().strip() == token  # kept, only its mode fixed
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster.ensure_private_token() is None


_SESSION_SCRIPT = """
import json, sys
from pathlib import Path
import ray
from spanet2.hpc.cluster import ray_session
with ray_session(num_cpus=1, dashboard=False):
    temp = Path(ray._private.worker._global_node.get_temp_dir_path())
    inside = {"exists": temp.exists(), "parent_mode": temp.parent.stat().st_mode & 0o777}
print(json.dumps({**inside, "temp": str(temp), "removed": not temp.parent.exists()}))
"""


def test_local_session_keeps_the_token_private_and_removes_its_temp_folder(tmp_path):
    """In a fresh process (a second local Ray in one process after the first's folder is gone hangs Ray)."""
    pytest.importorskip("ray")
    path = tmp_path / "home_ray" / "auth_token"
    path.parent.mkdir(mode=0o755)
    path.write_text("f" * 64 + "\n")
    os.chmod(path, 0o644)  # as Ray itself writes it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env["RAY_AUTH_TOKEN_PATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", _SESSION_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=240, check=True)  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exists"] and result["parent_mode"] == 0o700  # Ray's own folder is 0777, ours 0700
    assert result["removed"] and (path.stat().st_mode & 0o777) == 0o600
    assert path.read_text().strip() == "f" * 64  # the existing token is kept


def test_tunnel_command_forwards_the_loopback_port():
    command = tunnel_command(10101, host="node07", login_node="me@login")
    assert command.startswith("ssh -N -L 10101:127.0.0.1:10101 -J me@login node07")


def test_dashboard_rest_api_needs_the_token_and_shows_cluster_and_job(ray_local):
    with ray_session() as session:  # attaches to the running local Ray
        assert session.total_cpus == 2.0 and not session.started_here
    url = ray_local.test_dashboard_url
    assert url and url.startswith("http://127.0.0.1:")  # bound to loopback only
    with pytest.raises(urllib.error.HTTPError) as denied:
        dashboard_get(url, "/api/jobs/", token="")  # no token
    assert denied.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as denied:
        dashboard_get(url, "/api/jobs/", token="wrong-token")
    assert denied.value.code == 403
    nodes = dashboard_get(url, "/api/v0/nodes")["data"]["result"]["result"]
    assert [n["state"] for n in nodes] == ["ALIVE"]
    jobs = dashboard_get(url, "/api/jobs/")
    this_job = ray_local.get_runtime_context().get_job_id()
    assert any(j.get("job_id") == this_job and j.get("type") == "DRIVER" for j in jobs)


def test_deepspeed_config(tmp_path):
    config = deepspeed_config(
        zero_stage=2,
        precision="bf16",
        micro_batch_size=64,
        gradient_clip=0.4,
        learning_rate=2e-3,
        weight_decay=1e-4,
    )
    assert config["zero_optimization"]["stage"] == 2 and config["bf16"] == {"enabled": True}
    assert config["optimizer"]["params"]["torch_adam"] is True  # no multi-minute CPU Adam build
    assert config["train_micro_batch_size_per_gpu"] == 64 and config["gradient_clipping"] == 0.4
    written = write_deepspeed_config(tmp_path / "ds.json", zero_stage=1)
    assert json.loads((tmp_path / "ds.json").read_text()) == written
    with pytest.raises(ConfigError, match="zero_stage"):
        deepspeed_config(zero_stage=4)


@pytest.mark.parametrize("script", ["tune.sh", "repeat.sh", "ray-cluster.sh", "study.sh"])
def test_slurm_scripts_parse(script):
    subprocess.run(["bash", "-n", str(REPO / "slurm" / script)], check=True)


def test_every_ray_srun_step_asks_for_its_cpus():
    """SLURM >= 22.05 steps inherit no --cpus-per-task from the job: every srun of the Ray scripts asks."""
    text = (REPO / "slurm" / "ray-cluster.sh").read_text()
    calls = [line for line in text.splitlines() if "srun --" in line and not line.lstrip().startswith("#")]
    assert len(calls) == 4, calls  # token copy, head address, head, workers (update when adding steps)
    for call in calls:
        assert "--cpus-per-task" in call or '"${step_res[@]}"' in call, call
    assert 'step_res+=(--gpus-per-task="$gpus")' in text  # and GPUs when the job has them


def test_every_dask_srun_step_asks_for_its_cpus():
    """The same for the Dask scan script: the worker step sizes itself to the job's --cpus-per-task, so its
    --nworkers processes get a core each instead of sharing the step's one CPU."""
    text = (REPO / "slurm" / "scan.sh").read_text()
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if "srun --" in line and not line.lstrip().startswith("#")]
    assert len(starts) == 3, starts  # head address, scheduler, workers
    for i in starts:
        assert "--cpus-per-task" in lines[i], lines[i]
    worker = next(lines[i] for i in starts if "dask worker" in lines[i + 1])
    assert '--cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"' in worker


def test_local_session_sets_token_auth_explicitly(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert cluster._set_auth_mode() == "token" and os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the user's explicit choice stays
    assert cluster._set_auth_mode() == "disabled"


def test_node_identity_names_the_slurm_node(monkeypatch):
    import ray

    monkeypatch.setenv("SLURMD_NODENAME", "node7")
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    assert cluster.node_identity() == {"node_name": "node7", "node_id": node_id}
    monkeypatch.delenv("SLURMD_NODENAME")
    assert cluster.node_identity()["node_name"] == socket.gethostname()


def test_tune_sh_without_arguments_prints_usage():
    result = subprocess.run(["bash", str(REPO / "slurm" / "tune.sh")], capture_output=True, text=True)
    assert result.returncode == 2 and "usage:" in result.stderr
