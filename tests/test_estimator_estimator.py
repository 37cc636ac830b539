"""Tests for tfdist.estimator.estimator (the `Estimator` class): train, resume, loss scaling across
replicas, seeds, SIGTERM, evaluate, predict, graph mode and argument errors."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
import tfdist.estimator as est
from tests import multiworker
from tests.estimator_helpers import (
    _config,
    _data,
    _estimator,
    _input_fn,
    _model_fn,
    _Recorder,
)
from tfdist import checkpoint


def test_train_twice_then_a_restarted_job_resumes(tmp_path, cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    estimator = _estimator(tmp_path, config=_config(train_distribute=strategy))
    estimator.train(_input_fn(), steps=50)
    estimator.train(_input_fn(), steps=50)
    assert estimator.get_variable_value("global_step") == 100
    assert estimator.latest_checkpoint().endswith("ckpt-100")

    restarted = _estimator(tmp_path, config=_config(train_distribute=strategy))
    recorder = _Recorder()
    restarted.train(_input_fn(), max_steps=120, hooks=[recorder])
    assert recorder.steps[0] == 101 and recorder.steps[-1] == 120
    assert recorder.calls == ["begin", "after_create_session", "end"]
    restarted.train(_input_fn(), max_steps=120)  # already there: nothing to do
    assert restarted.get_variable_value("global_step") == 120


def test_a_relative_model_dir_resumes_and_a_fresh_estimator_evaluates_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trained = _estimator("runs/est")
    trained.train(_input_fn(), steps=20)
    expected = trained.evaluate(_input_fn(repeat=False))
    # A fresh Estimator (a new process) reads the trained variables, not its initial ones.
    assert _estimator("runs/est").evaluate(_input_fn(repeat=False)) == pytest.approx(expected)
    restarted, recorder = _estimator("runs/est"), _Recorder()
    restarted.train(_input_fn(), max_steps=25, hooks=[recorder])
    assert (recorder.steps[0], recorder.steps[-1]) == (21, 25)
    assert restarted.latest_checkpoint() == "runs/est/ckpt-25"


def test_one_and_two_replicas_train_the_same_weights(tmp_path, cpus):
    """Loss scaling: each replica's mean loss is divided by the replica count."""
    weights, results = [], []
    for i, strategy in enumerate([tfdist.get_strategy("default"),
                                  tfdist.get_strategy("mirrored", devices=cpus(2))]):
        estimator = _estimator(tmp_path / str(i), config=_config(train_distribute=strategy,
                                                                 tf_random_seed=3))
        estimator.train(_input_fn(), steps=20)
        weights.append([estimator.get_variable_value(n) for n in
                        ("sequential/dense/kernel", "sequential/dense_1/kernel")])
        # 257 examples in batches of 32: the last batch has 1 example, so one replica gets none.
        results.append(estimator.evaluate(_input_fn(repeat=False, num=257)))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert results[0]["loss"] == pytest.approx(results[1]["loss"], rel=1e-5)
    assert results[0]["accuracy"] == pytest.approx(results[1]["accuracy"], rel=1e-6)


def _keras_loss_model_fn(features, labels, mode):
    """The common model_fn shape: a Keras `Loss` object with its default reduction."""
    model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    logits = model(features)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    if mode == est.ModeKeys.EVAL:
        return est.EstimatorSpec(mode, loss=loss)
    return est.EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.SGD(0.3))


def test_a_keras_loss_object_is_the_replicas_own_mean(tmp_path, cpus):
    """Keras scales a Loss by 1/replicas under a strategy; tfdist divides too: not twice."""
    weights, losses = [], []
    for i, strategy in enumerate([tfdist.get_strategy("default"),
                                  tfdist.get_strategy("mirrored", devices=cpus(2))]):
        estimator = _estimator(tmp_path / str(i), model_fn=_keras_loss_model_fn,
                               config=_config(train_distribute=strategy, tf_random_seed=3))
        estimator.train(_input_fn(), steps=10)
        weights.append([estimator.get_variable_value(n) for n in
                        ("sequential/dense/kernel", "sequential/dense_1/kernel")])
        losses.append(estimator.evaluate(_input_fn(repeat=False))["loss"])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    # Outside model_fn, Keras's own scaling is untouched (fit relies on it).
    with tfdist.get_strategy("mirrored", devices=cpus(2)).scope():
        per_replica = tfdist.get_strategy("mirrored", devices=cpus(2)).run(
            lambda: keras.losses.MeanSquaredError()(tf.ones((2, 1)), tf.zeros((2, 1))))
    values = per_replica.values if hasattr(per_replica, "values") else (per_replica,)
    assert [float(v) for v in values] == [0.5, 0.5]


def test_tf_random_seed_fixes_initial_weights(tmp_path):
    values = []
    for name in ("a", "b"):
        estimator = _estimator(tmp_path / name, _model_fn(lr=0.0), config=_config(tf_random_seed=7))
        estimator.train(_input_fn(), steps=1)
        values.append(estimator.get_variable_value("sequential/dense/kernel"))
    np.testing.assert_array_equal(*values)


def test_sigterm_saves_at_the_current_step(tmp_path):
    class SigtermAtStep5(est.SessionRunHook):
        def before_run(self, run_context):
            return est.SessionRunArgs("global_step")

        def after_run(self, run_context, run_values):
            if run_values.results == 5:
                os.kill(os.getpid(), signal.SIGTERM)

    estimator = _estimator(tmp_path)
    with pytest.raises(checkpoint.Preempted) as raised:
        estimator.train(_input_fn(), steps=100, hooks=[SigtermAtStep5()])
    assert raised.value.code == checkpoint.PREEMPTED_EXIT_CODE and raised.value.step == 5
    assert estimator.latest_checkpoint().endswith("ckpt-5")


def test_evaluate_returns_loss_metrics_and_step_and_writes_summaries(tmp_path):
    estimator = _estimator(tmp_path)
    estimator.train(_input_fn(), steps=30)
    result = estimator.evaluate(_input_fn(repeat=False), name="holdout")
    assert set(result) == {"loss", "accuracy", "global_step"} and result["global_step"] == 30
    assert 0 < result["loss"] < 0.7 and result["accuracy"] > 0.7
    assert list((tmp_path / "eval_holdout").glob("events.*"))
    # Short final batch (256 = 2 x 100 + 56): the loss is the mean over examples.
    assert estimator.evaluate(_input_fn(batch=100, repeat=False))["loss"] == pytest.approx(result["loss"], rel=1e-5)
    assert estimator.evaluate(_input_fn(repeat=False), steps=1)["global_step"] == 30


def test_predict_yields_one_dict_per_example(tmp_path):
    estimator = _estimator(tmp_path)
    estimator.train(_input_fn(), steps=30)
    x, y = _data(40)
    only_x = lambda: tf.data.Dataset.from_tensor_slices(x).batch(16)  # noqa: E731
    predictions = list(estimator.predict(only_x, predict_keys=["classes"]))
    assert len(predictions) == 40 and set(predictions[0]) == {"classes"}
    assert np.mean([p["classes"] for p in predictions] == y) > 0.7
    batches = list(estimator.predict(only_x, yield_single_examples=False))
    assert [b["logits"].shape for b in batches] == [(16, 2), (16, 2), (8, 2)]


_GRAPH_MODE_PROGRAM = """
import json, sys
import tensorflow as tf
import tfdist.estimator as est
from tests.estimator_helpers import _input_fn, _model_fn

made_eagerly = est.Estimator(_model_fn(), sys.argv[1])
tf.compat.v1.disable_eager_execution()  # line one of the multi_worker_with_estimator tutorial
errors = {}
calls = {
    "Estimator": lambda: est.Estimator(_model_fn(), sys.argv[1]),
    "train": lambda: made_eagerly.train(_input_fn(), steps=1),
    "evaluate": lambda: made_eagerly.evaluate(_input_fn(repeat=False)),
    "predict": lambda: made_eagerly.predict(_input_fn(repeat=False)),
    "train_and_evaluate": lambda: est.train_and_evaluate(
        made_eagerly, est.TrainSpec(_input_fn()), est.EvalSpec(_input_fn())),
    "model_to_estimator": lambda: est.model_to_estimator(),
}
for name, call in calls.items():
    try:
        call()
    except Exception as err:
        errors[name] = f"{type(err).__name__}: {err}"
print(json.dumps(errors))
"""


def test_graph_mode_is_one_clear_error(tmp_path):
    # disable_eager_execution is process-global: run it in a child, not in pytest's process.
    result = subprocess.run([sys.executable, "-c", _GRAPH_MODE_PROGRAM, str(tmp_path)],
                            capture_output=True, text=True, timeout=300,
                            env=multiworker.subprocess_env(), cwd=multiworker.REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(errors) == {"Estimator", "train", "evaluate", "predict", "train_and_evaluate",
                           "model_to_estimator"}
    for message in errors.values():
        assert message.startswith("RuntimeError: ") and "\n" not in message
        assert "in graph mode" in message
        assert "Remove that call" in message and "disable_eager_execution()" in message


def test_predict_keys_that_do_not_exist(tmp_path):
    estimator = _estimator(tmp_path)
    estimator.train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="predict_keys \\['clases'\\] are not in model_fn's predictions. "
                                         "Available keys: \\['classes', 'logits'\\].*did you mean 'classes'"):
        list(estimator.predict(_input_fn(repeat=False), predict_keys=["clases"]))


def test_train_argument_errors(tmp_path):
    estimator = _estimator(tmp_path)
    with pytest.raises(ValueError, match="at most one of `steps` and `max_steps`"):
        estimator.train(_input_fn(), steps=1, max_steps=2)
    with pytest.raises(ValueError, match="Received: steps=0"):
        estimator.train(_input_fn(), steps=0)
    with pytest.raises(ValueError, match="input_fn's dataset repeats forever. Pass steps="):
        estimator.evaluate(_input_fn(repeat=True))
    with pytest.raises(TypeError, match="SessionRunHook instances; received str"):
        estimator.train(_input_fn(), steps=1, hooks=["log"])
    with pytest.raises(ValueError, match="fetches 'accuracy', which is not a run value"):
        class Bad(est.SessionRunHook):
            def before_run(self, run_context):
                return est.SessionRunArgs("accuracy")

        estimator.train(_input_fn(), steps=1, hooks=[Bad()])

