"""Route 3 adapter: train with `tfdist.estimator` (`model_fn`, `train_and_evaluate`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfdist import checkpoint as checkpoint_lib
from tfdist import data as data_lib
from tfdist import estimator as estimator_lib
from tfdist.runner import settings as settings_lib

ModeKeys = estimator_lib.ModeKeys


class _LastLoss(estimator_lib.SessionRunHook):
    """Keeps the loss of the last training loop call (the Estimator reports no train metrics)."""

    def __init__(self) -> None:
        self.loss: float | None = None

    def before_run(self, run_context: Any) -> Any:
        return estimator_lib.SessionRunArgs("loss")

    def after_run(self, run_context: Any, run_values: Any) -> None:
        self.loss = float(run_values.results)


def make_model_fn(build_model: Callable[[], keras.Model], learning_rate: float) -> Callable[..., Any]:
    """A `model_fn` around a Keras model builder: mean cross-entropy on logits, Adam, accuracy.

    The Estimator runs `model_fn` under the global dtype policy in force when it is made (e.g.
    `mixed_bfloat16`); under `mixed_float16` the optimizer is a `LossScaleOptimizer`
    (tfdist's Estimator scales the loss with it, as Keras's `fit` does).
    """

    def model_fn(features: Any, labels: Any, mode: str) -> estimator_lib.EstimatorSpec:
        model = build_model()
        logits = model(features, training=mode == ModeKeys.TRAIN)
        if mode == ModeKeys.PREDICT:
            return estimator_lib.EstimatorSpec(
                mode, predictions={"logits": logits, "classes": tf.argmax(logits, axis=-1)})
        per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        loss = tf.reduce_mean(per_example(labels, logits))
        if model.losses:
            loss += tf.add_n(model.losses)
        if mode == ModeKeys.EVAL:
            accuracy = settings_lib.accuracy()
            accuracy.update_state(labels, logits)
            return estimator_lib.EstimatorSpec(mode, loss=loss, eval_metric_ops={"accuracy": accuracy})
        return estimator_lib.EstimatorSpec(
            mode, loss=loss, optimizer=settings_lib.optimizer(learning_rate))

    return model_fn


def _serving_receiver_fn(spec: data_lib.DataSpec) -> Callable[[], Any]:
    features = tf.nest.flatten(data_lib.make_dataset(spec).element_spec)[0]
    return estimator_lib.export.build_raw_serving_input_receiver_fn(
        tf.TensorSpec([None, *features.shape[1:]], features.dtype))


def run(
    strategy: tf.distribute.Strategy,
    build_model: Callable[[], keras.Model],
    train_spec: data_lib.DataSpec,
    eval_spec: data_lib.DataSpec,
    settings: settings_lib.RouteSettings,
) -> settings_lib.RouteResult:
    """Runs `train_and_evaluate` for this task's role, then the final evaluation and export.

    Local: trains, evaluating after every checkpoint (every `eval_every` steps). Chief and
    workers: train together, then evaluate together. Evaluator: evaluates each new checkpoint
    until the last one (its final evaluation is of the final checkpoint).

    Returns:
        The final evaluation (`loss`, `accuracy`) and the last training loss.
    """
    cluster = settings.cluster
    config = estimator_lib.RunConfig(
        model_dir=settings.model_dir, tf_random_seed=settings.seed,
        save_checkpoints_steps=settings.eval_every, save_summary_steps=settings.steps_per_loop,
        log_step_count_steps=settings.eval_every if settings.progress else None,
        train_distribute=None if cluster.is_evaluator else strategy,
        steps_per_loop=settings.steps_per_loop, on_nonfinite=settings.on_nonfinite,
        max_nonfinite_restores=settings.max_nonfinite_restores,
        gradients=settings.gradients, accumulation_steps=train_spec.accumulation_steps,
    )
    estimator = estimator_lib.Estimator(
        model_fn=make_model_fn(build_model, settings.learning_rate), config=config)
    train_input_fn, eval_input_fn = data_lib.input_fn(train_spec), data_lib.input_fn(eval_spec)
    last = _LastLoss()
    # The step training starts from: the newest readable checkpoint's (on the chief, unreadable
    # newer ones are moved aside now, with one log line each). An evaluator trains nothing.
    start = (_global_step(estimator) if cluster.is_evaluator
             else _checkpoint_step(checkpoint_lib.newest_restorable(settings.model_dir, cluster)))
    started = time.perf_counter()
    final, _ = estimator_lib.train_and_evaluate(
        estimator,
        estimator_lib.TrainSpec(train_input_fn, max_steps=settings.train_steps, hooks=[last]),
        estimator_lib.EvalSpec(eval_input_fn, steps=None, start_delay_secs=0, throttle_secs=0),
    )
    seconds = time.perf_counter() - started
    if final is None:  # chief and workers of a cluster: evaluate together (a collective run)
        final = estimator.evaluate(eval_input_fn)
    exports = {}
    if cluster.is_chief and not cluster.is_evaluator:
        exports["saved_model"] = estimator.export_saved_model(
            os.path.join(settings.model_dir, "export"), _serving_receiver_fn(eval_spec))
    final = {k: v for k, v in final.items() if k != "global_step"}
    train = {} if last.loss is None else {"loss": last.loss}
    return settings_lib.RouteResult(
        final=settings_lib.floats(final), train=train, start_step=start,
        steps=_global_step(estimator), train_seconds=0.0 if cluster.is_evaluator else seconds,
        exports=exports)


def _checkpoint_step(path: str | None) -> int:
    """The global step of checkpoint `path` (the estimator names them ``ckpt-<step>``)."""
    return int(os.path.basename(path).rsplit("-", 1)[1]) if path else 0


def _global_step(estimator: estimator_lib.Estimator) -> int:
    if estimator.latest_checkpoint() is None:
        return 0
    return int(estimator.get_variable_value("global_step"))
