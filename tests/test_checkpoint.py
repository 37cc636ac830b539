"""Tests for tfdist.checkpoint on its own: model directories, `CheckpointManager` on the chief and
on other workers, the training-done marker, `any_worker`, `PreemptionWatcher` and `Preempted`.

Real `tf.train.Checkpoint`s throughout; the multi-worker test runs 2 real worker processes.
(`export_model` is left to the tests of the routes that export: it is moving out of this module.)
"""

import json
import os
import re
import signal
import tempfile
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tests import multiworker
from tfdist import checkpoint, checkpoint_recovery, cluster

JOB = str(multiworker.REPO_ROOT / "tests" / "workers" / "checkpoint_job.py")
_OTHER_WORKER = cluster.ClusterInfo(task_type="worker", task_id=1,
                                    jobs={"worker": ["localhost:1", "localhost:2"]})


def _model_and_optimizer():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _train_once(model, optimizer):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((4, 3))) ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The temporary directory non-chief workers save into; empty at the start."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


# --- validate_model_dir ------------------------------------------------------------------------


def test_validate_model_dir_creates_missing_parents_and_returns_a_str(tmp_path):
    target = tmp_path / "a" / "b" / "run"
    assert checkpoint.validate_model_dir(target) == str(target)
    assert target.is_dir()
    assert checkpoint.validate_model_dir(str(target)) == str(target)  # an existing directory is fine


@pytest.mark.parametrize("value", ["", None, 3, ["/tmp/run"]])
def test_validate_model_dir_rejects_what_is_not_a_path(value):
    with pytest.raises(checkpoint.CheckpointError,
                       match=re.escape(f"Invalid value for argument `model_dir`. Received: model_dir={value!r}.")):
        checkpoint.validate_model_dir(value)


def test_validate_model_dir_rejects_a_file(tmp_path):
    path = tmp_path / "run"
    path.write_text("not a directory")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory") as raised:
        checkpoint.validate_model_dir(str(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    assert path.read_text() == "not a directory"  # left alone


def test_validate_model_dir_rejects_a_path_that_cannot_be_created(tmp_path):
    # Tests run as root, which writes anywhere: a path below a regular file cannot be created.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(checkpoint.CheckpointError, match="Cannot create model_dir=.*Pass a writable directory"):
        checkpoint.validate_model_dir(str(blocker / "run"))
    with pytest.raises(checkpoint.CheckpointError, match="Cannot create model_dir"):
        checkpoint.CheckpointManager(tf.train.Checkpoint(), str(blocker / "run"))


# --- CheckpointManager on the chief ------------------------------------------------------------


def test_save_and_restore_latest_bring_back_model_optimizer_and_step(tmp_path):
    model, optimizer = _model_and_optimizer()
    step = tf.Variable(0, dtype=tf.int64)
    manager = checkpoint.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer, step=step), str(tmp_path / "run"))
    assert manager.is_chief and manager.model_dir == str(tmp_path / "run")
    assert manager.latest() is None and manager.restore_latest() is None  # nothing yet
    _train_once(model, optimizer)
    step.assign(10)
    path = manager.save(step=10)
    assert path == str(tmp_path / "run" / "ckpt-10") and manager.latest() == path
    saved = [w.numpy() for w in model.weights + optimizer.variables]

    fresh_model, fresh_optimizer = _model_and_optimizer()
    fresh_step = tf.Variable(0, dtype=tf.int64)
    restarted = checkpoint.CheckpointManager(
        tf.train.Checkpoint(model=fresh_model, optimizer=fresh_optimizer, step=fresh_step),
        str(tmp_path / "run"))
    assert restarted.restore_latest() == path
    assert int(fresh_step.numpy()) == 10
    restored = [w.numpy() for w in fresh_model.weights + fresh_optimizer.variables]
    assert len(restored) == len(saved)
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a, b)
    assert int(fresh_optimizer.iterations.numpy()) == 1


def test_restore_of_a_given_checkpoint_and_max_to_keep(tmp_path):
    value = tf.Variable(0.0)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(value=value), str(tmp_path), max_to_keep=2)
    paths = []
    for step in (1, 2, 3):
        value.assign(float(step))
        paths.append(manager.save(step=step))
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    manager.restore(paths[1])
    assert float(value.numpy()) == 2.0
    assert manager.restore_latest() == paths[2] and float(value.numpy()) == 3.0


def test_restore_loads_a_checkpoint_with_more_objects_than_asked_for(tmp_path):
    value, extra = tf.Variable(5.0), tf.Variable([1.0, 2.0])
    checkpoint.CheckpointManager(tf.train.Checkpoint(value=value, extra=extra), str(tmp_path)).save(step=1)
    only_value = tf.Variable(0.0)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(value=only_value), str(tmp_path))
    assert manager.restore_latest().endswith("ckpt-1")  # the unmatched `extra` is no error
    assert float(only_value.numpy()) == 5.0


@pytest.mark.parametrize("model_dir", ["rel/run", "./rel/run", "rel/run/"])
def test_a_relative_model_dir_restores_and_recovers_like_an_absolute_one(tmp_path, monkeypatch,
                                                                         model_dir):
    # The state file's entries are relative to model_dir; tf.train.get_checkpoint_state already
    # joins them onto it, so joining again made every checkpoint of a relative model_dir look
    # missing (a silent restart from scratch).
    monkeypatch.chdir(tmp_path)
    value = tf.Variable(0.0)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(value=value), model_dir)
    for step in (1, 2):
        value.assign(float(step))
        manager.save(step=step)
    newest, older = os.path.join(model_dir, "ckpt-2"), os.path.join(model_dir, "ckpt-1")
    assert checkpoint_recovery.candidates(model_dir) == ([newest, older], [])
    assert checkpoint.newest_restorable(model_dir) == newest
    fresh = tf.Variable(-1.0)
    assert checkpoint.CheckpointManager(tf.train.Checkpoint(value=fresh), model_dir).restore_latest() == newest
    assert float(fresh.numpy()) == 2.0

    # Recovery too: a truncated newest checkpoint is moved aside, the one before restored, and
    # the rewritten state file keeps the older one (and its save time) for rotation.
    data = tmp_path / "rel" / "run" / "ckpt-2.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    saved_at = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_timestamps[0]
    fresh.assign(-1.0)
    recovering = checkpoint.CheckpointManager(tf.train.Checkpoint(value=fresh), model_dir)
    assert recovering.restore_latest() == older and float(fresh.numpy()) == 1.0
    assert (tmp_path / "rel" / "run" / "unreadable" / "ckpt-2" / "ckpt-2.index").exists()
    state = tf.train.get_checkpoint_state(str(tmp_path / "rel" / "run"))
    assert list(state.all_model_checkpoint_paths) == [str(tmp_path / "rel" / "run" / "ckpt-1")]
    assert list(state.all_model_checkpoint_timestamps) == [saved_at]
    recovering.save(step=3)
    assert checkpoint_recovery.candidates(model_dir)[0] == [os.path.join(model_dir, "ckpt-3"), older]


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", None])
def test_max_to_keep_must_be_a_positive_integer(tmp_path, value):
    with pytest.raises(checkpoint.CheckpointError,
                       match=re.escape(f"Invalid value for argument `max_to_keep`. Received: max_to_keep={value!r}. "
                                       "Pass a positive integer.")):
        checkpoint.CheckpointManager(tf.train.Checkpoint(), str(tmp_path / "run"), max_to_keep=value)
    assert not (tmp_path / "run").exists()  # checked before anything is created


def test_the_chief_refuses_a_model_dir_that_is_a_file(tmp_path):
    path = tmp_path / "run"
    path.write_text("")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory"):
        checkpoint.CheckpointManager(tf.train.Checkpoint(), str(path))


# --- CheckpointManager on a worker that is not the chief -----------------------------------------


def test_a_non_chief_saves_into_a_scratch_directory_it_removes(tmp_path, scratch):
    model_dir = tmp_path / "run"
    value = tf.Variable(1.0)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(value=value), str(model_dir),
                                           cluster=_OTHER_WORKER)
    assert not manager.is_chief
    assert not model_dir.exists()  # only the chief creates the model directory
    assert manager.save(step=3) is None
    assert manager.save(step=4) is None
    assert not model_dir.exists()
    assert list(scratch.iterdir()) == []  # each save's scratch directory was removed


def test_a_non_chief_restores_the_chiefs_checkpoint(tmp_path, scratch):
    model_dir = str(tmp_path / "run")
    chief_value = tf.Variable(7.0)
    chief = checkpoint.CheckpointManager(tf.train.Checkpoint(value=chief_value), model_dir,
                                         cluster=cluster.ClusterInfo())
    path = chief.save(step=12)
    other_value = tf.Variable(0.0)
    other = checkpoint.CheckpointManager(tf.train.Checkpoint(value=other_value), model_dir,
                                         cluster=_OTHER_WORKER)
    assert other.latest() == path
    assert other.restore_latest() == path and float(other_value.numpy()) == 7.0
    other_value.assign(99.0)
    assert other.save(step=13) is None
    assert chief.latest() == path  # the non-chief's save did not touch the chief's directory
    assert list(scratch.iterdir()) == []


@pytest.mark.multiworker
def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    model_dir, out, scratch = tmp_path / "run", tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    multiworker.run_workers(["python", JOB, str(model_dir), str(out)], num_workers=2,
                            env={"TMPDIR": str(scratch)}, timeout=240)
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {"worker-0", "worker-1"}
    for report in reports.values():
        # worker:1 alone voted yes: both get yes; then all no, then all yes.
        assert report["votes"] == {"one_yes": True, "all_no": False, "all_yes": True}
        assert report["restored"] == str(model_dir / "ckpt-7")
        assert report["value"] == 10.0  # the chief's value (worker:1 saved 11.0 to its scratch)
    assert (reports["worker-0"]["is_chief"], reports["worker-1"]["is_chief"]) == (True, False)
    assert (reports["worker-0"]["saved"], reports["worker-1"]["saved"]) == (str(model_dir / "ckpt-7"), None)
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "checkpoint", "ckpt-7.data-00000-of-00001", "ckpt-7.index"]
    assert not list(scratch.glob("tfdist-*"))  # worker:1 removed its scratch checkpoint


# --- the training-done marker ------------------------------------------------------------------


def test_done_marker_round_trip_overwrite_and_remove(tmp_path):
    assert checkpoint.read_done_marker(str(tmp_path)) is None
    path = checkpoint.write_done_marker(str(tmp_path), 300, checkpoint="ckpt-300")
    assert path == str(tmp_path / checkpoint.DONE_FILE)
    assert checkpoint.read_done_marker(str(tmp_path)) == {"global_step": 300, "checkpoint": "ckpt-300"}
    checkpoint.write_done_marker(str(tmp_path), np.int64(400))  # numpy steps are written as ints
    assert checkpoint.read_done_marker(str(tmp_path)) == {"global_step": 400}
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.DONE_FILE]  # no .tmp left
    checkpoint.remove_done_marker(str(tmp_path))
    assert checkpoint.read_done_marker(str(tmp_path)) is None and not list(tmp_path.iterdir())
    checkpoint.remove_done_marker(str(tmp_path))  # removing a missing marker is fine


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"step": 3}', '{"global_step": "abc"}',
                                     '{"global_step": null}'])
def test_a_partial_or_foreign_done_marker_reads_as_none(tmp_path, content):
    (tmp_path / checkpoint.DONE_FILE).write_text(content)
    assert checkpoint.read_done_marker(str(tmp_path)) is None


def test_reading_a_marker_in_a_missing_directory_is_none(tmp_path):
    assert checkpoint.read_done_marker(str(tmp_path / "missing")) is None


# --- any_worker, PreemptionWatcher, Preempted ----------------------------------------------------


def test_any_worker_on_one_worker_is_the_local_vote(cpus):
    for strategy in (tfdist.get_strategy("default"), tfdist.get_strategy("mirrored", devices=cpus(2))):
        assert checkpoint.any_worker(strategy, True) is True
        assert checkpoint.any_worker(strategy, False) is False
        assert checkpoint.any_worker(strategy, 0) is False


def test_watcher_turns_sigterm_into_a_flag_and_restores_the_previous_handler():
    def previous(signum, frame):
        raise AssertionError("the watcher's handler should have run")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        watcher = checkpoint.PreemptionWatcher()
        with watcher.watching() as same:
            assert same is watcher and not watcher.requested
            with watcher.watching():  # nested: only the outer block restores
                pass
            assert signal.getsignal(signal.SIGTERM) is not previous
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.monotonic() + 30  # Python runs the handler at its next check
            while not watcher.requested and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watcher.requested
            assert watcher.agreed(tfdist.get_strategy("default"))
        assert signal.getsignal(signal.SIGTERM) is previous
        assert not checkpoint.PreemptionWatcher().agreed(tfdist.get_strategy("default"))
        with checkpoint.PreemptionWatcher().watching(enabled=False):
            assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)


def test_watcher_outside_the_main_thread_is_inert():
    before = signal.getsignal(signal.SIGTERM)
    errors = []

    def install():
        try:
            with checkpoint.PreemptionWatcher().watching() as watcher:
                assert not watcher.requested
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(30)
    assert not errors and signal.getsignal(signal.SIGTERM) is before


def test_preempted_exits_143_and_says_where_it_saved():
    raised = checkpoint.Preempted(40, "/run/ckpt-40")
    assert isinstance(raised, SystemExit) and raised.code == checkpoint.PREEMPTED_EXIT_CODE == 143
    assert (raised.step, raised.path, raised.saved) == (40, "/run/ckpt-40", True)
    assert str(raised) == "preempted by SIGTERM; saved a checkpoint at step 40 (/run/ckpt-40)"
    assert str(checkpoint.Preempted(40, None, saved=False)) == "preempted by SIGTERM at step 40"
