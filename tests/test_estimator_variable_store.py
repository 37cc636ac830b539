"""Tests for tfdist.estimator.variable_store: variables created once across modes and calls, the
variable errors of model_fn, and the canary of the Keras naming state it relies on."""

import keras
import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests.estimator_helpers import _estimator, _input_fn, _model_fn


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

