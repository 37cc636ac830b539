"""The outer training loop of `Estimator.train`: hooks, checkpoints, summaries, logs, preemption.

Between calls of the compiled loop (`loops.make_train_loop`) it runs the hooks, saves checkpoints
on every worker at the same steps (the chief into `model_dir`, via `tfdist.checkpoint`), writes
training summaries and logs on the chief, stops on NaN losses, and on SIGTERM saves and exits
with code 143. Loop calls are cut short where any of these must happen, so they happen at exact
steps whatever `steps_per_loop` is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist.estimator import hooks as hooks_lib
from tfdist.estimator import loops
from tfdist.estimator.run_config import RunConfig


class TrainRun:
    """Runs training loop calls for one Estimator (one per Estimator; `run` per `train` call).

    Args:
        config: The Estimator's `RunConfig`.
        strategy: The training strategy.
        manager: Checkpoints (`tfdist.checkpoint.CheckpointManager`).
        global_step: The global step variable.
        writer: `writer(directory)` -> a summary writer (chief only).
    """

    def __init__(self, config: RunConfig, strategy: tf.distribute.Strategy,
                 manager: checkpoint_lib.CheckpointManager, global_step: tf.Variable,
                 writer: Callable[[str], Any]) -> None:
        self._config = config
        self._strategy = strategy
        self._manager = manager
        self._global_step = global_step
        self._writer = writer

    def _step(self) -> int:
        return int(self._global_step.numpy())

    def run(self, loop: Callable[..., Any], iterator: Any, target: int | None,
            hooks: list[hooks_lib.SessionRunHook], listeners: list[hooks_lib.CheckpointSaverListener],
            fetch_dtypes: dict[str, tf.DType]) -> None:
        """Trains until `target` (or the input ends, or a hook or listener asks to stop).

        Raises:
            NanLossDuringTrainingError: The loss is NaN or infinite.
            tfdist.checkpoint.Preempted: SIGTERM arrived; saved at the current step.
        """
        preemption = checkpoint_lib.PreemptionWatcher().install()
        for hook in hooks:
            hook.begin()
        for hook in hooks:
            hook.after_create_session(None, None)
        for listener in listeners:
            listener.begin()
        step = self._step()
        last_saved, last_save_time = step, time.monotonic()
        last_log = (step, time.monotonic())
        initial = loops.initial_outputs(fetch_dtypes)
        try:
            while target is None or step < target:
                num = self._boundary(step, target, hooks)
                context = hooks_lib.SessionRunContext(step)
                requests = [hook.before_run(context) for hook in hooks]
                if context.stop_requested:
                    break
                started = time.monotonic()
                ran, outputs = loop(iterator, tf.constant(num, tf.int64), initial)
                ran = int(ran)
                step = self._step()
                if not ran:
                    # The input had ended: no step ran, so no after_run (tf.estimator's session
                    # raised OutOfRangeError there and skipped it too).
                    break
                values = dict(outputs)
                values[loops.LOSS] = float(values[loops.LOSS])
                values["global_step"] = step
                if not math.isfinite(values[loops.LOSS]):
                    raise hooks_lib.NanLossDuringTrainingError(
                        f"NaN loss during training: the loss is {values[loops.LOSS]} at global "
                        f"step {step}. Lower the learning rate or check the data; the last "
                        f"checkpoint is step {last_saved}."
                    )
                hooks_lib.after_runs(hooks, requests, context, values)
                elapsed = time.monotonic() - started
                last_log = self._report(step, values[loops.LOSS], ran, elapsed, last_log)
                if preemption.agreed(self._strategy):
                    path = self._save(step, listeners)[1]
                    preempted = checkpoint_lib.Preempted(step, path)
                    logging.warning("tfdist.estimator: %s; exiting with code %d",
                                    preempted, preempted.code)
                    raise preempted
                if step != last_saved and self._save_due(step, last_saved, last_save_time):
                    if self._save(step, listeners)[0]:
                        context.request_stop()
                    last_saved, last_save_time = step, time.monotonic()
                if context.stop_requested or ran < num:
                    break  # a hook or listener asked, or the input ended
            if step != last_saved:
                self._save(step, listeners)
            for listener in listeners:
                listener.end(None, step)
        finally:
            preemption.close()
        for hook in hooks:
            hook.end(None)

    def _boundary(self, step: int, target: int | None, hooks: list[hooks_lib.SessionRunHook]) -> int:
        """Steps for the next loop call: up to the next step where something must happen."""
        config = self._config
        stops = [step + config.steps_per_loop]
        if target is not None:
            stops.append(target)
        cadences = (config.save_checkpoints_steps, config.save_summary_steps,
                    config.log_step_count_steps)
        for every in cadences:
            if every:
                stops.append((step // every + 1) * every)
        for hook in hooks:
            wanted = hook.next_boundary(step)
            if wanted is not None and wanted > step:
                stops.append(wanted)
        return max(1, min(stops) - step)

    def _save_due(self, step: int, last_saved: int, last_save_time: float) -> bool:
        config = self._config
        if config.save_checkpoints_steps:
            return step // config.save_checkpoints_steps > last_saved // config.save_checkpoints_steps
        if config.save_checkpoints_secs:
            due = time.monotonic() - last_save_time >= config.save_checkpoints_secs
            return checkpoint_lib.any_worker(self._strategy, due)
        return False

    def _save(self, step: int,
              listeners: list[hooks_lib.CheckpointSaverListener]) -> tuple[bool, str | None]:
        """Saves on every worker; returns (a listener asked to stop, the chief's path)."""
        for listener in listeners:
            listener.before_save(None, step)
        path = self._manager.save(step)
        stop = False
        for listener in listeners:
            stop = bool(listener.after_save(None, step)) or stop
        return stop, path

    def _report(self, step: int, loss: float, ran: int, elapsed: float,
                last_log: tuple[int, float]) -> tuple[int, float]:
        """Summaries and logs on the chief; returns the (step, time) of the last log line."""
        config = self._config
        if not config.is_chief:
            return last_log
        if config.save_summary_steps and step % config.save_summary_steps == 0:
            writer = self._writer(config.model_dir)
            with writer.as_default(step=step):
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("global_step/sec", ran / elapsed if elapsed > 0 else 0.0)
            writer.flush()
        if config.log_step_count_steps and step - last_log[0] >= config.log_step_count_steps:
            since = time.monotonic() - last_log[1]
            logging.info("tfdist.estimator: loss = %.6g, step = %d (%.3g global_step/sec)",
                         loss, step, (step - last_log[0]) / since if since > 0 else float("nan"))
            return step, time.monotonic()
        return last_log
