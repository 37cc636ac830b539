"""Tests for route 2: plain Keras 3 `fit` under tfdist strategies, callbacks, errors."""

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import checkpoint, data
from tfdist.compat import keras_fit_checks
from tfdist.keras import callbacks
from tests import multiworker

TUTORIAL = str(Path(__file__).parent / "workers" / "keras_mw_tutorial.py")
UNCAUGHT_ERROR = str(Path(__file__).parent / "workers" / "fit_uncaught_error.py")


def _xy(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return x, (x[:, :4].sum(axis=1) > 0).astype(np.int64)


def _model(strategy, spe=1):
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            steps_per_execution=spe,
        )
    return model


def _dataset(batch=32):
    return tf.data.Dataset.from_tensor_slices(_xy()).batch(batch, drop_remainder=True).repeat()


# --- single process --------------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [1, 2])
def test_steps_per_execution_matches_one_step_per_call(cpus, replicas):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(replicas))
    weights = []
    for spe in (1, 10):
        model = _model(strategy, spe)
        history = model.fit(_dataset(), epochs=2, steps_per_epoch=20, verbose=0)
        assert history.history["loss"][1] < history.history["loss"][0]
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_on_data_layer_output_and_plain_arrays(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    spec = data.DataSpec(source=tf.data.Dataset.from_tensor_slices(_xy()), global_batch_size=32)
    model = _model(strategy)
    model.fit(data.for_fit(strategy, spec), epochs=1, steps_per_epoch=16, verbose=0)
    x, y = _xy()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # as Keras users pass data
    eval_spec = data.DataSpec(source=tf.data.Dataset.from_tensor_slices(_xy(seed=1)),
                              global_batch_size=32, training=False)
    loss, accuracy = model.evaluate(data.for_fit(strategy, eval_spec), verbose=0)
    assert accuracy > 0.8


def test_predict_keeps_input_order_across_replicas(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    model = _model(strategy)
    x, _ = _xy(100)
    together = model.predict(x, batch_size=16, verbose=0)
    one_by_one = np.concatenate([model(x[i : i + 1]).numpy() for i in range(len(x))])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_finished_iterators_go_to_the_reaper(cpus):
    """Keras drops an iterator per epoch; their resources are destroyed off the training thread."""
    from tfdist.compat import iterator_teardown

    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    model = _model(strategy)
    finite = tf.data.Dataset.from_tensor_slices(_xy()).batch(32, drop_remainder=True)
    gc.collect()  # earlier tests' garbage is not counted below
    before = iterator_teardown.finalized_count()
    model.fit(finite, epochs=3, verbose=0)  # an iterator per epoch, plus the call's end
    gc.collect()  # Keras's epoch iterator may sit in a reference cycle
    # Each distributed iterator has 3 resources here: the multi-device one and one per replica.
    assert iterator_teardown.finalized_count() - before >= 3 * 3


# --- errors ----------------------------------------------------------------------------------


def test_compiled_outside_the_scope(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(keras_fit_checks.FitConfigError, match="compiled outside its scope"):
        model.fit(_dataset(), steps_per_epoch=2, verbose=0)


def test_built_outside_the_scope(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    with strategy.scope():
        model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(keras_fit_checks.FitConfigError, match="built outside any strategy scope"):
        model.fit(_dataset(), steps_per_epoch=2, verbose=0)


@pytest.mark.parametrize("factory", [
    lambda d: callbacks.BackupAndRestore(d),
    lambda d: callbacks.ModelCheckpoint(str(Path(d) / "m.keras")),
    lambda d: callbacks.TensorBoard(d),
])
def test_callbacks_reject_a_file_as_directory_and_keep_it(tmp_path, factory):
    path = tmp_path / "saved.txt"
    path.write_text("precious")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory"):
        factory(str(path))
    assert path.read_text() == "precious"


def test_backup_save_freq_validation(tmp_path):
    with pytest.raises(ValueError, match="Received: save_freq=0"):
        callbacks.BackupAndRestore(str(tmp_path), save_freq=0)
    with pytest.raises(ValueError, match="Received: preemption_check_steps=0"):
        callbacks.BackupAndRestore(str(tmp_path), preemption_check_steps=0)


def test_sigterm_during_fit_backs_up_at_the_next_check_then_resumes_there(tmp_path):
    backup = str(tmp_path / "backup")

    class Term(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 13:
                # Never SIGTERM this test process without the handler: it would end the run.
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
                os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    model = _model(tf.distribute.get_strategy())
    with pytest.raises(checkpoint.Preempted) as raised:
        model.fit(_dataset(), epochs=2, steps_per_epoch=15, verbose=0, callbacks=[
            Term(), callbacks.BackupAndRestore(backup, preemption_check_steps=4)])
    assert raised.value.code == checkpoint.PREEMPTED_EXIT_CODE and raised.value.step == 16
    assert signal.getsignal(signal.SIGTERM) == before  # the process's own handler is back
    assert tf.train.latest_checkpoint(backup).endswith("ckpt-16")  # checks at 4, 8, 12, 16
    resumed = _model(tf.distribute.get_strategy())
    restore = callbacks.BackupAndRestore(backup)
    resumed.fit(_dataset(), epochs=2, steps_per_epoch=15, verbose=0, callbacks=[restore])
    assert (restore.restored_epoch, restore.restored_step) == (1, 1)
    assert int(resumed.optimizer.iterations.numpy()) == 30


def test_backup_resumes_mid_epoch_in_process(tmp_path, cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 25:
                raise KeyboardInterrupt  # an interrupted run, after the backup at step 20

    backup = str(tmp_path / "backup")
    model = _model(strategy)
    with pytest.raises(KeyboardInterrupt):
        model.fit(_dataset(), epochs=3, steps_per_epoch=16,
                  callbacks=[callbacks.BackupAndRestore(backup, save_freq=5), StopAt()], verbose=0)
    fresh = _model(strategy)
    restore = callbacks.BackupAndRestore(backup, save_freq=5)
    history = fresh.fit(_dataset(), epochs=3, steps_per_epoch=16, callbacks=[restore], verbose=0)
    # Backups every 5 steps since the last one: 5, 10, 15, 16 (epoch end), 21 = epoch 1, batch 5.
    assert (restore.restored_epoch, restore.restored_step) == (1, 5)
    assert int(fresh.optimizer.iterations.numpy()) == 48  # 3 x 16, nothing trained twice
    assert len(history.history["loss"]) == 2
    assert not Path(backup).exists()  # removed after success


def test_backup_in_a_relative_directory_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    strategy = tfdist.get_strategy("default")
    _model(strategy).fit(_dataset(), epochs=2, steps_per_epoch=5, verbose=0, callbacks=[
        callbacks.BackupAndRestore("runs/backup", delete_checkpoint=False)])
    fresh = _model(strategy)
    restore = callbacks.BackupAndRestore("runs/backup")
    history = fresh.fit(_dataset(), epochs=3, steps_per_epoch=5, verbose=0, callbacks=[restore])
    assert (restore.restored_epoch, restore.restored_step) == (2, 0)
    assert int(fresh.optimizer.iterations.numpy()) == 15 and len(history.history["loss"]) == 1


def _lazy_model(input_shape):
    """Built the way Keras builds without a strategy: variables at the first traced step."""
    keras.utils.set_random_seed(5)
    layers = [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    if input_shape:
        layers.insert(0, keras.Input((8,)))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.parametrize("input_shape, stop_at, restored", [
    (True, 17, (1, 5)),  # backups at steps 5, 10, 10 (epoch end), 15; stopped at 17
    (False, 17, (1, 5)),
    (True, 10, (0, 10)),  # stopped between the batch's backup and the epoch's: all of epoch 0 skipped
], ids=["built_model", "unbuilt_model", "whole_epoch_skipped"])
def test_backup_resumes_mid_epoch_into_a_fresh_lazily_built_model(
    tmp_path, input_shape, stop_at, restored
):
    """Issue 13 (the TF fault-tolerance guide, default strategy): the resumed fit saved a backup
    while it skipped trained batches, deleting the checkpoint the not-yet-built optimizer (Adam's
    slots) and model were still to be restored from: NotFoundError at the first real step."""
    strategy = tfdist.get_strategy("default")
    finite = tf.data.Dataset.from_tensor_slices(_xy(320)).batch(32)  # 10 steps per epoch, in order

    class StopAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == stop_at:
                raise KeyboardInterrupt

    class CountTrained(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.at_start = int(self.model.optimizer.iterations.numpy())

    with strategy.scope():
        uninterrupted = _lazy_model(input_shape)
        uninterrupted.fit(finite, epochs=3, verbose=0)
        backup = str(tmp_path / "backup")
        first = _lazy_model(input_shape)
        with pytest.raises(KeyboardInterrupt):
            first.fit(finite, epochs=3, verbose=0,
                      callbacks=[callbacks.BackupAndRestore(backup, save_freq=5), StopAt()])
        fresh = _lazy_model(input_shape)  # a restarted job's model: nothing built yet
        restore = callbacks.BackupAndRestore(backup, save_freq=5)
        count = CountTrained()
        fresh.fit(finite, epochs=3, verbose=0, callbacks=[restore, count])
    assert (restore.restored_epoch, restore.restored_step) == restored
    assert count.at_start == restored[0] * 10 + restored[1]
    assert int(fresh.optimizer.iterations.numpy()) == 30  # exactly 3 x 10: 15 trained, none twice
    for a, b in zip(fresh.get_weights(), uninterrupted.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not Path(backup).exists()


# --- real processes --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["in_fit", "after_fit", "in_second_fit"])
def test_uncaught_error_around_fit_exits_the_process(mode):
    """Issue 13: a NameError escaping `fit` hung the process at exit (a thread started during
    interpreter finalization never runs). It exits with the traceback's status, as without tfdist."""
    result = subprocess.run([sys.executable, UNCAUGHT_ERROR, mode], capture_output=True, text=True,
                            timeout=300, env=multiworker.subprocess_env(), cwd=multiworker.REPO_ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.rstrip().endswith("NameError: name 'undefined_name' is not defined")


def _run(tmp_path, num_workers, env=None, check=True, name="run"):
    out = tmp_path / name / "out"
    out.mkdir(parents=True)
    # 270 s: a test of two runs stays below pytest's 900 s, so a stall fails with the output.
    results = multiworker.run_workers(
        ["python", TUTORIAL, str(tmp_path / "backup"), str(out)], num_workers=num_workers,
        env=env or {}, check=check, timeout=270)
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    return results, reports


@pytest.mark.multiworker
def test_tutorial_two_workers_match_each_other_and_one_worker(tmp_path):
    _, two = _run(tmp_path, 2, name="two")
    _, one = _run(tmp_path, 1, name="one")
    w0, w1 = two["worker-0"], two["worker-1"]
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert w0["history"]["loss"][-1] < w0["history"]["loss"][0]
    assert w0["iterations"] == 210
    assert w0["test_accuracy"] > 0.8
    assert abs(w0["test_accuracy"] - one["worker-0"]["test_accuracy"]) < 0.1
    assert w0["predict_in_order"] and w0["predict_rows"] == 360  # gathered across workers


@pytest.mark.multiworker
def test_tutorial_killed_worker_resumes_from_backup(tmp_path):
    results, _ = _run(tmp_path, 2, env={"CRASH_AT_STEP": "95"}, check=False, name="crash")
    assert results[1].returncode == -9, [f"{r.name} (exit {r.returncode}): {r.output[-2000:]}"
                                         for r in results]
    assert tf.train.latest_checkpoint(str(tmp_path / "backup")).endswith("ckpt-90")
    _, reports = _run(tmp_path, 2, name="restart")
    for report in reports.values():
        assert report["restored"] == [1, 20]  # epoch 2 of 3, 20 of its 70 steps done
        assert report["iterations"] == 210
        assert len(report["history"]["loss"]) == 2
    assert not (tmp_path / "backup").exists()


@pytest.mark.multiworker
def test_tutorial_sigterm_backs_up_every_worker_at_that_step_then_resumes_there(tmp_path):
    """Issue 22: TF's coordination service replaces the SIGTERM handler, so a 2-worker `fit`
    trained on through a SIGTERM. Worker 1 gets SIGTERM after step 95 (its own callback, at that
    step: no timing); both workers must agree, back up at the next check (step 100: one every 10
    steps) and exit 143."""
    env = {"TERM_AT_STEP": "95", "TUTORIAL_EPOCHS": "2"}
    results, _ = _run(tmp_path, 2, env=env, check=False, name="term")
    outputs = [f"{r.name} (exit {r.returncode}): {r.output[-2000:]}" for r in results]
    assert [r.returncode for r in results] == [checkpoint.PREEMPTED_EXIT_CODE] * 2, outputs
    assert "preempted by SIGTERM; saved a checkpoint at step 100" in results[0].output, outputs
    assert tf.train.latest_checkpoint(str(tmp_path / "backup")).endswith("ckpt-100")
    _, reports = _run(tmp_path, 2, env={"TUTORIAL_EPOCHS": "2"}, name="restart")
    w0, w1 = reports["worker-0"], reports["worker-1"]
    for report in (w0, w1):
        assert report["restored"] == [1, 30]  # epoch 2 of 2, 30 of its 70 steps done
        assert report["iterations"] == 140
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert not (tmp_path / "backup").exists()


@pytest.mark.multiworker
def test_steps_per_execution_and_chief_only_outputs_under_two_workers(tmp_path):
    extra = tmp_path / "extra"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _, reports = _run(tmp_path, 2, env={"STEPS_PER_EXECUTION": "10", "EXTRA_DIR": str(extra),
                                        "TMPDIR": str(scratch)})
    w0, w1 = reports["worker-0"], reports["worker-1"]
    assert w0["steps_per_execution"] == 10 and w0["iterations"] == 210
    for a, b in zip(w0["weights"], w1["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert w0["test_accuracy"] > 0.8
    # ModelCheckpoint's end-of-training marker for evaluator tasks sits beside its file.
    assert {p.name for p in extra.iterdir()} == {"best.keras", "tb", "final.keras", "saved_model",
                                                 "training_done"}
    assert keras.models.load_model(extra / "final.keras").count_params() > 0
    assert tf.saved_model.load(str(extra / "saved_model")).serve(tf.zeros((2, 8, 8))).shape == (2, 10)
    assert not list(scratch.glob("tfdist-*"))  # the non-chief cleaned its scratch copies
