"""Elastic jobs (issue 20): resume at another size in every route, and `tfdist-launch --workers MIN:MAX`.

In-process tests resume across replica counts (2 logical CPUs <-> 1) and compare against an
uninterrupted run: within one worker a global batch holds the same examples at any replica
count, so a resumed run whose input follows the step ends with the same weights. The
multi-process test runs a real elastic job: 2 workers -> 3 -> (3 with a slot that always
fails, so 2) -> 1, the custom loop and `fit` in each process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
import tfdist.estimator as est
from tests import multiworker
from tfdist import data
from tfdist.launch import cli
from tfdist.launch import elastic
from tfdist.launch.errors import LaunchError

REPO = Path(__file__).resolve().parent.parent
JOB = str(REPO / "tests" / "workers" / "elastic_job.py")
LAUNCH = [sys.executable, "-m", "tfdist.launch"]


# --- the data layer: the input follows the step ----------------------------------------------


def _numbers(n=96):
    return tf.data.Dataset.range(n)


def test_start_step_continues_an_uninterrupted_run_at_any_replica_count(cpus):
    spec = data.DataSpec(source=_numbers(), global_batch_size=8, shuffle_buffer=96, seed=5)
    whole = iter(data.distribute(tfdist.get_strategy("default"), spec))
    batches = [next(whole).numpy() for _ in range(20)]  # crosses an epoch boundary (12 steps)
    resumed = iter(data.distribute(tfdist.get_strategy("default"), spec, start_step=7))
    np.testing.assert_array_equal(next(resumed).numpy(), batches[7])
    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    resumed = iter(data.distribute(mirrored, spec, start_step=13))
    halves = mirrored.experimental_local_results(next(resumed))  # one pipeline, 2 replicas
    np.testing.assert_array_equal(np.concatenate([h.numpy() for h in halves]), batches[13])


def test_bad_start_step_and_indivisible_batch_say_what_works():
    spec = data.DataSpec(source=_numbers(), global_batch_size=24)
    with pytest.raises(data.DataConfigError, match="Invalid value for argument `start_step`.*-1"):
        data.distribute(tfdist.get_strategy("default"), spec, start_step=-1)
    with pytest.raises(data.DataConfigError) as err:
        spec.per_replica_batch_size(5)
    assert ("does not divide evenly over 5 replicas. Use a multiple of 5 (e.g. 20 or 25), or a "
            "replica count that divides it (1, 2, 3, 4, 6, 8, 12, 24)") in str(err.value)


# --- the routes, in-process, 2 replicas -> 1 ---------------------------------------------------


def _xy(n=240):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _spec():
    return data.DataSpec(source=tf.data.Dataset.from_tensor_slices(_xy()), global_batch_size=24,
                         shuffle_buffer=240, seed=1)


def _model():
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2)])


def _adam():
    return keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.5))


def _ctl(strategy, model_dir, steps):
    trainer = tfdist.loop.Trainer(strategy=strategy, model=_model, optimizer=_adam(),
                                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                  train_data=_spec())
    with tfdist.loop.Controller(trainer, model_dir=str(model_dir), steps_per_loop=5, progress=False,
                                summaries=False, export=False) as controller:
        start, lr = controller.global_step, trainer.learning_rate()
        controller.train(steps)
        return start, lr, [v.numpy() for v in trainer.model.weights]


def test_custom_loop_resumes_on_another_replica_count_where_it_left_off(tmp_path, cpus):
    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    default = tfdist.get_strategy("default")
    _, _, uninterrupted = _ctl(default, tmp_path / "whole", 30)
    assert _ctl(mirrored, tmp_path / "run", 10)[0] == 0
    # 2 replicas -> 1: the checkpoint has no input position (a distributed iterator's), so the
    # input is moved to step 10; the plain iterator now checkpointed keeps it from there on.
    start, lr, _ = _ctl(default, tmp_path / "run", 20)
    assert (start, lr) == (10, pytest.approx(0.025))
    start, lr, weights = _ctl(default, tmp_path / "run", 30)
    assert (start, lr) == (20, pytest.approx(0.0125))
    for got, want in zip(weights, uninterrupted):
        np.testing.assert_allclose(got, want, atol=1e-5)


def _fit(strategy, backup_dir, steps):
    with strategy.scope():
        model = _model()
        model.compile(optimizer=_adam(),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backup = tfdist.keras.callbacks.BackupAndRestore(str(backup_dir), save_freq=5,
                                                     delete_checkpoint=False)
    model.fit(data.for_fit(strategy, _spec()), epochs=steps // 5, steps_per_epoch=5,
              callbacks=[backup], verbose=0)
    return backup, [v.numpy() for v in model.weights]


def test_fit_backup_made_on_two_replicas_resumes_on_one_where_it_left_off(tmp_path, cpus):
    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    default = tfdist.get_strategy("default")
    _, uninterrupted = _fit(default, tmp_path / "whole", 20)
    _fit(mirrored, tmp_path / "backup", 10)
    backup, weights = _fit(default, tmp_path / "backup", 20)
    # Backed up at the end of epoch 2 (step 10): Keras kept one iterator over both epochs.
    assert (backup.restored_epoch, backup.restored_step) == (2, 0)
    assert (backup.restored_input_position, backup.restored_replicas) == (10, 2)
    for got, want in zip(weights, uninterrupted):
        np.testing.assert_allclose(got, want, atol=1e-5)


def _estimator_model_fn(features, labels, mode):
    model = _model()
    logits = model(features)
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    return est.EstimatorSpec(mode, loss=loss, optimizer=_adam())


def _estimator(strategy, model_dir, steps):
    estimator = est.Estimator(_estimator_model_fn, model_dir=str(model_dir), config=est.RunConfig(
        train_distribute=strategy, save_checkpoints_steps=5))
    estimator.train(data.input_fn(_spec()), max_steps=steps)
    values = {name: estimator.get_variable_value(name) for name in estimator.get_variable_names()}
    path = estimator.latest_checkpoint()
    values["optimizer_iterations"] = [  # the optimizer's own step, in the raw checkpoint
        tf.train.load_variable(path, key) for key, _ in tf.train.list_variables(path)
        if "adam.Siteration" in key]
    return values


def test_estimator_resumes_on_another_replica_count_where_it_left_off(tmp_path, cpus):
    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    default = tfdist.get_strategy("default")
    uninterrupted = _estimator(default, tmp_path / "whole", 20)
    assert _estimator(mirrored, tmp_path / "run", 10)["global_step"] == 10
    resumed = _estimator(default, tmp_path / "run", 20)
    assert resumed["global_step"] == 20
    assert resumed["optimizer_iterations"] == [20]  # the optimizer's state continued too
    for name, want in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], want, atol=1e-5, err_msg=name)


# --- tfdist-launch --workers MIN:MAX, with tiny commands ---------------------------------------


def _launch(*args, env=None, timeout=120):
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout,
                          env=multiworker.subprocess_env(**(env or {})), cwd=REPO)


def _fails_in_slots(*slots):
    test = " || ".join(f'[ "$TFDIST_SLOT" = {s} ]' for s in slots)
    return ["sh", "-c", f'echo "slot=$TFDIST_SLOT task=$TFDIST_TASK_ID of $TFDIST_WORLD_SIZE"; '
                        f"if {test}; then exit 3; fi"]


def test_launcher_drops_a_slot_past_its_budget_and_stops_at_the_minimum():
    result = _launch("--workers", "2:3", "--max-restarts", "1", "--grace", "1", "--",
                     *_fails_in_slots(1))
    assert result.returncode == 0, result.stderr
    messages = result.stderr
    assert "worker:1 (slot 1) failed (exit code 3); restarting the group of 3 worker(s) " \
           "(failure 1 of this slot, budget 1)" in messages
    assert "resizing 3 -> 2 worker(s): worker:1 (slot 1) failed (exit code 3) 2 time(s), more " \
           "than its restart budget of 1; restarting without slot 1 on fresh ports (slots 0,2)" in messages
    assert "all 2 process(es) succeeded after 2 restart(s), resized 3 -> 2 worker(s)" in messages
    last = result.stdout.split("\n")[-3:]  # the last attempt: slots 0 and 2 are tasks 0 and 1
    assert sorted(line for line in last if line) == [
        "[worker:0] slot=0 task=0 of 2", "[worker:1] slot=2 task=1 of 2"], result.stdout
    # Two slots that always fail: one is dropped, the next one finds the job at its minimum.
    result = _launch("--workers", "2:3", "--grace", "1", "--", *_fails_in_slots(0, 2))
    assert result.returncode == 3, result.stderr
    assert "resizing 3 -> 2 worker(s): worker:0 (slot 0)" in result.stderr
    assert ("worker:1 (slot 2) failed (exit code 3) 1 time(s), more than its restart budget of "
            "0, and the job is at its minimum of 2 worker(s)") in result.stderr
    # A chief past its budget ends the job: it is charged like a slot but never dropped.
    result = _launch("--workers", "1:2", "--chief", "--grace", "1", "--", "sh", "-c",
                     '[ "$TFDIST_TASK_TYPE" = chief ] && exit 4; exit 0')
    assert result.returncode == 4, result.stderr
    assert ("chief:0 failed (exit code 4) 1 time(s), more than its restart budget of 0; the chief "
            "cannot be dropped") in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--workers", "3:2"], "argument --workers: must be a count >= 1 (\"2\") or a range MIN:MAX "
                           "with 1 <= MIN <= MAX (\"2:4\"); received '3:2'"),
    (["--workers", "0:2"], "received '0:2'"),
    (["--workers", "2:x"], "received '2:x'"),
    (["--workers", "1:2", "--chief", "--ps", "1"], "elastic worker counts (--workers MIN:MAX) are "
                                                   "for all-reduce jobs"),
    (["--workers", "1:2", "--hosts", "a,b", "--host-index", "0"], "need one host"),
    (["--workers", "1:2", "--ports", "2222,2223"], "drop --ports"),
    (["--workers", "1:2", "--emit", "kubernetes-job", "--image", "x"],
     "--emit takes a fixed --workers N; received --workers 1:2"),
])
def test_launcher_rejects_elastic_sizes_it_cannot_run(args, message, capsys):
    assert cli.main([*args, "--", "true"]) == cli.USAGE_ERROR  # in-process: nothing starts
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfdist-launch: error: "), lines
    assert message in lines[0]


def test_worker_range_parses_and_checks():
    assert elastic.WorkerRange.parse("3") == elastic.WorkerRange(3, 3)
    assert elastic.WorkerRange.parse(" 2:4 ").elastic
    with pytest.raises(LaunchError, match=r"Received: 4:2. MIN must not exceed MAX; did you mean 2:4\?"):
        elastic.WorkerRange(4, 2)
    with pytest.raises(LaunchError, match="Received: min=0"):
        elastic.WorkerRange(0, 2)
    with pytest.raises(LaunchError, match="Received: '2-4'"):
        elastic.WorkerRange.parse("2-4")
    with pytest.raises(LaunchError, match="Invalid value for argument `min_workers`"):
        tfdist.launch.Launcher(["true"], tfdist.launch.Topology(num_workers=2), min_workers=0)


# --- the real thing: an elastic job across 2, 3, 2 and 1 workers ------------------------------


def _left_behind(token):
    """Pids of live processes whose environment carries `token`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if token.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _phase(command, env, out, target, timeout=300):
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    report = json.loads((out / f"{target}-worker-0.json").read_text())
    return result, report


@pytest.mark.multiworker
def test_elastic_job_resumes_at_every_size_and_the_launcher_shrinks_it(tmp_path):
    token = f"elastic-{uuid.uuid4().hex}"
    env = multiworker.subprocess_env(ELASTIC_TEST_TOKEN=token)
    out = tmp_path / "out"
    out.mkdir()
    job = [sys.executable, JOB, str(tmp_path / "work")]
    reports, initial = [], None
    phases = [(["--workers", "2"], 10), (["--workers", "3"], 20),
              (["--workers", "2:3", "--max-restarts", "0"], 30), (["--workers", "1"], 40)]
    for launch_args, target in phases:
        elastic_env = dict(env, ELASTIC_JOB_FAIL_SLOT="1") if ":" in launch_args[1] else env
        result, report = _phase([*LAUNCH, *launch_args, "--grace", "2", "--", *job, str(target),
                                 str(out)], elastic_env, out, target)
        workers = 2 if ":" in launch_args[1] else int(launch_args[1])
        assert report["replicas"] == workers
        assert f"elastic_job: global batch 24 over {workers} replica(s), {24 // workers} per " \
               "replica" in result.stdout
        previous = reports[-1] if reports else None
        for route in ("ctl", "fit"):
            got = report[route]
            assert (got["start"], got["end"]) == (target - 10, target), (route, got)
            # ExponentialDecay(0.05, 10, 0.5): the schedule continues from the restored step.
            assert got["lr_at_start"] == pytest.approx(0.05 * 0.5 ** ((target - 10) / 10))
            if previous is None:
                initial = got["losses"][0]
            else:  # no jump back to the initial loss: near where the last phase ended
                assert got["losses"][0] < 0.6 * initial, (route, got, initial)
                assert got["losses"][0] < 2 * previous[route]["losses"][-1], (route, got, previous)
        # Same model, data and input position in both routes: the same losses.
        np.testing.assert_allclose(report["fit"]["losses"], report["ctl"]["losses"], rtol=1e-3)
        if previous is not None:
            assert report["fit"]["restored_replicas"] == previous["replicas"]
            assert report["fit"]["restored_input_position"] == target - 10
        if ":" in launch_args[1]:
            assert ("resizing 3 -> 2 worker(s): worker:1 (slot 1) failed (exit code 3) 1 time(s), "
                    "more than its restart budget of 0") in result.stderr, result.stderr[-3000:]
            assert "all 2 process(es) succeeded after 1 restart(s), resized 3 -> 2 worker(s)" \
                in result.stderr
        reports.append(report)
        assert _left_behind(token) == []
