"""Shared by the tfdist.estimator tests: a tiny model_fn and data, estimator factories, a recording
hook, and checks of the tutorial program's exports and summaries."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import tfdist.estimator as est
from input_pipelines import digits as digits_data

JOB = str(Path(__file__).parent / "workers" / "estimator_job.py")


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


def _model_fn(models=None, lr=0.3, activation="relu", **spec_overrides):
    """model_fn building a Keras model inside; `models` records every model it builds.

    `activation` is the hidden layer's (`None`: a linear model, through which NaN inputs always
    reach the loss).
    """

    def model_fn(features, labels, mode):
        model = keras.Sequential([keras.layers.Dense(8, activation=activation), keras.layers.Dense(2)])
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


def _check_export(export_dir):
    serving = tf.saved_model.load(export_dir)
    raw_images, target = digits_data.load_raw()
    images = (raw_images[:20, ..., None] / 16).astype(np.float32)
    outputs = serving.signatures["serving_default"](images=tf.constant(images))
    assert outputs["logits"].shape == (20, 10)
    accuracy = np.mean(outputs["classes"].numpy() == target[:20])
    assert accuracy > 0.6, accuracy


def _summary_steps(directory):
    steps = set()
    for path in directory.glob("events.*"):
        steps.update(e.step for e in tf.compat.v1.train.summary_iterator(str(path)) if e.summary.value)
    return sorted(steps)

