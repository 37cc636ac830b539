"""The Estimator's side of the shared outer loop: its `TrainTarget` and its step-count log.

`Estimator.train` runs on `tfdist.outer_loop.OuterLoop`, which owns the cadence (checkpoint
steps or seconds, summaries, loop boundaries), checkpoints, preemption and the NaN policy. What
is the Estimator's own is here: one loop call of the compiled `model_fn` loop
(`loops.make_train_loop`), whose hook tensors ride along for the hooks, and tf.estimator's
"loss = ..., step = ... (... global_step/sec)" log line every `log_step_count_steps`.
"""

from __future__ import annotations

import time
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import outer_loop
from tfdist.estimator import loops


class EstimatorTrainTarget(outer_loop.TrainTarget):
    """Runs loop calls of the Estimator's compiled training loop (bound per `train` call).

    Args:
        global_step: The Estimator's global step variable.
    """

    def __init__(self, global_step: tf.Variable) -> None:
        self.global_step = global_step
        self._loop: Any = None
        self._iterator: Any = None
        self._initial: dict[str, tf.Tensor] = {}
        self.run_values: dict[str, Any] = {}  # the last loop call's loss and hook tensors

    def bind(self, loop: Any, iterator: Any, fetch_dtypes: dict[str, tf.DType]) -> None:
        """Sets the compiled loop and the input iterator of this `train` call."""
        self._loop, self._iterator = loop, iterator
        self._initial = loops.initial_outputs(fetch_dtypes)

    def train(self, num_steps: int) -> dict[str, float]:
        started = time.monotonic()
        ran, outputs = self._loop(self._iterator, tf.constant(num_steps, tf.int64), self._initial)
        elapsed = time.monotonic() - started
        values = dict(outputs)
        values[loops.LOSS] = float(values[loops.LOSS])
        self.run_values = values
        rate = int(ran) / elapsed if elapsed > 0 else 0.0
        return {loops.LOSS: values[loops.LOSS], "global_step/sec": rate}


class StepCountLog(outer_loop.TrainAction):
    """Logs loss and steps/sec every `every` steps (the chief only), as tf.estimator did.

    Args:
        every: `RunConfig.log_step_count_steps`.
        is_chief: Whether this task logs.
    """

    def __init__(self, every: int, is_chief: bool) -> None:
        self._every = every
        self._is_chief = is_chief
        self._last = (0, 0.0)

    def begin(self, step: int) -> None:
        self._last = (step, time.monotonic())

    def next_boundary(self, step: int) -> int:
        return (step // self._every + 1) * self._every

    def after_train(self, step: int, logs: dict[str, Any]) -> None:
        if not self._is_chief or step - self._last[0] < self._every:
            return
        since = time.monotonic() - self._last[1]
        logging.info("tfdist.estimator: loss = %.6g, step = %d (%.3g global_step/sec)",
                     logs[loops.LOSS], step,
                     (step - self._last[0]) / since if since > 0 else float("nan"))
        self._last = (step, time.monotonic())
