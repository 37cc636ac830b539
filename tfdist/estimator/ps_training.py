"""The Estimator under `ParameterServerStrategy`: per-worker input and scheduled loop calls.

A `chief` + `worker` + `ps` job (FINDINGS §9): the chief is the coordinator and the only task
that runs `Estimator.train`; worker and ps tasks serve inside `tfdist.get_strategy` (the same
program on every task). What differs from the mirrored path is only the inner loop, so the
shared outer loop (`tfdist.outer_loop.OuterLoop`: checkpoints from the chief, cadence, hooks,
NaN policy, preemption) drives it unchanged:

- **Input**: `input_fn` is called on each worker (`create_per_worker_dataset`); one taking
  `input_context` gets `num_input_pipelines` = the number of workers and `input_pipeline_id`
  = the worker's index, so it can shard itself. Its dataset must repeat: the coordinator
  schedules steps, not epochs, so `max_steps` (or `steps`) says when training ends.
- **Steps**: a loop call of `num_steps` schedules functions of up to
  `RunConfig.steps_per_function` steps of the compiled `model_fn` loop on the workers and joins
  them, so checkpoints, hooks and saving listeners see a quiet cluster.
- **Global step**: counted on the coordinator from the functions that finished (a function
  retried after a worker failure counts once); Keras variables update atomically inside the
  scheduled functions (`tfdist.compat.keras_atomic_updates`).
"""

from __future__ import annotations

import collections
import time
from typing import Any

import tensorflow as tf

from tfdist import parameter_server
from tfdist.compat import keras_atomic_updates
from tfdist.compat import strategy_workers
from tfdist.estimator import inputs as inputs_lib
from tfdist.estimator import loops
from tfdist.estimator.train_target import EstimatorTrainTarget


def check_steps(steps: int | None, max_steps: int | None) -> None:
    """Raises `ValueError` unless `steps` or `max_steps` says when training ends."""
    if steps is None and max_steps is None:
        raise ValueError(
            "Under ParameterServerStrategy training needs `max_steps` or `steps` (the input "
            "repeats; the chief schedules steps). Received: steps=None, max_steps=None. Pass "
            "TrainSpec(max_steps=...) or train(max_steps=...)."
        )


def per_worker_input(source: inputs_lib.InputFn, strategy: tf.distribute.Strategy,
                     mode: str) -> tuple[Any, inputs_lib.InputInfo]:
    """The per-worker dataset of `source`, and what one pipeline holds (described on the chief).

    Raises:
        ValueError: The dataset does not repeat.
    """
    num_workers = strategy_workers.num_workers(strategy)

    def context(index: Any) -> tf.distribute.InputContext | None:
        if not source.takes_input_context:
            return None
        return tf.distribute.InputContext(num_input_pipelines=num_workers,
                                          input_pipeline_id=index, num_replicas_in_sync=1)

    _, info = source.dataset(mode, context(0))  # built lazily, never iterated here
    if info.finite:
        raise ValueError(
            "Under ParameterServerStrategy the training input_fn's dataset must repeat (the "
            "chief schedules steps on the workers, not epochs). Received: a finite dataset. "
            "Add .repeat() and end training with TrainSpec(max_steps=...)."
        )

    def dataset_fn() -> tf.data.Dataset:
        return source.call(mode, context(
            tf.distribute.coordinator.experimental_get_current_worker_index()))

    coordinator = parameter_server.coordinator(strategy)
    return coordinator.create_per_worker_dataset(dataset_fn), info


def scheduled_loop(loop: Any) -> Any:
    """The compiled train loop as a function to schedule: also returns the worker's index."""

    def scheduled(iterator: Any, num_steps: tf.Tensor, outputs: dict[str, tf.Tensor]) -> Any:
        steps, outputs = loop(iterator, num_steps, outputs)
        return steps, outputs, tf.distribute.coordinator.experimental_get_current_worker_index()

    return tf.function(scheduled)


class ScheduledTrainTarget(EstimatorTrainTarget):
    """Loop calls as functions scheduled on the workers; the global step counted here.

    Args:
        global_step: The Estimator's global step variable (on a ps task).
        strategy: The `ParameterServerStrategy` (with its coordinator).
        steps_per_function: Most steps per scheduled function.

    Attributes:
        steps_by_worker: Steps each worker ran, by worker index.
    """

    def __init__(self, global_step: tf.Variable, strategy: tf.distribute.Strategy,
                 steps_per_function: int) -> None:
        super().__init__(global_step)
        self._coordinator = parameter_server.coordinator(strategy)
        self._steps_per_function = steps_per_function
        self.steps_by_worker: collections.Counter[int] = collections.Counter()

    def train(self, num_steps: int) -> dict[str, float]:
        started = time.monotonic()
        per = self._steps_per_function
        sizes = [per] * (num_steps // per) + ([num_steps % per] if num_steps % per else [])
        # Traced (on the first schedule) with atomic Keras updates: workers run at once.
        with keras_atomic_updates.atomic():
            scheduled = [self._coordinator.schedule(
                self._loop, args=(self._iterator, tf.constant(size, tf.int64), self._initial))
                for size in sizes]
        self._coordinator.join()  # raises if a function failed (e.g. a ps task is gone)
        ran, losses, values = 0, [], {}
        for remote in scheduled:
            steps, outputs, worker = remote.fetch()
            ran += int(steps)
            self.steps_by_worker[int(worker)] += int(steps)
            losses.append(float(outputs[loops.LOSS]))
            values = dict(outputs)  # the hooks see the last function's tensors
        self.global_step.assign_add(ran)
        elapsed = time.monotonic() - started
        values[loops.LOSS] = sum(losses) / len(losses)
        self.run_values = values
        return {loops.LOSS: values[loops.LOSS],
                "global_step/sec": ran / elapsed if elapsed > 0 else 0.0}
