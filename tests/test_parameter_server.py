"""Parameter-server training (issue 16): real chief, worker and ps processes under tfdist-launch.

One test starts two launches of tests/workers/ps_train.py (the same program on every task) on
1 chief + 2 workers + 2 ps, whose embedding table is split across the two ps tasks: to step
40, then a restart to step 60 that resumes from the checkpoint and loses a worker (kill -9)
on the way. (One layout for both keeps the
test near 60 s; `num_ps=1` runs the same program with the table in one piece.) The cheap
checks (the strategy's errors) run in-process.
"""

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

import tfdist
import tfdist.estimator
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import cluster as cluster_lib
from tfdist.estimator import inputs as inputs_lib
from tfdist.estimator import ps_training

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


# --- the Estimator route: one job, a lost ps, the relaunch with an evaluator -------------------

PS_ESTIMATOR = str(Path(__file__).parent / "workers" / "ps_estimator.py")


def _launch_estimator(model_dir, *launch_args, sync=None):
    # --grace 60: after the ps dies the chief gets up to 60 s to notice and exit by itself (it
    # takes a second or two); the workers are stopped as soon as it has.
    return subprocess.Popen(
        [sys.executable, "-m", "tfdist.launch", "--chief", "--workers", "2", "--ps", "1",
         *launch_args, "--grace", "60", "--timeout", "200", "--", sys.executable, PS_ESTIMATOR,
         str(model_dir), "40", *([str(sync)] if sync else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=subprocess_env(),
        cwd=REPO_ROOT)


def _json_lines(output, task):
    return [json.loads(line.split("] ", 1)[1]) for line in output.splitlines()
            if line.startswith(f"[{task}] {{")]


def _wait_until_exited(pid, timeout=60):
    """Until `pid` is a zombie or gone (SIGKILL is asynchronous): then its ports are closed."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + timeout
    while stat.exists() and stat.read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"pid {pid} still running"
        time.sleep(0.05)


@pytest.mark.multiworker
def test_an_estimator_job_with_a_ps_task_survives_losing_it_and_evaluates(tmp_path):
    """A tf.estimator-shaped job on 1 chief + 2 workers + 1 ps through train_and_evaluate.

    The chief pauses after its checkpoint at step 20; the test kills the ps (-9); the chief
    exits 250 with one line. The relaunch (with an evaluator task) resumes from ckpt-20, ends
    at exactly step 40, and the evaluator evaluates that final checkpoint.
    """
    model_dir, sync = tmp_path / "model", tmp_path / "sync"
    sync.mkdir()
    proc = _launch_estimator(model_dir, sync=sync)
    _wait_for(sync / "saved", proc)
    pid = int((sync / "ps-0.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    _wait_until_exited(pid)
    (sync / "killed").touch()
    output, _ = proc.communicate(timeout=200)
    assert proc.returncode == 128 + signal.SIGKILL, output[-4000:]  # the first failure: the ps
    [paused] = _json_lines(output, "chief:0")
    assert paused["paused_at"] == 20 and sum(paused["steps_by_worker"].values()) == 20, paused
    errors = [line for line in output.splitlines() if line.startswith("[chief:0] tfdist: ")]
    assert len(errors) == 1, output[-4000:]
    assert re.fullmatch(
        r"\[chief:0\] tfdist: ps:0 \(localhost:\d+\) stopped responding \(this is chief:0 "
        r"\(localhost:\d+\)\); exiting with status 250 -- restart the job, it resumes from the "
        r"last checkpoint", errors[0]), errors[0]
    assert "tfdist-launch: chief:0 failed (exit code 250)" in output
    assert tf.train.latest_checkpoint(str(model_dir)) == str(model_dir / "ckpt-20")

    proc = _launch_estimator(model_dir, "--evaluator")
    output, _ = proc.communicate(timeout=250)
    assert proc.returncode == 0, output[-4000:]
    [chief] = _json_lines(output, "chief:0")
    assert chief["started_from"] == str(model_dir / "ckpt-20")
    assert chief["global_step"] == 40 and sum(chief["steps_by_worker"].values()) == 20, chief
    assert chief["latest_checkpoint"] == str(model_dir / "ckpt-40")
    # Both workers ran steps (8 functions of 5 steps over the two runs).
    steps = collections.Counter(paused["steps_by_worker"]) + collections.Counter(chief["steps_by_worker"])
    assert steps.keys() == {"0", "1"}, (paused, chief)
    assert chief["first_loss"] < 0.8 * paused["first_loss"]  # the checkpointed weights came back
    assert chief["last_loss"] < 0.5 * paused["first_loss"], (paused, chief)
    [evaluation] = _json_lines(output, "evaluator:0")
    assert evaluation["global_step"] == 40 and evaluation["accuracy"] > 0.8, evaluation
    assert "all 5 process(es) succeeded" in output


# --- in-process: the Estimator route's own checks ----------------------------------------------


def test_estimator_training_under_ps_needs_repeating_input_and_an_end():
    def finite_input_fn(input_context):
        return tf.data.Dataset.range(8).map(lambda i: ({"x": i}, i)).batch(4)

    source = inputs_lib.InputFn(finite_input_fn, params=None, config=None)
    # Raised before any worker is asked to build the pipeline.
    with pytest.raises(ValueError, match=r"input_fn's dataset must repeat .* Received: a finite "
                                         r"dataset\. Add \.repeat\(\)"):
        ps_training.per_worker_input(source, tf.distribute.get_strategy(), "train")
    with pytest.raises(ValueError, match=r"needs `max_steps` or `steps` .* Received: steps=None, "
                                         r"max_steps=None"):
        ps_training.check_steps(None, None)
    ps_training.check_steps(None, 10)
    with pytest.raises(ValueError, match=r"steps_per_function"):
        tfdist.estimator.RunConfig(steps_per_function=0)
