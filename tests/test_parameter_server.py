"""Parameter-server training (issue 16): real chief, worker and ps processes under tfdist-launch.

One test starts two launches of tests/workers/ps_train.py (the same program on every task) on
1 chief + 2 workers + 2 ps, whose embedding table is split across the two ps tasks: to step
40, then a restart to step 60 that resumes from the checkpoint and loses a worker (kill -9)
on the way. (One layout for both keeps the
test near 60 s; `num_ps=1` runs the same program with the table in one piece.) The cheap
checks (the strategy's errors) run in-process.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tfdist
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import cluster as cluster_lib

PS_TRAIN = str(Path(__file__).parent / "workers" / "ps_train.py")


def _launch(model_dir, steps, num_ps, *sync_dir):
    return subprocess.Popen(
        [sys.executable, "-m", "tfdist.launch", "--chief", "--workers", "2", "--ps", str(num_ps),
         "--timeout", "150", "--", sys.executable, PS_TRAIN, str(model_dir), str(steps),
         *map(str, sync_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
        cwd=REPO_ROOT)


def _wait_for(path, proc, timeout=150):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.2)


def _finish(proc):
    output, _ = proc.communicate(timeout=200)
    assert proc.returncode == 0, output[-4000:]
    chief = [line.split("] ", 1)[1] for line in output.splitlines()
             if line.startswith("[chief:0] {")]
    assert len(chief) == 1, output[-4000:]
    return json.loads(chief[0]), output


@pytest.mark.multiworker
def test_parameter_server_training_splits_the_embedding_and_resumes(tmp_path):
    first, output = _finish(_launch(tmp_path, 40, num_ps=2))

    # Exact step, both workers ran steps, the loss falls, a checkpoint from the chief.
    assert first["restored_from"] is None and first["global_step"] == 40
    assert first["steps_by_worker"].keys() == {"0", "1"}, first
    assert sum(first["steps_by_worker"].values()) == 40
    assert first["optimizer_iterations"] == 40  # atomic updates: no increment lost
    assert first["first_loss"] > 0.6 and first["last_loss"] < 0.5 * first["first_loss"], first
    assert first["eval_accuracy"] > 0.75, first
    assert first["latest_checkpoint"] == str(tmp_path / "ckpt-40")
    # The embedding (64 KB; at least 16 KB per shard) is split across the 2 ps tasks.
    assert first["shards"] == [[[500, 16], "/job:ps/replica:0/task:0/device:CPU:0"],
                               [[500, 16], "/job:ps/replica:0/task:1/device:CPU:0"]]
    # Worker and ps tasks served until the launcher stopped them, then exited 0.
    for task in ("worker:0", "worker:1", "ps:0", "ps:1"):
        assert f"[{task}] tfdist: {task} stopped" in output
    assert "all 5 process(es) succeeded" in output

    # A restart resumes from the checkpoint; worker:1 is killed (-9) after the first loop call,
    # and training still ends at the exact step while tfdist-launch restarts that worker alone.
    sync = tmp_path / "sync"
    sync.mkdir()
    proc = _launch(tmp_path, 60, 2, sync)
    _wait_for(sync / "first_done", proc)
    os.kill(int((sync / "worker-1.pid").read_text()), signal.SIGKILL)
    (sync / "killed").touch()
    resumed, output = _finish(proc)
    assert resumed["restored_from"] == str(tmp_path / "ckpt-40")
    assert resumed["start"] == 40 and resumed["global_step"] == 60
    assert sum(resumed["steps_by_worker"].values()) == 20
    assert resumed["first_loss"] < 0.5 * first["first_loss"]  # the trained weights came back
    assert resumed["latest_checkpoint"] == str(tmp_path / "ckpt-60")
    assert ("worker:1 failed (killed by SIGKILL, exit status 137); restarting it alone (restart 1 of 3)"
            in output), output[-4000:]


# --- in-process: the strategy's own checks -----------------------------------------------------


def _cluster(task_type, task_id=0, **jobs):
    spec = {job: [f"localhost:{20000 + 10 * i + k}" for k in range(n)]
            for i, (job, n) in enumerate(jobs.items())}
    return cluster_lib.resolve({"cluster": spec, "task": {"type": task_type, "index": task_id}})


def test_parameter_server_needs_chief_workers_and_ps():
    with pytest.raises(tfdist.strategy.StrategyError, match=(
            r"^Strategy 'parameter_server' needs TF_CONFIG with 'chief', 'worker' and 'ps' "
            r"tasks\. Received: cluster=\{'chief': 1, 'worker': 2\} \(missing ps\)")):
        tfdist.get_strategy("parameter_server", cluster=_cluster("chief", chief=1, worker=2))


def test_variable_partitioner_is_checked():
    cluster = _cluster("chief", chief=1, worker=1, ps=1)
    with pytest.raises(tfdist.strategy.StrategyError,
                       match=r"^Invalid value for argument `variable_partitioner`\. Received: "
                             r"variable_partitioner=4\. Pass a partitioner"):
        tfdist.get_strategy("parameter_server", cluster=cluster, variable_partitioner=4)
    with pytest.raises(tfdist.strategy.StrategyError,
                       match=r"only strategy 'parameter_server' splits variables"):
        tfdist.get_strategy("mirrored", variable_partitioner=lambda **_: [1])


def test_an_evaluator_does_not_join_a_parameter_server_cluster():
    cluster = _cluster("evaluator", chief=1, worker=1, ps=1, evaluator=1)
    with pytest.raises(tfdist.strategy.StrategyError, match="must not join the training cluster"):
        tfdist.get_strategy("parameter_server", cluster=cluster)


def test_auto_picks_parameter_server_with_ps_tasks():
    from tfdist import strategy as strategy_lib

    assert strategy_lib._auto_name(_cluster("chief", chief=1, worker=2, ps=1), None, None) == (
        "parameter_server")
    assert strategy_lib._auto_name(_cluster("chief", chief=1, worker=2), None, None) == (
        "multi_worker_mirrored")
