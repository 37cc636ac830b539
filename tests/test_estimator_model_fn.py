"""Tests for tfdist.estimator.model_fn: the dtype policy model_fn builds under, what it must return
in TRAIN mode, and signature errors."""

import keras
import pytest
import tensorflow as tf

import tfdist
import tfdist.estimator as est
from tests.estimator_helpers import _config, _estimator, _input_fn, _model_fn


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


def test_model_fn_without_loss_or_optimizer_in_train_mode(tmp_path):
    with pytest.raises(ValueError, match="in TRAIN mode returned no `loss`"):
        _estimator(tmp_path / "a", _model_fn(loss=None)).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="returned no `optimizer`. tf.estimator's train_op becomes"):
        _estimator(tmp_path / "b", _model_fn(optimizer=None)).train(_input_fn(), steps=1)
    with pytest.raises(ValueError, match="loss of shape \\(32,\\); it must be a scalar"):
        _estimator(tmp_path / "c", _model_fn(loss=tf.zeros([32]) + 1.0)).train(_input_fn(), steps=1)


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

