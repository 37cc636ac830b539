"""Private Keras touch point: the loss and metrics objects `Model.compile` makes, without compiling.

`tfdist.estimator.model_to_estimator` computes a Keras model's compiled loss and metrics inside the
Estimator's `model_fn`, where every variable created belongs to the Estimator. `Model.compile`
cannot be used there: besides the loss and metrics it creates a loss-tracking `Mean` metric
(variables the Estimator would checkpoint, with a path that may clash with a layer's), and
`compile_from_config` also builds the optimizer. Keras 3 has no public API for the two objects
alone — `CompileLoss` (resolves loss strings, several outputs, `loss_weights`) and
`CompileMetrics` (resolves `"accuracy"` by the labels' shape, per-output metrics, weighted
metrics) in `keras.src.trainers.compile_utils`. There is no upstream issue: this is a missing
public API, not a bug. Checked against Keras 3.15; the canary
`tests/test_compat.py::test_canary_keras_compile_utils` fails if Keras changes them.
"""

from __future__ import annotations

from typing import Any

from keras.src.trainers import compile_utils


def compiled_loss(loss: Any, loss_weights: Any, output_names: list[str] | None) -> Any:
    """What `compile(loss=..., loss_weights=...)` computes: call it as `fn(y_true, y_pred)`."""
    return compile_utils.CompileLoss(loss, loss_weights, output_names=output_names)


def compiled_metrics(metrics: Any, weighted_metrics: Any, output_names: list[str] | None) -> Any:
    """What `compile(metrics=..., weighted_metrics=...)` updates: a `keras.metrics.Metric`
    whose `result()` is a dict of metric name -> value; `None` without metrics."""
    if not metrics and not weighted_metrics:
        return None
    return compile_utils.CompileMetrics(metrics, weighted_metrics, output_names=output_names)
