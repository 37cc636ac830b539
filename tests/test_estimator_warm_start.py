"""Tests for tfdist.estimator.warm_start: warm starts from runs, exports and TF1 checkpoints, and
their errors."""

import numpy as np
import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests.estimator_helpers import _estimator, _input_fn, _model_fn, _receiver


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

