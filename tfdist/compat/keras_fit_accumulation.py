"""Workaround: Keras 3's `gradient_accumulation_steps` fails under MirroredStrategy in `fit`.

Upstream: Keras 3 accumulates inside `BaseOptimizer._backend_apply_gradients` with an
`ops.cond(is_update_step, <all-reduce and update>, <accumulate>)`; under a strategy with several
replicas, inside `fit`'s `tf.function`, the all-reduce's `merge_call` lands in the cond branch and
fails: "`merge_call` called while defining a new graph or a tf.function ... control flow
statements which contain a synchronization point" (reproduced: SGD(gradient_accumulation_steps=4),
MirroredStrategy over 2 logical CPUs, TF 2.21 / Keras 3.15; upstream tests it only in eager mode,
keras/src/optimizers/optimizer_test.py `test_gradient_accumulation_with_distribute` ... see
FINDINGS §13). Its accumulators are also per-replica sums kept in mirrored variables.

The fix, for a model registered with `configure(model, steps)`: `make_train_function` wraps the
model's `train_step` so that each per-replica batch is cut into `steps` micro-batches, the
(user's or Keras's) `train_step` runs on each in a `tf.while_loop` with `apply_gradients`
recording instead of applying (`keras_gradient_reduction.collect`), and the mean of the recorded
gradients is applied once: one all-reduce and one optimizer step per batch, no cond around it.
"""

from __future__ import annotations

import functools
import weakref
from typing import Any

import keras
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from tfdist import gradients as gradients_lib
from tfdist.compat import keras_gradient_reduction

UPSTREAM = "https://github.com/keras-team/keras/blob/v3.15.0/keras/src/optimizers/base_optimizer.py"
_Trainer = keras_tf_trainer.TensorFlowTrainer
_original_make_train_function = _Trainer.make_train_function

_steps: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def configure(model: keras.Model, steps: int) -> None:
    """Makes `fit` on `model` accumulate `steps` micro-batches per optimizer step (1: off)."""
    if steps == 1:
        _steps.pop(model, None)
    else:
        _steps[model] = steps
    model.train_function = None  # rebuilt on the next fit


def steps_of(model: keras.Model) -> int:
    """The accumulation steps `configure` gave `model` (1 if none)."""
    return _steps.get(model, 1)


def _accumulating(model: Any, train_step: Any, steps: int) -> Any:
    @functools.wraps(train_step)
    def step(data: Any) -> Any:
        optimizer = model.optimizer
        recorded: list[Any] = []

        def micro_step(micro_batch: Any) -> tuple[Any, list[Any]]:
            with keras_gradient_reduction.collect(optimizer) as calls:
                logs = train_step(micro_batch)
            if len(calls) != 1:
                raise ValueError(
                    f"Gradient accumulation needs a train_step that calls "
                    f"optimizer.apply_gradients exactly once; this one called it {len(calls)} "
                    "times. Accumulate in your own train_step, or set accumulation_steps=1.")
            recorded[:] = [v for _, v in calls[0]]
            return logs, [g for g, _ in calls[0]]

        logs, sums = gradients_lib.accumulate(micro_step, data, steps, combine="last")
        # Keras's per-replica loss is the replica's batch mean / replicas: the mean of the
        # micro-batch gradients is the full batch's.
        pairs = [(g / steps, v) for g, v in zip(sums, recorded) if g is not None]
        optimizer.apply_gradients(pairs)
        return logs

    return step


def _make_train_function(self, force: bool = False) -> Any:
    steps = _steps.get(self, 1)
    if steps == 1:
        return _original_make_train_function(self, force=force)
    if self.train_function is not None and not force:
        return self.train_function
    self.train_function = self._make_function(_accumulating(self, self.train_step, steps))
    return self.train_function


def install() -> None:
    """Patches `TensorFlowTrainer.make_train_function` (idempotent)."""
    _Trainer.make_train_function = _make_train_function


def uninstall() -> None:
    """Restores the upstream method (for the canary test)."""
    _Trainer.make_train_function = _original_make_train_function
