"""Tests for tfdist.estimator.hooks: stop, logging and listener hooks, and the NaN-loss stop."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests.estimator_helpers import _config, _estimator, _input_fn, _model_fn, _Recorder


def test_hooks_stop_log_and_listen(tmp_path):
    logged = []

    def model_fn(features, labels, mode):
        spec = _model_fn()(features, labels, mode)
        if mode != est.ModeKeys.TRAIN:
            return spec
        mean_logit = tf.reduce_mean(tf.cast(labels, tf.float32))
        hook = est.LoggingTensorHook({"label_mean": mean_logit, "step": "global_step"}, every_n_iter=3,
                                     formatter=lambda values: logged.append(values) or str(values))
        return spec._replace(training_hooks=[hook])

    class Listener(est.CheckpointSaverListener):
        saves = []

        def after_save(self, session, global_step_value):
            self.saves.append(global_step_value)

    # steps_per_loop=5, but the hooks cut loop calls where they act: exactly at step 7.
    estimator = _estimator(tmp_path, model_fn, config=_config(steps_per_loop=5, save_checkpoints_steps=4))
    recorder = _Recorder()
    estimator.train(_input_fn(), steps=100, hooks=[est.StopAtStepHook(last_step=7), recorder],
                    saving_listeners=[Listener()])
    assert estimator.get_variable_value("global_step") == 7
    # Loop calls end where something happens: a save at 4, then the stop (and a log) at 7.
    assert recorder.steps == [4, 7]
    assert Listener.saves == [4, 7]
    assert [v["step"] for v in logged] == [4, 7]
    assert all(0.0 <= v["label_mean"] <= 1.0 for v in logged)
    estimator.train(_input_fn(), hooks=[est.StopAtStepHook(num_steps=2)])
    assert estimator.get_variable_value("global_step") == 9


def test_logging_tensor_hook_with_lists_of_tensors_and_names(tmp_path):
    """The TF guide's program (migrate/logging_stop_hook): a list of model_fn tensors."""
    logged, names_logged = [], []

    def model_fn(features, labels, mode):
        dense = keras.layers.Dense(1)
        loss = tf.reduce_mean(tf.square(dense(features) - labels))
        kernel, bias = tf.identity(dense.weights[0]), tf.identity(dense.weights[1])
        weights_hook = est.LoggingTensorHook(tensors=[kernel, bias], every_n_iter=1,
                                             formatter=lambda v: logged.append(v) or str(v))
        loss_hook = est.LoggingTensorHook({"loss from LoggingTensorHook": loss}, every_n_secs=3)
        return est.EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.Adagrad(0.05),
                                 training_hooks=[est.StopAtStepHook(num_steps=2), weights_hook,
                                                 loss_hook])

    features, labels = [[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]], [[0.3], [0.5], [0.7]]
    estimator = _estimator(tmp_path, model_fn)
    names_hook = est.LoggingTensorHook(["loss", "global_step"], every_n_iter=1,
                                       formatter=lambda v: names_logged.append(v) or str(v))
    estimator.train(lambda: tf.data.Dataset.from_tensor_slices((features, labels)).batch(1),
                    hooks=[names_hook])
    assert estimator.get_variable_value("global_step") == 2
    assert [list(v) for v in logged] == [["Identity:0", "Identity_1:0"]] * 2  # tensor names
    assert [np.shape(v["Identity:0"]) for v in logged] == [(2, 1), (2, 1)]
    assert not np.array_equal(logged[0]["Identity:0"], logged[1]["Identity:0"])  # trained
    assert [v["global_step"] for v in names_logged] == [1, 2]
    assert all(v["loss"] > 0 for v in names_logged)


def test_nan_loss_stops_training(tmp_path):
    estimator = _estimator(tmp_path, _model_fn(lr=1e30))
    with pytest.raises(est.NanLossDuringTrainingError, match="NaN loss during training"):
        estimator.train(_input_fn(), steps=50)

