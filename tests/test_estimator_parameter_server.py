"""The Estimator route under parameter-server training (issue 16): a tf.estimator-shaped job.

One multi-process test runs tests/workers/ps_estimator.py (the same program on every task)
through `train_and_evaluate` on 1 chief + 2 workers + 1 ps (the 1-ps layout; the custom-loop
test in test_parameter_server.py uses 2): the ps is killed (-9) after the checkpoint at step 20
(file-synchronised), the chief exits 250 with one line, and the relaunch with an evaluator task
resumes from that checkpoint, ends at exactly step 40, and the evaluator evaluates it. A file of
its own so the two slow parameter-server files run on different test workers. The cheap checks
run in-process.
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

import tfdist.estimator
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist.estimator import inputs as inputs_lib
from tfdist.estimator import ps_training

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


def _wait_for(path, proc, timeout=150):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.2)


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
