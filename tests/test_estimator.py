"""Tests for route 3 (tfdist.estimator): the tutorial program, resume, warm start, variables
created once, loss scaling across replicas, hooks, exporters, roles, and every error path."""

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
import tfdist.estimator as est
from tests import multiworker
from tests.workers import estimator_job
from tfdist import checkpoint, cluster

JOB = str(Path(__file__).parent / "workers" / "estimator_job.py")


# --- a tiny model and data -------------------------------------------------------------------------


def _data(num=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def _input_fn(batch=32, repeat=True, num=256):
    def input_fn():
        ds = tf.data.Dataset.from_tensor_slices(_data(num)).batch(batch)
        return ds.repeat() if repeat else ds

    return input_fn


def _model_fn(models=None, lr=0.3, **spec_overrides):
    """model_fn building a Keras model inside; `models` records every model it builds."""

    def model_fn(features, labels, mode):
        model = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        if models is not None:
            models.append(model)
        logits = model(features["x"] if isinstance(features, dict) else features)
        if mode == est.ModeKeys.PREDICT:
            return est.EstimatorSpec(mode, predictions={"logits": logits, "classes": tf.argmax(logits, 1)})
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        accuracy.update_state(labels, logits)
        fields = dict(loss=loss, optimizer=keras.optimizers.SGD(lr), eval_metric_ops={"accuracy": accuracy})
        fields.update(spec_overrides)
        if mode == est.ModeKeys.EVAL:
            fields.pop("optimizer", None)
        return est.EstimatorSpec(mode, **fields)

    return model_fn


def _config(**kwargs):
    kwargs.setdefault("save_checkpoints_steps", 50)
    return est.RunConfig(**kwargs)


def _estimator(tmp_path, model_fn=None, **kwargs):
    config = kwargs.pop("config", None) or _config()
    return est.Estimator(model_fn or _model_fn(), model_dir=str(tmp_path), config=config, **kwargs)


def _receiver():
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name="x")
    return est.export.TensorServingInputReceiver(x, {"x": x})


class _Recorder(est.SessionRunHook):
    def __init__(self):
        self.calls, self.steps = [], []

    def begin(self):
        self.calls.append("begin")

    def after_create_session(self, session, coord):
        self.calls.append("after_create_session")

    def before_run(self, run_context):
        return est.SessionRunArgs({"step": "global_step", "loss": "loss"})

    def after_run(self, run_context, run_values):
        self.steps.append(run_values.results["step"])

    def end(self, session):
        self.calls.append("end")


# --- the tutorial program ----------------------------------------------------------------------------


def _check_export(export_dir):
    serving = tf.saved_model.load(export_dir)
    images = (estimator_job.load_digits().images[:20, ..., None] / 16).astype(np.float32)
    outputs = serving.signatures["serving_default"](images=tf.constant(images))
    assert outputs["logits"].shape == (20, 10)
    accuracy = np.mean(outputs["classes"].numpy() == estimator_job.load_digits().target[:20])
    assert accuracy > 0.6, accuracy


def _summary_steps(directory):
    steps = set()
    for path in directory.glob("events.*"):
        steps.update(e.step for e in tf.compat.v1.train.summary_iterator(str(path)) if e.summary.value)
    return sorted(steps)


def test_tutorial_program_as_one_process(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = estimator_job.main(str(tmp_path / "model"), str(out), epochs=8)
    result = report["eval_result"]
    # 8 epochs of 1500 examples in batches of 32, input ends. Accuracy over 20 seeds: 0.85-0.91.
    assert result["global_step"] == 375
    assert result["accuracy"] > 0.75 and result["loss"] > 0
    assert report["latest_checkpoint"].endswith("ckpt-375")
    (export_dir,) = report["exports"]
    _check_export(export_dir)
    assert list((tmp_path / "model" / "eval").glob("events.*"))


@pytest.mark.multiworker
def test_tutorial_program_on_two_workers_and_an_evaluator(tmp_path):
    model_dir, out, scratch = tmp_path / "model", tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    multiworker.run_workers(["python", JOB, str(model_dir), str(out)], num_workers=2,
                            evaluator=True, env={"TMPDIR": str(scratch)}, timeout=400)
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {"worker-0", "worker-1", "evaluator-0"}
    # 1500 examples sharded over 2 input pipelines, 16 epochs, per-worker batches of 32.
    assert [reports[name]["last_step"] for name in ("worker-0", "worker-1")] == [375, 375]
    assert reports["worker-0"]["latest_checkpoint"].endswith("ckpt-375")  # the chief wrote it
    evaluator = reports["evaluator-0"]
    assert evaluator["eval_result"]["global_step"] == 375
    assert evaluator["eval_result"]["accuracy"] > 0.75
    (export_dir,) = evaluator["exports"]
    assert Path(export_dir).parent == model_dir / "export" / "digits"
    _check_export(export_dir)
    top = {p.name for p in model_dir.iterdir()}
    assert {"checkpoint", "ckpt-375.index", "eval", "export", "training_done"} <= top
    assert len([n for n in top if "tfevents" in n]) == 1  # only the chief writes training summaries
    assert not list(scratch.glob("tfdist-*"))  # the other worker removed its scratch checkpoints
    evaluated = _summary_steps(model_dir / "eval")
    assert evaluated[-1] == 375 and set(evaluated) <= {100, 200, 300, 375}  # new checkpoints only


# --- training, resume, warm start ------------------------------------------------------------------


def test_model_fn_builds_under_the_dtype_policy_the_estimator_was_made_with(tmp_path, cpus):
    # Keras keeps the global policy per thread; MirroredStrategy runs model_fn on replica threads.
    models = []
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        estimator = _estimator(tmp_path, _model_fn(models), config=_config(
            train_distribute=tfdist.get_strategy("mirrored", devices=cpus(2))))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    estimator.train(_input_fn(), steps=5)
    assert models and {layer.dtype_policy.name for m in models for layer in m.layers} == {
        "mixed_bfloat16"}
    assert keras.mixed_precision.dtype_policy().name == "float32"  # the caller's is left alone


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


def test_warm_start_loads_weights_into_a_fresh_model_dir(tmp_path):
    source = _estimator(tmp_path / "source")
    source.train(_input_fn(), steps=20)
    kernel = source.get_variable_value("sequential/dense/kernel")

    # Learning rate 0: after one step the weights are exactly the warm-started ones.
    fresh = _estimator(tmp_path / "fresh", _model_fn(lr=0.0), warm_start_from=str(tmp_path / "source"))
    fresh.train(_input_fn(), steps=1)
    np.testing.assert_array_equal(fresh.get_variable_value("sequential/dense/kernel"), kernel)
    assert fresh.get_variable_value("global_step") == 1  # the step is not warm-started

    export_dir = source.export_saved_model(str(tmp_path / "export"), _receiver)
    only_first = est.WarmStartSettings(export_dir, vars_to_warm_start="sequential/dense/")
    partial = _estimator(tmp_path / "partial", _model_fn(lr=0.0), warm_start_from=only_first)
    partial.train(_input_fn(), steps=1)
    np.testing.assert_array_equal(partial.get_variable_value("sequential/dense/kernel"), kernel)
    assert not np.array_equal(partial.get_variable_value("sequential/dense_1/kernel"),
                              source.get_variable_value("sequential/dense_1/kernel"))


def test_warm_start_from_a_tf1_name_based_checkpoint(tmp_path):
    """Checkpoints written by tf.estimator (a tf.compat.v1 Saver) load by variable name."""
    kernel = np.arange(32, dtype=np.float32).reshape(4, 8)
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("dense/kernel", initializer=kernel)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(session, str(tmp_path / "tf1" / "model.ckpt"), global_step=500)
    settings = est.WarmStartSettings(prefix, vars_to_warm_start="sequential/dense/kernel",
                                     var_name_to_prev_var_name={"sequential/dense/kernel": "dense/kernel"})
    estimator = _estimator(tmp_path / "new", _model_fn(lr=0.0), warm_start_from=settings)
    estimator.train(_input_fn(), steps=1)
    np.testing.assert_array_equal(estimator.get_variable_value("sequential/dense/kernel"), kernel)


def test_variables_are_created_once_across_modes_and_calls(tmp_path):
    models = []
    estimator = _estimator(tmp_path, _model_fn(models))
    created = []

    def count(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    def every_mode():
        estimator.train(_input_fn(), steps=5)
        estimator.evaluate(_input_fn(repeat=False))
        list(estimator.predict(_input_fn(repeat=False)))
        raw = est.export.build_raw_serving_input_receiver_fn(tf.TensorSpec([None, 4], tf.float32))
        exports.append(estimator.export_saved_model(str(tmp_path / "export"), raw))

    exports = []
    with tf.variable_creator_scope(count):
        every_mode()
        first_round = len(created)
        every_mode()
    served = tf.saved_model.load(exports[-1]).signatures["serving_default"](input=tf.zeros([3, 4]))
    assert served["logits"].shape == (3, 2)
    assert first_round > 0 and len(created) == first_round  # the second round created nothing
    assert len(models) > 6  # model_fn ran many times (build and real traces, every mode) ...
    shared = {id(w.value) for m in models for w in m.weights}
    assert len(shared) == len(models[0].weights) == 4  # ... and every model shares 4 variables
    names = estimator.get_variable_names()
    assert [n for n in names if n.startswith("sequential/")] == [
        "sequential/dense/bias", "sequential/dense/kernel",
        "sequential/dense_1/bias", "sequential/dense_1/kernel"]
    assert "global_step" in names and not any("accuracy" in n for n in names)  # metrics are local
    assert "sgd/iteration" in names


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


# --- input_fn forms --------------------------------------------------------------------------------


def test_input_fn_forms(tmp_path, cpus):
    x, y = _data()
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    inner = _model_fn()
    model_fn = lambda features, labels, mode, params: inner(features, labels, mode)  # noqa: E731
    estimator = _estimator(tmp_path, model_fn, config=_config(train_distribute=strategy),
                           params={"batch": 32})
    seen = []

    def with_params(params):
        seen.append(params["batch"])
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch"]).repeat()

    def with_context(mode, input_context):
        seen.append((mode, input_context.num_replicas_in_sync))
        per_replica = input_context.get_per_replica_batch_size(32)
        return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(per_replica).repeat()

    def tensors():
        return tf.constant(x[:32]), tf.constant(y[:32])

    estimator.train(with_params, steps=2)
    estimator.train(with_context, steps=2)
    estimator.train(tensors, steps=2)  # one batch, repeated for training
    spec = tfdist.data.DataSpec(source=tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=32)
    estimator.train(tfdist.data.input_fn(spec), steps=2)
    assert estimator.get_variable_value("global_step") == 8
    assert seen == [32, ("train", 2)]
    assert estimator.evaluate(tensors)["global_step"] == 8  # a tuple is one batch for evaluation


# --- evaluation, prediction, export ------------------------------------------------------------------


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


def test_export_signatures_and_parsing_receiver(tmp_path):
    def model_fn(features, labels, mode):
        logits = keras.layers.Dense(2, name="head")(features["x"])
        outputs = {"serving_default": est.export.ClassificationOutput(scores=tf.nn.softmax(logits)),
                   "raw": est.export.PredictOutput(logits)}
        if mode == est.ModeKeys.PREDICT:
            return est.EstimatorSpec(mode, predictions=logits, export_outputs=outputs)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return est.EstimatorSpec(mode, loss=loss, optimizer="sgd")

    x, y = _data()
    estimator = _estimator(tmp_path, model_fn)
    estimator.train(lambda: tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(32).repeat(), steps=3)
    receiver = est.export.build_parsing_serving_input_receiver_fn(
        {"x": tf.io.FixedLenFeature([4], tf.float32)})
    export_dir = estimator.export_saved_model(str(tmp_path / "export"), receiver,
                                              assets_extra={"vocab/notes.txt": __file__})
    assert Path(export_dir).parent == tmp_path / "export" and Path(export_dir).name.isdigit()
    assert (Path(export_dir) / "assets.extra" / "vocab" / "notes.txt").exists()
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=list(x[0])))})).SerializeToString()
    serving = tf.saved_model.load(export_dir)
    assert serving.signatures["serving_default"](examples=tf.constant([example]))["scores"].shape == (1, 2)
    assert serving.signatures["raw"](examples=tf.constant([example]))["output"].shape == (1, 2)
    raw = est.export.build_raw_serving_input_receiver_fn({"x": tf.TensorSpec([None, 4], tf.float32)})
    served = tf.saved_model.load(estimator.export_saved_model(str(tmp_path / "export"), raw))
    np.testing.assert_allclose(served.serve({"x": tf.constant(x[:1])})["scores"].numpy().sum(), 1.0, rtol=1e-5)


# --- hooks -------------------------------------------------------------------------------------------


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


# --- train_and_evaluate by role ----------------------------------------------------------------------


def test_local_train_and_evaluate_with_exporters(tmp_path):
    estimator = _estimator(tmp_path, config=_config(save_checkpoints_steps=10))
    exporters = [est.LatestExporter("latest", _receiver, exports_to_keep=1),
                 est.BestExporter(serving_input_receiver_fn=_receiver),
                 est.FinalExporter("final", _receiver)]
    result, exports = est.train_and_evaluate(
        estimator, est.TrainSpec(_input_fn(), max_steps=30),
        est.EvalSpec(_input_fn(repeat=False), steps=None, throttle_secs=0, exporters=exporters))
    assert result["global_step"] == 30
    exported = {Path(p).parent.name for p in exports}
    assert "latest" in exported and "final" in exported
    assert len(list((tmp_path / "export" / "latest").iterdir())) == 1  # exports_to_keep=1
    assert len(list((tmp_path / "export" / "final").iterdir())) == 1
    assert list((tmp_path / "export" / "best_exporter").iterdir())
    eval_steps = {int(p.name) for p in (tmp_path / "export" / "best_exporter").iterdir()}
    assert len(eval_steps) >= 1


def test_evaluator_task_evaluates_checkpoints_until_max_steps(tmp_path, monkeypatch):
    _estimator(tmp_path, config=_config(save_checkpoints_steps=10)).train(_input_fn(), max_steps=30)
    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=["localhost:1"], task_type="evaluator",
                                                           task_id=0))
    result, exports = est.train_and_evaluate(
        _estimator(tmp_path), est.TrainSpec(_input_fn(), max_steps=30),
        est.EvalSpec(_input_fn(repeat=False), steps=None, start_delay_secs=0, throttle_secs=0,
                     exporters=[est.FinalExporter("final", _receiver)]))
    assert result["global_step"] == 30 and result["accuracy"] > 0.7
    (export_dir,) = exports
    assert Path(export_dir).parent == tmp_path / "export" / "final"
    assert _summary_steps(tmp_path / "eval") == [30]


def test_roles_from_tf_config(monkeypatch, tmp_path):
    workers = ["localhost:12345", "localhost:23456"]
    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=workers, task_type="worker", task_id=1))
    config = est.RunConfig()
    assert (config.task_type, config.task_id, config.is_chief) == ("worker", 1, False)
    assert config.num_worker_replicas == 2 and config.num_ps_replicas == 0
    assert config.cluster_spec.as_dict() == {"worker": workers}
    assert config.global_id_in_cluster == 1 and config.master == "grpc://localhost:23456"
    with pytest.raises(ValueError, match="train_distribute is a single-worker"):
        one_worker = tfdist.get_strategy("default", cluster=cluster.ClusterInfo())
        est.Estimator(_model_fn(), str(tmp_path), est.RunConfig(
            train_distribute=one_worker)).train(_input_fn(), steps=1)

    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=workers, task_type="evaluator", task_id=0))
    evaluator = _estimator(tmp_path)
    assert evaluator.config.task_type == "evaluator" and not evaluator.config.is_chief
    with pytest.raises(ValueError, match="evaluator task, which only evaluates"):
        evaluator.train(_input_fn(), steps=1)

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["localhost:1"], "ps": ["localhost:2"]},
                                                "task": {"type": "ps", "index": 0}}))
    with pytest.raises(ValueError, match="no parameter-server training"):
        est.train_and_evaluate(_estimator(tmp_path), est.TrainSpec(_input_fn()), est.EvalSpec(_input_fn()))

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "master"}}')
    with pytest.raises(cluster.ClusterConfigError, match="master"):
        est.RunConfig()


def test_run_config_arguments():
    config = est.RunConfig(save_checkpoints_steps=100)
    assert config.save_checkpoints_secs is None
    assert est.RunConfig().save_checkpoints_secs == 600  # tf.estimator's default
    assert est.RunConfig(save_checkpoints_steps=None, save_checkpoints_secs=None).save_checkpoints_secs is None
    replaced = config.replace(save_checkpoints_secs=30, model_dir="/tmp/x")
    assert (replaced.save_checkpoints_steps, replaced.save_checkpoints_secs, replaced.model_dir) == (None, 30, "/tmp/x")
    assert config.save_checkpoints_steps == 100  # unchanged
    with pytest.raises(ValueError, match="Both checkpoint cadences are set. Received: save_checkpoints_steps=100, save_checkpoints_secs=60"):
        est.RunConfig(save_checkpoints_steps=100, save_checkpoints_secs=60)
    with pytest.raises(ValueError, match="session_config=...\\) is not supported: TF2 has no sessions"):
        est.RunConfig(session_config=object())
    with pytest.raises(TypeError, match="unexpected argument `save_steps`"):
        est.RunConfig(save_steps=3)
    with pytest.raises(ValueError, match="cannot change `session_config`"):
        config.replace(session_config=None)
    with pytest.raises(ValueError, match="Received: keep_checkpoint_max=0"):
        est.RunConfig(keep_checkpoint_max=0)
    with pytest.raises(TypeError, match="Pass a tf.distribute.Strategy"):
        est.RunConfig(train_distribute="mirrored")


# --- errors ------------------------------------------------------------------------------------------


def test_model_fn_without_loss_or_optimizer_in_train_mode(tmp_path):
    with pytest.raises(ValueError, match="in TRAIN mode returned no `loss`"):
        _estimator(tmp_path / "a", _model_fn(loss=None)).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="returned no `optimizer`. tf.estimator's train_op becomes"):
        _estimator(tmp_path / "b", _model_fn(optimizer=None)).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="loss of shape \\(32,\\); it must be a scalar"):
        _estimator(tmp_path / "c", _model_fn(loss=tf.zeros([32]) + 1.0)).train(_input_fn(), steps=1)


def test_estimator_spec_rejects_tf1_fields():
    with pytest.raises(ValueError, match="train_op=...\\) is not supported.*optimizer=keras.optimizers.SGD"):
        est.EstimatorSpec(est.ModeKeys.TRAIN, loss=1.0, train_op=object())
    with pytest.raises(ValueError, match="scaffold"):
        est.EstimatorSpec(scaffold=object())
    with pytest.raises(TypeError, match="eval_metric_ops\\['acc'\\] must be a keras.metrics.Metric"):
        est.EstimatorSpec(eval_metric_ops={"acc": (1.0, 2.0)})
    with pytest.raises(ValueError, match="Received: mode='training'"):
        est.EstimatorSpec("training")


def test_input_fn_with_the_wrong_structure(tmp_path):
    estimator = _estimator(tmp_path)
    x, y = _data()
    triples = lambda: tf.data.Dataset.from_tensor_slices((x, y, y)).batch(8)  # noqa: E731
    with pytest.raises(ValueError, match="dataset whose elements are 3-tuples"):
        estimator.train(triples, steps=1)
    with pytest.raises(TypeError, match="returned str; return a tf.data.Dataset"):
        estimator.train(lambda: "data.csv", steps=1)
    with pytest.raises(ValueError, match="returned a list of 3 items"):
        estimator.train(lambda: [x, y, y], steps=1)
    with pytest.raises(TypeError, match="takes arguments tfdist cannot fill: \\['batch_size'\\]"):
        estimator.train(lambda batch_size: None, steps=1)


_GRAPH_MODE_PROGRAM = """
import json, sys
import tensorflow as tf
import tfdist.estimator as est
from tests.test_estimator import _input_fn, _model_fn

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
                            capture_output=True, text=True, timeout=120,
                            env=multiworker.subprocess_env(), cwd=multiworker.REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(errors) == {"Estimator", "train", "evaluate", "predict", "train_and_evaluate",
                           "model_to_estimator"}
    for message in errors.values():
        assert message.startswith("RuntimeError: ") and "\n" not in message
        assert "in graph mode" in message
        assert "Remove that call" in message and "disable_eager_execution()" in message


def test_model_fn_signature_errors(tmp_path):
    with pytest.raises(ValueError, match="must take a `features` argument"):
        est.Estimator(lambda x, labels, mode: None, str(tmp_path))
    with pytest.raises(ValueError, match="cannot fill: \\['hparams'\\]"):
        est.Estimator(lambda features, hparams: None, str(tmp_path))
    with pytest.raises(ValueError, match="has no `params` argument"):
        est.Estimator(lambda features, labels, mode: None, str(tmp_path), params={"lr": 1})
    with pytest.raises(TypeError, match="Pass a function model_fn"):
        est.Estimator("model_fn", str(tmp_path))
    with pytest.raises(ValueError, match="set both in the Estimator"):
        est.Estimator(_model_fn(), str(tmp_path), est.RunConfig(model_dir=str(tmp_path / "other")))
    no_labels = lambda features, mode: _model_fn()(features, None, mode)  # noqa: E731
    with pytest.raises(ValueError, match="input_fn returns labels but model_fn"):
        _estimator(tmp_path, no_labels).train(_input_fn(), steps=1)


def test_model_fn_variable_errors(tmp_path):
    def twins(features, labels, mode):
        logits = keras.layers.Dense(2, name="head")(features) + keras.layers.Dense(2, name="head")(features)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return est.EstimatorSpec(loss=loss, optimizer="sgd")

    with pytest.raises(ValueError, match="two variables with the path 'head/kernel' in one call"):
        _estimator(tmp_path / "a", twins).train(_input_fn(), steps=1)

    outside = keras.Sequential([keras.layers.Dense(2)])
    outside.build((None, 4))  # its variables exist before model_fn runs

    def no_own_variables(features, labels, mode):
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, outside(features), from_logits=True))
        return est.EstimatorSpec(loss=loss, optimizer="sgd")

    with pytest.raises(ValueError, match="does not depend on any trainable variable created inside model_fn"):
        _estimator(tmp_path / "b", no_own_variables).train(_input_fn(), steps=1)


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


def test_checkpoint_and_export_errors(tmp_path):
    estimator = _estimator(tmp_path)
    with pytest.raises(ValueError, match="There is no checkpoint in model_dir"):
        estimator.get_variable_names()
    with pytest.raises(ValueError, match="Cannot export: there is no checkpoint"):
        estimator.export_saved_model(str(tmp_path / "export"), _receiver)
    estimator.train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="has no variable 'sequential/dense/kernal'. Did you mean 'sequential/dense/kernel'"):
        estimator.get_variable_value("sequential/dense/kernal")
    with pytest.raises(ValueError, match="as_text=True\\) is not supported"):
        estimator.export_saved_model(str(tmp_path / "export"), _receiver, as_text=True)
    with pytest.raises(TypeError, match="must return a tfdist.estimator.export.ServingInputReceiver"):
        estimator.export_saved_model(str(tmp_path / "export"), lambda: {"x": 1})


def test_warm_start_errors(tmp_path):
    source = _estimator(tmp_path / "source")
    source.train(_input_fn(), steps=1)
    renamed = est.WarmStartSettings(str(tmp_path / "source"),
                                    var_name_to_prev_var_name={"sequential/dense/kernel": "old/kernel"})
    with pytest.raises(ValueError, match="it has no variable\\(s\\) \\['old/kernel'\\]"):
        _estimator(tmp_path / "a", warm_start_from=renamed).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="directory without checkpoints"):
        _estimator(tmp_path / "b", warm_start_from=str(tmp_path / "a")).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="var_name_to_vocab_info=...\\) is not supported"):
        est.WarmStartSettings("x", var_name_to_vocab_info={"v": object()})
    with pytest.raises(TypeError, match="warm_start_from"):
        _estimator(tmp_path / "c", warm_start_from=3)


def test_spec_and_hook_argument_errors():
    with pytest.raises(ValueError, match="exactly one of num_steps and last_step"):
        est.StopAtStepHook()
    with pytest.raises(ValueError, match="exactly one of every_n_iter and every_n_secs"):
        est.LoggingTensorHook(["loss"])
    with pytest.raises(ValueError, match="given tensors \\(acc\\) but was not returned by model_fn"):
        est.LoggingTensorHook({"acc": tf.constant(1.0)}, every_n_iter=1).begin()
    with pytest.raises(ValueError, match="Received: max_steps=-1"):
        est.TrainSpec(_input_fn(), max_steps=-1)
    with pytest.raises(TypeError, match="Invalid value for argument `input_fn` of EvalSpec"):
        est.EvalSpec(input_fn=None)
    twice = [est.FinalExporter("same", _receiver), est.LatestExporter("same", _receiver)]
    with pytest.raises(ValueError, match="Two exporters are named 'same'"):
        est.EvalSpec(_input_fn(), exporters=twice)
    with pytest.raises(TypeError, match="takes tfdist.estimator Exporters"):
        est.EvalSpec(_input_fn(), exporters=["final"])


def test_keras_naming_touch_points():
    """Canary for the private Keras state keras_names relies on (see its docstring)."""
    from keras.src.backend.common import global_state

    from tfdist.compat import keras_names

    keras.layers.Dense(1)
    with keras_names.fresh_names():
        assert keras.layers.Dense(1).name == "dense"
        with keras.name_scope("outer"):
            assert keras_names.variable_path("kernel:0") == "outer/kernel"
    assert global_state.get_global_attribute("object_name_uids")["dense"] >= 1
