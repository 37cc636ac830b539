"""The compiled loops: many steps of `model_fn` per `tf.function` call, in replica context.

Estimator-specific, kept apart from route 1's `Trainer`: here each step *calls `model_fn`*
(whose Keras objects are rebuilt on every trace and share the stored variables), the loss is the
user's per-replica mean, and hook tensors ride along as loop outputs so hooks can run between
calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfdist import checks
from tfdist import gradients as gradients_lib
from tfdist.estimator import hooks as hooks_lib
from tfdist.estimator import inputs as inputs_lib
from tfdist.estimator.spec import ModeKeys

# Evaluation "until the input ends" runs the loop with this many steps at most.
UNTIL_END = checks.UNTIL_END
LOSS = "loss"


def batch_size(features: Any) -> tf.Tensor:
    """Examples in this replica's batch (1 when the features have no batch dimension)."""
    for tensor in tf.nest.flatten(features, expand_composites=False):
        if isinstance(tensor, tf.Tensor) and tensor.shape.rank:
            return tf.shape(tensor, out_type=tf.int64)[0]
        if isinstance(tensor, tf.SparseTensor):
            return tensor.dense_shape[0]
    return tf.constant(1, tf.int64)


def hook_fetches(spec: Any, is_chief: bool) -> dict[str, Any]:
    """Run-value name -> tensor for the `LoggingTensorHook`s a TRAIN spec returned."""
    hooks = list(spec.training_hooks) + (list(spec.training_chief_hooks) if is_chief else [])
    fetches = {}
    for i, hook in enumerate(hooks):
        if isinstance(hook, hooks_lib.LoggingTensorHook):
            for name, tensor in hook.tensor_values().items():
                fetches[f"training_hooks/{i}/{name}"] = tensor
    return fetches


def _free(outputs: dict[str, Any]) -> dict[str, tf.TensorShape]:
    """Shape invariants that let hook tensors change shape between steps."""
    return {key: tf.TensorShape(None) for key in outputs}


def _local_outputs(strategy: tf.distribute.Strategy, per_replica: dict[str, Any]) -> dict[str, Any]:
    """This worker's view: the mean loss over local replicas, other values from the first."""
    out = {}
    for key, value in per_replica.items():
        local = strategy.experimental_local_results(value)
        out[key] = tf.add_n(list(local)) / len(local) if key == LOSS else local[0]
    return out


def make_train_loop(
    *,
    strategy: tf.distribute.Strategy,
    call_model_fn: Callable[..., Any],
    optimizers: list[tuple[keras.optimizers.Optimizer, list[tf.Variable]]],
    global_step: tf.Variable,
    has_labels: Callable[[], bool],
    fetch_keys: list[str],
    is_chief: bool,
    finite: bool,
    count_steps: bool = True,
    accumulation_steps: int = 1,
) -> Callable[..., Any]:
    """`loop(iterator, num_steps, initial_outputs) -> (steps_run, outputs)` as a `tf.function`.

    Each step calls `model_fn` in TRAIN mode on every replica, differentiates `loss / replicas`
    (so the all-reduced sum of gradients is that of the global mean), applies the gradients with
    the optimizer and increments the global step (unless `count_steps` is false: under
    ParameterServerStrategy the coordinator counts the steps of the functions that finished).
    With `finite` data the loop stops early when the input ends (all workers agree), and
    `steps_run` says how far it got. With `accumulation_steps` N > 1 each replica's batch is cut
    into N micro-batches, `model_fn` runs on each (differentiating `loss / (replicas * N)`), and
    the summed gradients are applied once: one all-reduce per step; the step's loss is the
    micro-batches' mean, hook tensors the last's.
    """
    replicas = strategy.num_replicas_in_sync
    optimizer = optimizers[0][0]  # the one that scales the loss (several never do)
    trainable = [v for _, variables in optimizers for v in variables]

    def micro_step(element: Any) -> tuple[Any, list[Any]]:
        features, labels = inputs_lib.split(element, has_labels())
        with tf.GradientTape() as tape:
            spec = call_model_fn(features, labels, ModeKeys.TRAIN)
            loss = tf.convert_to_tensor(spec.loss)
            # Keras's own train_step convention: the optimizer may scale the loss (mixed
            # precision, loss_scale_factor) and unscales the gradients when applying them.
            scaled = optimizer.scale_loss(
                loss / tf.cast(replicas * accumulation_steps, loss.dtype))
        fetches = hook_fetches(spec, is_chief)
        if sorted(fetches) != sorted(fetch_keys):
            raise ValueError(
                "model_fn returned different LoggingTensorHooks in TRAIN mode than on its first "
                f"call ({sorted(fetches)} vs {sorted(fetch_keys)}). Return the same hooks on "
                "every call."
            )
        outputs = {k: tf.convert_to_tensor(v) for k, v in fetches.items()}
        return (tf.cast(loss, tf.float32), outputs), tape.gradient(scaled, trainable)

    def sum_loss_keep_last(previous: Any, new: Any) -> Any:
        return previous[0] + new[0], new[1]

    def replica_step(element: Any) -> dict[str, Any]:
        (loss, outputs), grads = gradients_lib.accumulate(
            micro_step, element, accumulation_steps, combine=sum_loss_keep_last)
        start = 0
        for part, variables in optimizers:
            pairs = zip(grads[start:start + len(variables)], variables)
            part.apply_gradients([(g, v) for g, v in pairs if g is not None])
            start += len(variables)
        if count_steps:
            global_step.assign_add(1)
        return {LOSS: loss / accumulation_steps, **outputs}

    def run(element: Any) -> dict[str, Any]:
        return _local_outputs(strategy, strategy.run(replica_step, args=(element,)))

    def finite_loop(iterator, num_steps, outputs):
        steps = tf.constant(0, tf.int64)
        for _ in tf.range(num_steps):
            tf.autograph.experimental.set_loop_options(shape_invariants=[(outputs, _free(outputs))])
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            outputs = run(optional.get_value())
            steps += 1
        return steps, outputs

    def infinite_loop(iterator, num_steps, outputs):
        steps = tf.constant(0, tf.int64)
        for _ in tf.range(num_steps):
            tf.autograph.experimental.set_loop_options(shape_invariants=[(outputs, _free(outputs))])
            outputs = run(next(iterator))
            steps += 1
        return steps, outputs

    loop = finite_loop if finite else infinite_loop
    return tf.function(loop)


def make_eval_loop(
    *,
    strategy: tf.distribute.Strategy,
    call_model_fn: Callable[..., Any],
    loss_metric: keras.metrics.Mean,
    has_labels: Callable[[], bool],
) -> Callable[..., Any]:
    """`loop(iterator, num_steps)` as a `tf.function`: evaluation until the input ends or `num_steps`.

    The loss is averaged over examples (each replica's batch loss weighted by its batch size,
    so a short or empty final batch counts right); `model_fn` updates its own metrics.
    """

    def replica_step(element: Any) -> None:
        features, labels = inputs_lib.split(element, has_labels())
        spec = call_model_fn(features, labels, ModeKeys.EVAL)
        examples = batch_size(features)
        loss = tf.cast(spec.loss, tf.float32)
        loss_metric.update_state(
            tf.where(examples > 0, loss, 0.0), sample_weight=tf.cast(examples, tf.float32)
        )

    def loop(iterator: Any, num_steps: tf.Tensor) -> tf.Tensor:
        steps = tf.constant(0, tf.int64)
        for _ in tf.range(num_steps):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            strategy.run(replica_step, args=(optional.get_value(),))
            steps += 1
        return steps

    return tf.function(loop)


def initial_outputs(fetch_dtypes: dict[str, tf.DType]) -> dict[str, tf.Tensor]:
    """Placeholder loop outputs of the right dtypes (shapes are free)."""
    out = {LOSS: tf.constant(float("nan"), tf.float32)}
    for key, dtype in fetch_dtypes.items():
        out[key] = tf.constant("", tf.string) if dtype == tf.string else tf.zeros([], dtype)
    return out
