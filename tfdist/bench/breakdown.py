"""Where a distributed step's time goes: the local step alone, and the gradient all-reduce alone.

Two `tf.function` loops under the strategy, timed apart, on the workload's model:

- **local step**: forward and backward on this replica's share of the batch, no communication
  (each gradient is summed to a scalar that the loop carries, so nothing is pruned);
- **all-reduce**: `tfdist.gradients.all_reduce_sum` of tensors shaped like the model's
  gradients, once per step, in float32 and in each compression asked for.

Under `MultiWorkerMirroredStrategy` every worker times its own (the local loops do not wait for
each other; the all-reduce loops do, by nature). The report's "where the time goes" column for a
missed target is built from these numbers.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import tensorflow as tf

from tfdist import gradients as gradients_lib
from tfdist.bench import timing
from tfdist.bench.workloads import Workload


def _timed(fn: Any, steps: int, reps: int) -> dict[str, Any]:
    """Median ms per step of `fn(steps)` over `reps` calls, after one warm-up call."""
    fn(tf.constant(steps)).numpy()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn(tf.constant(steps)).numpy()
        samples.append(1000 * (time.perf_counter() - started) / steps)
    return timing.summary(samples)


def measure(strategy: tf.distribute.Strategy, workload: Workload, batch: int, *, steps: int,
            reps: int, compressions: tuple[str, ...] = ("none",)) -> dict[str, Any]:
    """Times the local step and the all-reduce apart (see the module docstring).

    Args:
        strategy: The strategy to run under (its replicas split `batch`).
        workload: The model and data.
        batch: Global batch size.
        steps: Steps per timed call.
        reps: Timed calls of each loop.
        compressions: `tfdist.gradients.COMPRESSIONS` to time the all-reduce in. Defaults to
            float32 only.

    Returns:
        `{"local_step_ms": summary, "all_reduce_ms": {compression: summary}, "gradient_bytes":
        float32 bytes all-reduced per step}`; no all-reduce entry with one replica.
    """
    replicas = strategy.num_replicas_in_sync
    per_replica = batch // replicas
    features = tf.constant(workload.features[:per_replica])
    labels = tf.constant(workload.labels[:per_replica])
    with strategy.scope():
        model = workload.build()
        model(features[:1])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables

    def local() -> tf.Tensor:
        with tf.GradientTape() as tape:
            value = loss(labels, model(features, training=True))
        grads = tape.gradient(value, variables)
        return tf.add_n([tf.reduce_sum(g) for g in grads])

    @tf.function
    def local_loop(n: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0)
        for _ in tf.range(n):  # every replica's result is used: none of them is pruned
            total += tf.add_n(strategy.experimental_local_results(strategy.run(local)))
        return total

    result: dict[str, Any] = {
        "local_step_ms": _timed(local_loop, steps, reps),
        "per_replica_batch": per_replica, "replicas": replicas,
        "gradient_bytes": sum(4 * v.shape.num_elements() for v in variables),
        "all_reduce_ms": {},
    }
    if replicas == 1:
        return result
    shapes = [v.shape for v in variables]
    for compression in compressions:
        options = gradients_lib.GradientOptions(compression=compression)

        def reduce_once(i: tf.Tensor, options: gradients_lib.GradientOptions = options) -> tf.Tensor:
            # Depends on the step, so no iteration can be folded or hoisted.
            grads = [tf.fill(shape, tf.cast(i, tf.float32)) for shape in shapes]
            summed = gradients_lib.all_reduce_sum(grads, options)
            return tf.add_n([s[(0,) * len(s.shape)] for s in summed])

        @tf.function
        def reduce_loop(n: tf.Tensor, reduce_once: Any = reduce_once) -> tf.Tensor:
            total = tf.constant(0.0)
            for i in tf.range(n):
                total += tf.add_n(strategy.experimental_local_results(
                    strategy.run(reduce_once, args=(i,))))
            return total

        result["all_reduce_ms"][compression] = _timed(reduce_loop, steps, reps)
    return result
