"""`python -m tfdist.cluster --check`: every peer resolves and answers, on loopback only."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.multiworker import PYTHONPATH
from tfdist import cluster
from tfdist.cluster.check import check_peers

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def listening():
    """A port with a listener we opened on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port():
    """A loopback port nobody listens on (bound, then released without listen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return port


def config(own_port, *peers, task=("worker", 0)):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{own_port}", *peers]},
                       "task": {"type": task[0], "index": task[1]}})


def run_check(tf_config, *args):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "TF_CONFIG": tf_config}
    return subprocess.run([sys.executable, "-m", "tfdist.cluster", "--check", "--linger", "0", *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)


def test_check_peers_finds_the_listener_and_names_the_closed_port(listening, closed_port):
    info = cluster.resolve(config(closed_port + 0, f"127.0.0.1:{listening}", f"localhost:{closed_port}"))
    start = time.monotonic()
    statuses, _ = check_peers(info, timeout=1.0, listen=False)
    assert time.monotonic() - start < 10
    assert [(s.task, s.resolved, s.reachable) for s in statuses] == [("worker:1", True, True),
                                                                     ("worker:2", True, False)]
    assert "does not answer" in statuses[1].detail


def test_unresolvable_name_is_reported():
    info = cluster.resolve(config(1, "no-such-host.invalid:2222"))
    (status,), _ = check_peers(info, timeout=2.0, listen=False)
    assert not status.resolved and not status.reachable and "does not resolve" in status.detail


def test_own_port_is_opened_while_checking(closed_port):
    """Two checks of one cluster started together find each other: each listens on its port."""
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    port_b = other.getsockname()[1]
    other.close()
    a = cluster.resolve(config(closed_port, f"127.0.0.1:{port_b}"))
    env = {**os.environ, "PYTHONPATH": PYTHONPATH,
           "TF_CONFIG": config(closed_port, f"127.0.0.1:{port_b}", task=("worker", 1))}
    # The peer lingers (keeps its port open) long after its check; we stop it once we have both results.
    peer = subprocess.Popen([sys.executable, "-m", "tfdist.cluster", "--check", "--timeout", "60",
                             "--linger", "600"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=REPO_ROOT)
    try:
        peer_lines = []

        def read_peer(statuses, note):
            # Called while our listener is still open: the peer's check can reach it. The peer
            # prints its results before lingering, so this returns once it has.
            peer_lines.append(next(line for line in peer.stdout if line.startswith("peer ")))

        (status,), _ = check_peers(a, timeout=60.0, linger=0, report=read_peer)  # waits for the peer
        assert status.reachable, status.detail
        assert peer_lines[0].split()[:4] == ["peer", "worker:0", f"127.0.0.1:{closed_port}", "ok:"], peer_lines
    finally:
        peer.kill()
        peer.wait()


def test_cli_exit_status_and_report(listening, closed_port):
    ok = run_check(config(closed_port, f"127.0.0.1:{listening}"), "--timeout", "2")
    assert ok.returncode == 0, ok.stderr
    line = next(line for line in ok.stdout.splitlines() if line.startswith("peer worker:1 "))
    assert line.split() == ["peer", "worker:1", f"127.0.0.1:{listening}", "ok:", "127.0.0.1,", "port",
                            str(listening), "answers"]
    assert "tensorflow 2." in ok.stdout and "keras 3." in ok.stdout and "devices: CPU:0" in ok.stdout
    bad = run_check(config(listening, f"127.0.0.1:{closed_port}", "127.0.0.1:1"), "--timeout", "1")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        f"error: 2 of 2 peer(s) unreachable within 1 s: worker:1 (127.0.0.1:{closed_port}), worker:2 (127.0.0.1:1)")
    assert "UNREACHABLE" in bad.stdout and f"own port {listening} not opened" in bad.stdout


def test_cli_check_rejects_bad_input():
    result = run_check(config(1, "a:2"), "--timeout", "0")
    assert result.returncode == 2 and "--timeout must be > 0" in result.stderr
    result = run_check('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}}')
    assert result.returncode == 2 and result.stderr.startswith("error: TF_CONFIG: cluster.worker[0] has no port")


def test_cluster_package_imports_no_tensorflow():
    code = ("import sys\nimport tfdist.cluster, tfdist.cluster.cli, tfdist.launch, tfdist.launch.kubernetes\n"
            "from tfdist import cluster\ncluster.resolve()\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'kubernetes', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": PYTHONPATH},
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
