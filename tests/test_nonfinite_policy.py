"""The non-finite-loss policy of every route (issue 22), with NaN injected at a chosen step.

`"stop"` ends training with an error naming the step; `"restore"` goes back to the newest
checkpoint (a backup for `fit`), skips the batches since and trains on, at most
`max_nonfinite_restores` times. Route 1 (`tfdist.loop.Controller`) is covered by
tests/test_loop.py (`test_nonfinite_loss_*`); here: `fit`'s `BackupAndRestore` and the Estimator,
each on real data whose batch at one step holds NaN.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests import estimator_helpers
from tfdist import cluster, outer_loop, runner
from tfdist.keras import callbacks

BATCH = 16
NAN_STEP = 7  # 1-based: the 7th optimizer step trains on the NaN batch


def _batches(num, nan_step=NAN_STEP):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num * BATCH, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    x[(nan_step - 1) * BATCH:nan_step * BATCH] = np.nan
    return x, y


def _restore_lines(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "not finite" in r.getMessage()]


# --- fit -----------------------------------------------------------------------------------------


def _fit(tmp_path, nan_step=NAN_STEP, **policy):
    x, y = _batches(12, nan_step)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backup = callbacks.BackupAndRestore(str(tmp_path), cluster=cluster.ClusterInfo(), **policy)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)  # 12 batches, read once
    model.fit(data, epochs=3, steps_per_epoch=4, callbacks=[backup], verbose=0, shuffle=False)
    return model


def test_fit_stop_names_the_step(tmp_path):
    with pytest.raises(outer_loop.NonFiniteLossError,
                       match=rf"^Training loss is not finite by step {NAN_STEP} \(loss: nan\)") as raised:
        _fit(tmp_path, on_nonfinite="stop")
    assert (raised.value.step, raised.value.last_saved) == (NAN_STEP, 4)


def test_fit_restore_goes_back_to_the_last_backup_and_trains_on(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    model = _fit(tmp_path, on_nonfinite="restore")
    # Back to the backup at step 4 after step 7; steps 5-7 are lost, the epochs go on.
    assert int(model.optimizer.iterations.numpy()) == 12 - (NAN_STEP - 4)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    [line] = _restore_lines(caplog)
    assert f"by step {NAN_STEP}" in line and "Restored" in line and "ckpt-4 (restore 1 of 3)" in line


def test_fit_restore_gives_up_after_the_bounded_restores_and_without_a_backup(tmp_path):
    with pytest.raises(outer_loop.NonFiniteLossError, match="no backup to restore"):
        _fit(tmp_path / "none", nan_step=3, on_nonfinite="restore")  # before the first backup
    with pytest.raises(outer_loop.NonFiniteLossError, match="0 restores did not help"):
        _fit(tmp_path / "zero", on_nonfinite="restore", max_nonfinite_restores=0)


def test_fit_policy_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"Received: on_nonfinite='skip'"):
        callbacks.BackupAndRestore(str(tmp_path), on_nonfinite="skip", cluster=cluster.ClusterInfo())
    with pytest.raises(ValueError, match=r"max_nonfinite_restores"):
        callbacks.BackupAndRestore(str(tmp_path), max_nonfinite_restores=-1, cluster=cluster.ClusterInfo())


# --- Estimator -----------------------------------------------------------------------------------


def _estimator(tmp_path, **policy):
    config = est.RunConfig(save_checkpoints_steps=4, log_step_count_steps=None, **policy)
    # Linear: in a compiled step grappler fuses MatMul + BiasAdd + Relu into one oneDNN kernel,
    # whose ReLU turns NaN into 0 on an AVX-512 CPU (seen here; an AVX2 one kept the NaN), so
    # behind a ReLU the NaN batch reaches the weights but never the loss on some machines.
    model_fn = estimator_helpers._model_fn(lr=0.1, activation=None)
    return est.Estimator(model_fn, model_dir=str(tmp_path), config=config)


def _input_fn():
    return tf.data.Dataset.from_tensor_slices(_batches(16)).batch(BATCH)  # NaN at step 7, 16 batches


def test_estimator_stop_names_the_step(tmp_path):
    estimator = _estimator(tmp_path, on_nonfinite="stop")
    with pytest.raises(est.NanLossDuringTrainingError,
                       match=rf"the loss is nan at global step {NAN_STEP}\. Lower .* step 4\.$"):
        estimator.train(_input_fn, max_steps=12)


def test_estimator_restore_goes_back_to_the_last_checkpoint_and_finishes(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    estimator = _estimator(tmp_path, on_nonfinite="restore")
    estimator.train(_input_fn, max_steps=12)
    assert estimator.get_variable_value("global_step") == 12  # the requested step, exactly
    names = [n for n in estimator.get_variable_names() if n != "global_step"]
    assert names and all(np.isfinite(estimator.get_variable_value(n)).all() for n in names)
    [line] = _restore_lines(caplog)
    assert "ckpt-4 (restore 1 of 3)" in line


def test_estimator_restore_gives_up_after_the_bounded_restores(tmp_path):
    estimator = _estimator(tmp_path, on_nonfinite="restore", max_nonfinite_restores=0)
    with pytest.raises(est.NanLossDuringTrainingError, match="Gave up after 0 restores"):
        estimator.train(_input_fn, max_steps=12)
    with pytest.raises(ValueError, match=r"Received: on_nonfinite='skip'"):
        est.RunConfig(on_nonfinite="skip")


# --- tfdist-train: --on_nonfinite reaches every route ----------------------------------------------


@pytest.mark.parametrize("route, error", [
    ("ctl", outer_loop.NonFiniteLossError),
    ("fit", outer_loop.NonFiniteLossError),
    ("estimator", est.NanLossDuringTrainingError),
])
def test_tfdist_train_stops_on_a_diverging_loss_in_every_route(tmp_path, route, error):
    # A learning rate of 1e30 makes the loss infinite within a few steps.
    options = runner.TrainOptions(
        model_dir=str(tmp_path), route=route, strategy="default", model="mlp",
        model_options="hidden=16", train_steps=20, eval_every=10, steps_per_loop=1,
        learning_rate=1e30, progress=False, on_nonfinite="stop")
    with pytest.raises(error, match=r"(not finite (at|before|by) (global )?step|at global step) \d+"):
        runner.run(options)


def test_tfdist_train_checks_the_policy_options(tmp_path):
    for bad, message in [(dict(on_nonfinite="skip"), "Received: on_nonfinite='skip'"),
                         (dict(max_nonfinite_restores=-1), "max_nonfinite_restores")]:
        with pytest.raises(runner.RunError, match=message):
            runner.run(runner.TrainOptions(model_dir=str(tmp_path), strategy="default", **bad))
