"""The outer loop of route 1: checkpoints, resume, summaries, progress, evaluation cadence.

`Controller` drives a `Trainer` in chunks of `steps_per_loop` steps (one `tf.function` call each)
and does everything between chunks: checkpoints (multi-worker safe, via `tfdist.checkpoint`),
TensorBoard scalars and a progress bar on the chief, non-finite-loss handling, preemption, and
evaluation. Training resumes automatically from the newest checkpoint in `model_dir`.

Step counts follow Orbit: `train(steps)` trains *until* the global step reaches `steps`, so a
restarted job asked for the same `steps` finishes the same run.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import cluster as cluster_lib
from tfdist import data as data_lib
from tfdist import export as export_lib
from tfdist import peer_failure
from tfdist.loop import progress as progress_lib
from tfdist.loop.trainer import Trainer

NONFINITE_ACTIONS = ("stop", "restore")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class Controller:
    """Runs a `Trainer`: `train`, `evaluate`, `train_and_evaluate`, `evaluate_continuously`.

    Args:
        trainer: The trainer to drive.
        model_dir: Checkpoints, TensorBoard summaries and exports go here (chief only).
        steps_per_loop: Training steps per `tf.function` call. Defaults to 100.
        checkpoint_every: Save every this many steps (rounded to loop boundaries); a final
            checkpoint is always saved. Defaults to `10 * steps_per_loop`.
        max_to_keep: Checkpoints kept. Defaults to 5.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.
        progress: Show a progress bar (chief only). Defaults to `True`.
        summaries: Write TensorBoard scalars (chief only). Defaults to `True`.
        on_nonfinite: `"stop"` raises `NonFiniteLossError` naming the step; `"restore"` goes back
            to the newest checkpoint and continues, at most `max_nonfinite_restores` times.
            Defaults to `"stop"`.
        max_nonfinite_restores: Restores allowed with `on_nonfinite="restore"`. Defaults to 3.
        export: Save `model.keras` and a SavedModel (`saved_model/`) when training ends.
            Defaults to `True`.
        handle_preemption: While `train`, `train_and_evaluate` or `evaluate_continuously`
            runs (or for a whole `with Controller(...)` block), SIGTERM saves a checkpoint at
            the next loop boundary and exits with code 143 (an evaluator just exits); the
            process's own handler is back when they return or raise. Defaults to `True`.
        checkpoint_input: Also checkpoint the training input position (with its shuffle
            buffer), where TensorFlow can: plain `tf.data` iterators (one replica, one worker).
            Distributed iterators (`MirroredStrategy`, multi-worker) are not checkpointable in
            TF 2.21; there a resumed run restarts its input pipeline. Defaults to `True`.

    Raises:
        ValueError: Invalid `steps_per_loop`, `checkpoint_every` or `on_nonfinite`.
        tfdist.checkpoint.CheckpointError: `model_dir` is a file or not writable.

    Example:

    ```python
    with tfdist.loop.Controller(trainer, model_dir="/tmp/run", steps_per_loop=50) as controller:
        controller.train_and_evaluate(train_steps=2000, eval_interval=500)
    ```
    """

    def __init__(
        self,
        trainer: Trainer,
        *,
        model_dir: str,
        steps_per_loop: int = 100,
        checkpoint_every: int | None = None,
        max_to_keep: int = 5,
        cluster: cluster_lib.ClusterInfo | None = None,
        progress: bool = True,
        summaries: bool = True,
        on_nonfinite: str = "stop",
        max_nonfinite_restores: int = 3,
        export: bool = True,
        handle_preemption: bool = True,
        checkpoint_input: bool = True,
    ) -> None:
        _check_positive_int("steps_per_loop", steps_per_loop)
        if checkpoint_every is not None:
            _check_positive_int("checkpoint_every", checkpoint_every)
        if on_nonfinite not in NONFINITE_ACTIONS:
            raise ValueError(
                "Invalid value for argument `on_nonfinite`. "
                f"Received: on_nonfinite={on_nonfinite!r}. Valid values: stop, restore."
            )
        self.trainer = trainer
        self.strategy = trainer.strategy
        self.cluster = cluster or cluster_lib.resolve()
        self.model_dir = checkpoint_lib.validate_model_dir(model_dir)
        self.steps_per_loop = steps_per_loop
        self.checkpoint_every = checkpoint_every or 10 * steps_per_loop
        self.on_nonfinite = on_nonfinite
        self.max_nonfinite_restores = max_nonfinite_restores
        self.export_at_end = export
        self.is_chief = self.cluster.is_chief
        self._progress = progress and self.is_chief
        tracked = dict(
            model=trainer.model, optimizer=trainer.optimizer, global_step=trainer.global_step
        )
        self._train_iterator = None
        if trainer.train_data is not None:
            # One iterator for the whole run: re-creating it would pay the teardown stall.
            self._train_iterator = iter(data_lib.distribute(self.strategy, trainer.train_data))
            if checkpoint_input and isinstance(self._train_iterator, tf.data.Iterator):
                tracked["train_input"] = self._train_iterator
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.checkpoints = checkpoint_lib.CheckpointManager(
            self.checkpoint, self.model_dir, cluster=self.cluster, max_to_keep=max_to_keep
        )
        # The chief writes training and evaluation scalars; an evaluator task, its evaluations.
        writer_names = ("train", "eval") if self.is_chief else ()
        if self.cluster.is_evaluator:
            writer_names = ("eval",)
        self._writers = {
            name: tf.summary.create_file_writer(os.path.join(self.model_dir, name))
            for name in (writer_names if summaries else ())
        }
        # Installed only while a run is in progress (train, evaluate_continuously): a process
        # that made a Controller keeps its own SIGTERM handler the rest of the time.
        self._preemption = checkpoint_lib.PreemptionWatcher()
        self._handle_preemption = handle_preemption
        self.restored_from = self.checkpoints.restore_latest()
        if self.restored_from:
            logging.info("tfdist: resumed from %s at step %d", self.restored_from, self.global_step)

    @property
    def global_step(self) -> int:
        return int(self.trainer.global_step.numpy())

    @property
    def preemption_requested(self) -> bool:
        """True once SIGTERM arrived in this process while the controller handled it.

        The controller handles SIGTERM while `train`, `train_and_evaluate` or
        `evaluate_continuously` runs, or for a whole `with Controller(...)` block. This is
        this process's flag only; workers that must act on it together (it is what `train`
        agrees on at each loop boundary) combine it across the job with
        `tfdist.checkpoint.any_worker(strategy, controller.preemption_requested)`.
        """
        return self._preemption.requested

    # --- training ------------------------------------------------------------------------------

    def train(self, steps: int, *, eval_interval: int | None = None) -> dict[str, float]:
        """Trains until the global step reaches `steps`, then checkpoints and exports.

        Args:
            steps: Target global step (not a count of additional steps, so restarts resume).
            eval_interval: Evaluate every this many steps. Defaults to no evaluation.

        Returns:
            The last training results (loss, metrics, steps/s, examples/s) plus any evaluation
            results prefixed with `eval_`.

        Raises:
            NonFiniteLossError: The loss became NaN/inf (with `on_nonfinite="stop"`, or when
                restores are exhausted).
            tfdist.checkpoint.Preempted: SIGTERM arrived; a checkpoint was saved at that step.
            tfdist.peer_failure.PeerUnavailableError: Another task died or stopped responding.
        """
        _check_positive_int("steps", steps)
        if self._train_iterator is None:
            raise ValueError("Controller.train needs a Trainer with train_data.")
        with self._preemption.watching(self._handle_preemption), peer_failure.translate(self.cluster):
            return self._train(steps, eval_interval)

    def _train(self, steps: int, eval_interval: int | None) -> dict[str, float]:
        bar = progress_lib.progress_bar(steps) if self._progress else None
        results: dict[str, float] = {}
        restores = 0
        last_saved = self.global_step
        next_eval = _next_multiple(self.global_step, eval_interval) if eval_interval else None
        while self.global_step < steps:
            start_step = self.global_step
            boundary = min(steps, _next_multiple(start_step, self.checkpoint_every))
            if next_eval is not None:
                boundary = min(boundary, next_eval)
            num = min(self.steps_per_loop, boundary - start_step)
            started = time.perf_counter()
            self.trainer.train_loop(self._train_iterator, num)
            results = self.trainer.train_results()  # reading synchronises: the loop has finished
            elapsed = time.perf_counter() - started
            results["steps_per_sec"] = num / elapsed
            results["examples_per_sec"] = num * self.trainer.global_batch_size / elapsed

            bad_step = int(self.trainer.nonfinite_step.numpy())
            if bad_step >= 0 or not math.isfinite(results["loss"]):
                restores += 1
                last_saved = self._handle_nonfinite(bad_step, results["loss"], restores)
                continue
            step = self.global_step
            self._write_summaries("train", step, results, learning_rate=self.trainer.learning_rate())
            if bar is not None:
                bar.update(step, list(results.items()))
            if self._preemption.agreed(self.strategy):
                preempted = checkpoint_lib.Preempted(step, self.checkpoints.save(step))
                logging.warning("tfdist: %s; exiting with code %d", preempted, preempted.code)
                raise preempted
            if step - last_saved >= self.checkpoint_every or step >= steps:
                self.checkpoints.save(step)
                last_saved = step
            if next_eval is not None and step >= next_eval:
                results.update({f"eval_{k}": v for k, v in self.evaluate().items()})
                next_eval = _next_multiple(step, eval_interval)
        if last_saved != self.global_step:
            self.checkpoints.save(self.global_step)
        if self.export_at_end:
            self.export()
        return results

    def _handle_nonfinite(self, bad_step: int, loss: float, restores: int) -> int:
        where = f"at global step {bad_step}" if bad_step >= 0 else f"before step {self.global_step}"
        message = f"Training loss is not finite {where} (mean loss of the last loop: {loss})."
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{message} Lower the learning rate, check the data, or pass "
                "on_nonfinite='restore' to go back to the last checkpoint."
            )
        # Go back to the last good state even when giving up, so in-process callers keep it.
        path = self.checkpoints.restore_latest()
        if path is None:
            raise NonFiniteLossError(f"{message} Giving up: there is no checkpoint to restore.")
        self.trainer.nonfinite_step.assign(-1)
        self.trainer.train_results(reset=True)
        if restores > self.max_nonfinite_restores:
            raise NonFiniteLossError(
                f"{message} Giving up: {self.max_nonfinite_restores} restores did not help; "
                f"the model is back at {path}."
            )
        logging.warning("tfdist: %s Restored %s (restore %d of %d).", message, path, restores,
                        self.max_nonfinite_restores)
        return self.global_step

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, steps: int | None = None) -> dict[str, float]:
        """Evaluates on `eval_data`, to its end or for `steps` steps, and writes eval summaries.

        Args:
            steps: Batches to evaluate. Defaults to the whole evaluation data.

        Returns:
            Loss and metrics, plus `global_step`.

        Raises:
            tfdist.peer_failure.PeerUnavailableError: Another task died or stopped responding.
        """
        if self.trainer.eval_data is None:
            raise ValueError("Controller.evaluate needs a Trainer with eval_data.")
        with peer_failure.translate(self.cluster):
            return self._evaluate(steps)

    def _evaluate(self, steps: int | None) -> dict[str, float]:
        iterator = iter(data_lib.distribute(self.strategy, self.trainer.eval_data))
        self.trainer.eval_loop(iterator, steps)
        results = self.trainer.eval_results()
        data_lib.release_iterator(iterator)  # destroyed off this thread: no teardown stall
        del iterator
        step = self.global_step
        self._write_summaries("eval", step, results)
        if self.is_chief or self.cluster.is_evaluator:
            logging.info("tfdist: eval at step %d: %s", step, _format(results))
        return {**results, "global_step": step}

    def train_and_evaluate(
        self, train_steps: int, eval_interval: int, eval_steps: int | None = None
    ) -> dict[str, float]:
        """Trains to `train_steps`, evaluating every `eval_interval` steps and at the end.

        Returns:
            The final training results and the final evaluation results prefixed with `eval_`.
        """
        _check_positive_int("eval_interval", eval_interval)
        with self._preemption.watching(self._handle_preemption):
            results = self.train(train_steps, eval_interval=eval_interval)
            final = self.final_evaluation(results, eval_steps)
        results.update({f"eval_{k}": v for k, v in final.items()})
        return results

    def final_evaluation(self, train_results: dict[str, float],
                         steps: int | None = None) -> dict[str, float]:
        """`evaluate(steps)` at the current step, unless `train` has just evaluated there.

        Args:
            train_results: What `train` returned (its `eval_` results, if any).
            steps: As in `evaluate`; `train` evaluates on the whole evaluation data, so only
                `None` reuses its results.

        Returns:
            Loss and metrics, plus `global_step`.
        """
        if steps is None and train_results.get("eval_global_step") == self.global_step:
            return {k[len("eval_"):]: v for k, v in train_results.items() if k.startswith("eval_")}
        return self.evaluate(steps)

    def evaluate_continuously(
        self, train_steps: int, *, timeout: float | None = None, eval_steps: int | None = None
    ) -> dict[str, float]:
        """For an evaluator task: evaluates each new checkpoint until training reaches `train_steps`.

        Args:
            train_steps: The training job's target step; the last evaluation is of that step.
            timeout: Give up after this many seconds without a new checkpoint. Defaults to
                waiting as long as it takes.
            eval_steps: Batches per evaluation. Defaults to all evaluation data.

        Returns:
            The results of the last evaluation (empty if none ran before the timeout).
        """
        results: dict[str, float] = {}
        last_new = time.monotonic()

        def stop_waiting() -> bool:
            if self._preemption.requested:
                return True
            return timeout is not None and time.monotonic() - last_new >= timeout

        with self._preemption.watching(self._handle_preemption):
            # Poll every second, so SIGTERM ends the wait promptly instead of at the next checkpoint.
            for path in tf.train.checkpoints_iterator(self.model_dir, timeout=1.0,
                                                      timeout_fn=stop_waiting):
                last_new = time.monotonic()
                try:
                    self.checkpoints.restore(path)
                except (tf.errors.NotFoundError, tf.errors.DataLossError):
                    continue  # deleted by max_to_keep while we looked; the next one will do
                results = self.evaluate(eval_steps)
                if results["global_step"] >= train_steps or self._preemption.requested:
                    break
            if self._preemption.requested:
                preempted = checkpoint_lib.Preempted(self.global_step, None, saved=False)
                logging.warning("tfdist: evaluator %s; exiting with code %d", preempted, preempted.code)
                raise preempted
        return results

    # --- outputs -------------------------------------------------------------------------------

    def export(self) -> dict[str, str]:
        """Saves `model.keras` and a SavedModel under `model_dir` (chief only).

        Returns:
            Paths written (empty on non-chief workers).
        """
        if not self.is_chief:
            return {}
        return export_lib.export_model(self.trainer.model, self.model_dir, cluster=self.cluster)

    def _write_summaries(self, name: str, step: int, results: dict[str, float], **extra: float) -> None:
        writer = self._writers.get(name)
        if writer is None:
            return
        with writer.as_default(step=step):
            for key, value in {**results, **extra}.items():
                tf.summary.scalar(key, value)
        writer.flush()

    def close(self) -> None:
        """Releases the training iterator and the SIGTERM handler of a `with` block.

        Safe to call twice; leaving `with Controller(...)` calls it.
        """
        self._preemption.close()
        if self._train_iterator is not None:
            data_lib.release_iterator(self._train_iterator)
            self._train_iterator = None

    def __enter__(self) -> Controller:
        """Handles SIGTERM for the whole `with` block (also between `train` calls)."""
        if self._handle_preemption:
            self._preemption.install()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
            "Pass an integer >= 1."
        )


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _format(results: dict[str, float]) -> str:
    return json.dumps({k: round(v, 5) for k, v in results.items()})
