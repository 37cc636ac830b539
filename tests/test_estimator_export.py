"""Tests for tfdist.estimator.export: export signatures, receivers, and checkpoint/export errors."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests.estimator_helpers import _data, _estimator, _input_fn, _receiver


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

