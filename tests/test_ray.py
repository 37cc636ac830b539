"""Ray Train: the TF_CONFIG adapter, and a real 2-worker Keras 3 `fit` on loopback-only Ray."""

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.multiworker import PYTHONPATH
from tfdist import cluster
from tfdist.launch.errors import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]
RAY_TF_CONFIG = json.dumps({"cluster": {"worker": ["192.0.2.7:40001", "192.0.2.7:40002"]},
                            "task": {"type": "worker", "index": 1}})  # as Ray Train writes it


def test_from_ray_keeps_or_moves_hosts():
    as_written = cluster.from_ray({"TF_CONFIG": RAY_TF_CONFIG})
    assert as_written.worker_addresses == ["192.0.2.7:40001", "192.0.2.7:40002"]
    moved = cluster.from_ray({"TF_CONFIG": RAY_TF_CONFIG}, loopback=True)
    assert moved.worker_addresses == ["127.0.0.1:40001", "127.0.0.1:40002"] and moved.task_id == 1
    assert cluster.from_ray({}).is_local


def test_loopback_collision_is_named():
    two_hosts = json.dumps({"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
                            "task": {"type": "worker", "index": 0}})
    with pytest.raises(cluster.ClusterConfigError, match=r"^Ray TF_CONFIG on loopback: cluster.worker\[1\] "
                                                         "has the same address as cluster.worker\\[0\\]"):
        cluster.from_ray({"TF_CONFIG": two_hosts}, loopback=True)


def test_run_on_ray_rejects_bad_num_workers():
    from tfdist.launch import ray as tfdist_ray

    with pytest.raises(LaunchError, match="Invalid value for argument `num_workers`. Received: num_workers=0"):
        tfdist_ray.run_on_ray(lambda config: None, num_workers=0)


def test_init_loopback_refuses_after_ray_import_in_cluster_mode():
    pytest.importorskip("ray")
    code = "import ray\nfrom tfdist.launch import ray as r\nr.init_loopback()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": PYTHONPATH},
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 1 and "init_loopback() must run before `import ray`" in result.stderr


def _is_loopback(local: str) -> bool:
    host = local.rpartition(":")[0].strip("[]")
    host = host.removeprefix("::ffff:")
    return host not in ("*", "0.0.0.0", "::") and ipaddress.ip_address(host).is_loopback


@pytest.mark.multiworker
@pytest.mark.timeout(400)
def test_keras3_fit_on_local_ray_loopback_only(tmp_path):
    pytest.importorskip("ray.train.tensorflow")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "workers" / "ray_fit.py"), str(tmp_path)],
                            env={**os.environ, "PYTHONPATH": PYTHONPATH}, capture_output=True, text=True,
                            timeout=360, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    workers = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in (0, 1)]
    assert [w["task"] for w in workers] == [["worker", 0], ["worker", 1]]
    addresses = workers[0]["addresses"]
    assert all(a.startswith("127.0.0.1:") for a in addresses) and workers[1]["addresses"] == addresses
    assert workers[0]["weights"] == workers[1]["weights"]  # bit-identical after 2 epochs
    assert workers[0]["accuracy"] > 0.6 and workers[0]["legacy_keras"] is None
    # Ray's own processes listen on loopback only. TensorFlow's gRPC servers bind every interface
    # whatever TF_CONFIG says (as under tfdist-launch); they are the only exception, on Ray's ports.
    tf_ports = {a.rpartition(":")[2] for a in addresses}
    listeners = [line.split() for line in workers[0]["listeners"]]
    assert any("gcs_server" in listener[-1] for listener in listeners) and any("raylet" in listener[-1] for listener in listeners)
    beyond = [listener for listener in listeners if not _is_loopback(listener[3])]
    assert {listener[3].rpartition(":")[2] for listener in beyond} == tf_ports, listeners
    assert all("RayTrainWo" in listener[-1] for listener in beyond)
