"""Tests for tfdist.estimator.spec (and the hooks' argument checks): TF1-only fields and bad arguments
of EstimatorSpec, TrainSpec, EvalSpec and the hooks."""

import pytest
import tensorflow as tf

import tfdist.estimator as est
from tests.estimator_helpers import _input_fn, _receiver


def test_estimator_spec_rejects_tf1_fields():
    with pytest.raises(ValueError, match="train_op=...\\) is not supported.*optimizer=keras.optimizers.SGD"):
        est.EstimatorSpec(est.ModeKeys.TRAIN, loss=1.0, train_op=object())
    with pytest.raises(ValueError, match="scaffold"):
        est.EstimatorSpec(scaffold=object())
    with pytest.raises(TypeError, match="eval_metric_ops\\['acc'\\] must be a keras.metrics.Metric"):
        est.EstimatorSpec(eval_metric_ops={"acc": (1.0, 2.0)})
    with pytest.raises(ValueError, match="Received: mode='training'"):
        est.EstimatorSpec("training")


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

