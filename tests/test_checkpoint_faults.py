"""Checkpoints under faults (issue 22): unreadable checkpoints, a kill during a save, a full disk.

An unreadable newest checkpoint (truncated data, no index, a flipped byte, an unfinished save)
is moved aside with one log line and the previous one restored, in the shared layer and in
every route (`tfdist-train`'s ctl and estimator runs in-process, `fit`'s `BackupAndRestore`);
none readable is a one-line error that moves nothing. A real `tfdist-train` killed with SIGKILL
during a save (held there by `TFDIST_TEST_HOLD_SAVE`), and a save on a full tmpfs, each leave
the previous checkpoint restorable. Real checkpoints and real processes throughout.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import checkpoint, checkpoint_recovery, cluster, export, runner
from tfdist.keras import callbacks

_CHIEF = cluster.ClusterInfo()
_OTHER_WORKER = cluster.ClusterInfo(task_type="worker", task_id=1,
                                    jobs={"worker": ["localhost:1", "localhost:2"]})


def _manager(directory, value, *, worker=_CHIEF):
    """A manager of one float variable (10,000 values, ~40 KB a checkpoint)."""
    var = tf.Variable(tf.zeros([10_000]))
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(v=var), str(directory), cluster=worker)
    var.assign(tf.fill([10_000], float(value)))
    return manager, var


def _save_steps(directory, *steps):
    manager, var = _manager(directory, 0)
    for step in steps:
        var.assign(tf.fill([10_000], float(step)))
        manager.save(step)


def _data(directory, step):
    return Path(directory) / f"ckpt-{step}.data-00000-of-00001"


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _flip_a_byte(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _warnings(caplog, name):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and f"{name} is unreadable" in r.getMessage()]


# --- the shared layer ------------------------------------------------------------------------


@pytest.mark.parametrize("damage, reason", [
    (lambda d: _truncate(_data(d, 2)), "OutOfRangeError: Read less bytes than requested"),
    (lambda d: (d / "ckpt-2.index").unlink(), "its index file is missing"),
    (lambda d: _flip_a_byte(_data(d, 2)), "Checksum does not match"),
    (lambda d: (d / "checkpoint").unlink() or _truncate(_data(d, 2)), "Read less bytes"),  # no state file
])
def test_an_unreadable_newest_checkpoint_is_moved_aside_and_the_previous_one_restored(
        tmp_path, caplog, damage, reason):
    _save_steps(tmp_path, 1, 2)
    damage(tmp_path)
    caplog.set_level(logging.INFO)
    manager, var = _manager(tmp_path, -1)
    assert manager.restore_latest() == str(tmp_path / "ckpt-1")
    assert float(var[0]) == 1.0
    [line] = _warnings(caplog, "ckpt-2")
    assert reason in line and "\n" not in line
    assert f"moved it to {tmp_path / 'unreadable' / 'ckpt-2'}, restoring ckpt-1 instead" in line
    assert sorted(os.listdir(tmp_path / "unreadable" / "ckpt-2")) == sorted(
        p for p in ["ckpt-2.index", "ckpt-2.data-00000-of-00001"]
        if reason != "its index file is missing" or p.endswith("00001"))
    assert tf.train.latest_checkpoint(str(tmp_path)) == str(tmp_path / "ckpt-1")
    # Training goes on: the next save is recorded after ckpt-1, and rotation still works.
    manager.save(3)
    assert tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths == [
        str(tmp_path / "ckpt-1"), str(tmp_path / "ckpt-3")]
    caplog.clear()
    assert _manager(tmp_path, -1)[0].restore_latest() == str(tmp_path / "ckpt-3")
    assert not _warnings(caplog, "ckpt")


def test_a_sound_checkpoint_is_read_once_and_a_mismatched_one_is_raised_not_moved(tmp_path,
                                                                                  monkeypatch):
    _save_steps(tmp_path, 1, 2)
    checked = []
    real = checkpoint_recovery.unreadable_reason
    monkeypatch.setattr(checkpoint_recovery, "unreadable_reason",
                        lambda prefix: checked.append(os.path.basename(prefix)) or real(prefix))
    manager, var = _manager(tmp_path, -1)
    assert manager.restore_latest() == str(tmp_path / "ckpt-2") and float(var[0]) == 2.0
    assert checked == []  # every value restored now, each checksum verified: read once
    # A value left for a variable built later is read only then: the files are checked first.
    lazy = checkpoint.CheckpointManager(tf.train.Checkpoint(), str(tmp_path), cluster=_CHIEF)
    assert lazy.restore_latest() == str(tmp_path / "ckpt-2") and checked == ["ckpt-2"]
    # A readable checkpoint that does not fit the model is the model's error, not a bad file.
    wrong = checkpoint.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.zeros([3]))),
                                         str(tmp_path), cluster=_CHIEF)
    with pytest.raises(ValueError, match="shape"):
        wrong.restore_latest()
    assert not (tmp_path / "unreadable").exists()


def test_an_unfinished_save_is_moved_aside_and_the_recorded_one_restored(tmp_path, caplog):
    _save_steps(tmp_path, 1, 2)
    # What a kill during TF's save leaves: shards in ckpt-3_temp/, the state file not updated.
    (tmp_path / "ckpt-3_temp").mkdir()
    shutil.copy(_data(tmp_path, 2), tmp_path / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001")
    caplog.set_level(logging.INFO)
    manager, var = _manager(tmp_path, -1)
    assert manager.restore_latest() == str(tmp_path / "ckpt-2") and float(var[0]) == 2.0
    [line] = _warnings(caplog, "ckpt-3")
    assert "an unfinished save" in line and "restoring ckpt-2 instead" in line
    assert os.listdir(tmp_path / "unreadable" / "ckpt-3") == ["ckpt-3_temp"]


def test_no_readable_checkpoint_is_a_one_line_error_and_nothing_is_moved(tmp_path):
    _save_steps(tmp_path, 1, 2)
    _truncate(_data(tmp_path, 1))
    (tmp_path / "ckpt-2.index").unlink()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(checkpoint.CheckpointError) as raised:
        _manager(tmp_path, -1)[0].restore_latest()
    message = str(raised.value)
    assert message.startswith(f"No readable checkpoint in {str(tmp_path)!r}: found ckpt-2 (its "
                              "index file is missing); ckpt-1 (OutOfRangeError: Read less bytes")
    assert "Nothing was moved" in message and "\n" not in message
    assert sorted(os.listdir(tmp_path)) == before


def test_a_non_chief_skips_an_unreadable_checkpoint_and_leaves_it_to_the_chief(tmp_path, monkeypatch,
                                                                               caplog):
    _save_steps(tmp_path / "run", 1, 2)
    _truncate(_data(tmp_path / "run", 2))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the worker's scratch saves
    caplog.set_level(logging.INFO)
    manager, var = _manager(tmp_path / "run", -1, worker=_OTHER_WORKER)
    assert manager.restore_latest() == str(tmp_path / "run" / "ckpt-1") and float(var[0]) == 1.0
    [line] = _warnings(caplog, "ckpt-2")
    assert "moved" not in line and "restoring ckpt-1 instead" in line
    assert _data(tmp_path / "run", 2).exists() and not (tmp_path / "run" / "unreadable").exists()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs mounted for the test (the tests run as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_save_on_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(small_disk):
    run = small_disk / "run"
    manager, var = _manager(run, 1.0)
    manager.save(1)
    size = sum(p.stat().st_size for p in run.glob("ckpt-1.*"))
    free = shutil.disk_usage(run).free
    (small_disk / "filler").write_bytes(b"x" * (free - size // 2))  # room for half a checkpoint
    var.assign(tf.fill([10_000], 2.0))
    with pytest.raises(checkpoint.CheckpointError) as raised:
        manager.save(2)
    message = str(raised.value)
    assert message.startswith(f"No space left on device saving checkpoint ckpt-2 in {str(run)!r}: "
                              f"it needs about {size // 1024} KB (the size of ckpt-1), ")
    assert "KB free; ckpt-1 is intact" in message and "\n" not in message
    assert not list(run.glob("ckpt-2*"))  # the partial save is gone, its space given back
    manager, var = _manager(run, -1)
    assert manager.restore_latest() == str(run / "ckpt-1") and float(var[0]) == 1.0


def test_an_export_that_fails_on_a_full_disk_leaves_the_previous_export(small_disk):
    run = small_disk / "run"
    model = keras.Sequential([keras.Input((100,)), keras.layers.Dense(400)])  # 160 KB of weights
    x = np.ones((2, 100), "float32")
    expected = model.predict(x, verbose=0)
    paths = export.export_model(model, str(run), cluster=_CHIEF)
    model.layers[0].kernel.assign(tf.zeros([100, 400]))
    free = shutil.disk_usage(run).free
    (small_disk / "filler").write_bytes(b"x" * (free - 64 * 1024))  # less than one export
    with pytest.raises((OSError, tf.errors.OpError)):
        export.export_model(model, str(run), cluster=_CHIEF)
    assert sorted(os.listdir(run)) == ["model.keras", "saved_model"]  # no partial file visible
    np.testing.assert_allclose(keras.saving.load_model(paths["keras"]).predict(x, verbose=0), expected)
    served = tf.saved_model.load(paths["saved_model"])
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), expected, rtol=1e-6)


# --- the routes ----------------------------------------------------------------------------------


def _train(model_dir, route, steps):
    keras.utils.set_random_seed(0)
    return runner.run(runner.TrainOptions(
        model_dir=str(model_dir), route=route, strategy="default", model="mlp",
        model_options="hidden=16", train_steps=steps, eval_every=10, steps_per_loop=5,
        progress=False))


@pytest.mark.parametrize("route", ["ctl", "estimator"])
def test_ctl_and_estimator_resume_from_the_previous_checkpoint_when_the_newest_is_truncated(
        tmp_path, caplog, route):
    # The issue's case, smaller: train to 20 (checkpoints 10 and 20), truncate ckpt-20's data
    # (what a crash mid-copy or a full disk leaves), ask for 30 steps.
    _train(tmp_path, route, 20)
    _truncate(_data(tmp_path, 20))
    caplog.set_level(logging.INFO)
    report = _train(tmp_path, route, 30)
    assert (report["start_step"], report["steps"]) == (10, 30)
    [line] = _warnings(caplog, "ckpt-20")
    assert "Read less bytes than requested" in line and "restoring ckpt-10 instead" in line
    assert (tmp_path / "unreadable" / "ckpt-20" / "ckpt-20.index").exists()


def test_tfdist_train_with_a_relative_model_dir_resumes(tmp_path, monkeypatch):
    # `make train` and `tfdist-train --model_dir=runs/default` pass a relative directory. The
    # estimator route: its start step also comes from `newest_restorable` (ctl and fit resume
    # through `CheckpointManager.restore_latest`, tested in-process in test_loop and test_fit;
    # the fit route deletes its backup after a finished run, so it restarts by design).
    monkeypatch.chdir(tmp_path)
    _train("runs/default", "estimator", 10)
    report = _train("runs/default", "estimator", 20)
    assert (report["start_step"], report["steps"]) == (10, 20)


def test_fit_backup_resumes_from_the_previous_backup_when_the_newest_is_truncated(tmp_path, caplog):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("float32")

    def fit(epochs):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        backup = callbacks.BackupAndRestore(str(tmp_path), delete_checkpoint=False, cluster=_CHIEF)
        model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[backup], verbose=0)
        return backup, model

    fit(2)  # backups after epoch 1 (step 4) and 2 (step 8): both kept
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-4.index", "ckpt-8.index"]
    _truncate(_data(tmp_path, 8))
    caplog.set_level(logging.INFO)
    backup, model = fit(3)
    assert backup.restored_epoch == 1 and int(model.optimizer.iterations.numpy()) == 12
    [line] = _warnings(caplog, "ckpt-8")
    assert "Read less bytes than requested" in line and "restoring ckpt-4 instead" in line
    assert (tmp_path / "unreadable" / "ckpt-8" / "ckpt-8.index").exists()


# --- a kill during a save ------------------------------------------------------------------------


def test_a_run_killed_during_a_save_resumes_from_the_previous_checkpoint(tmp_path, caplog):
    # A real tfdist-train, held inside the save of step 20 (its files written, the state file not
    # yet updated), killed with SIGKILL; the rerun resumes from ckpt-10 and finishes.
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "release-10").touch()
    model_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "tfdist.train", f"--model_dir={model_dir}", "--route=ctl",
            "--strategy=default", "--model=mlp", "--model_options=hidden=16", "--train_steps=20",
            "--eval_every=10", "--steps_per_loop=5"]
    process = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True,
                               env=subprocess_env(**{checkpoint.HOLD_SAVE_ENV: str(hold)}))
    try:
        deadline = time.monotonic() + 120
        while not (hold / "saving-20").exists():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "the save of step 20 never started"
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert tf.train.latest_checkpoint(str(model_dir)) == str(model_dir / "ckpt-10")
    caplog.set_level(logging.INFO)
    report = _train(model_dir, "ctl", 20)
    assert (report["start_step"], report["steps"]) == (10, 20)
    [line] = _warnings(caplog, "ckpt-20")  # the killed save's files: complete, never recorded
    assert checkpoint_recovery.UNFINISHED in line and "restoring ckpt-10 instead" in line
    assert tf.train.latest_checkpoint(str(model_dir)) == str(model_dir / "ckpt-20")
