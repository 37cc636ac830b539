"""`OuterLoop`: the one outer training loop, used by every route.

It drives a route's `TrainTarget` in loop calls of up to `steps_per_loop` steps and does
everything between them: checkpoints at a step and/or time cadence (on every worker, the chief
into `model_dir`, via `tfdist.checkpoint`), resume, TensorBoard scalars, progress on the chief,
the non-finite-loss policy, SIGTERM agreed across workers (save at the same step, exit 143),
evaluation cadence, train/eval actions, and `evaluate_continuously` for an evaluator task.
A loop call is cut short where any of these must happen, so they happen at exact steps.

Step counts follow Orbit: `train(steps)` trains *until* the global step reaches `steps`, so a
restarted job asked for the same `steps` finishes the same run.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import peer_failure
from tfdist.outer_loop import evaluator as evaluator_lib
from tfdist.outer_loop import interface
from tfdist.outer_loop import progress as progress_lib
from tfdist.outer_loop.summaries import SummaryWriters

NONFINITE_ACTIONS = ("stop", "restore")
Evaluate = Callable[[int | None], Mapping[str, Any]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss.

    Attributes:
        step: The global step of the first non-finite loss (or the step after the loop call).
        loss: The loss of that loop call.
        last_saved: The step of the newest checkpoint.
    """

    def __init__(self, message: str, *, step: int, loss: float, last_saved: int) -> None:
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.last_saved = last_saved


def check_loop_options(*, steps_per_loop: int = 1, checkpoint_every: int | None = None,
                       checkpoint_secs: float | None = None, summary_every: int | None = None,
                       on_nonfinite: str = "stop", max_nonfinite_restores: int = 0) -> None:
    """Checks `OuterLoop`'s cadence and policy options (routes call it before building anything).

    Raises:
        ValueError: One of them is invalid (the message names it and what was received).
    """
    checks.positive_int("steps_per_loop", steps_per_loop)
    checks.positive_int("checkpoint_every", checkpoint_every, allow_none=True,
                        none_means="no step cadence")
    checks.positive_int("summary_every", summary_every, allow_none=True,
                        none_means="after every loop call")
    checks.seconds("checkpoint_secs", checkpoint_secs, allow_none=True, none_means="no time cadence")
    checks.one_of("on_nonfinite", on_nonfinite, NONFINITE_ACTIONS)
    checks.non_negative_int("max_nonfinite_restores", max_nonfinite_restores)


class OuterLoop:
    """Runs a route's targets: `train`, `evaluate`, `evaluate_continuously`.

    Args:
        trainer: The training target. Defaults to `None` (evaluation only).
        evaluator: The evaluation target. Defaults to `None`.
        global_step: The global step variable. Defaults to `trainer.global_step`.
        strategy: The strategy the targets run under (workers agree through it).
        checkpoints: The run's `tfdist.checkpoint.CheckpointManager`.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.
        steps_per_loop: Most training steps per loop call. Defaults to 100.
        checkpoint_every: Save every this many steps. Defaults to `None`.
        checkpoint_secs: Save when this many seconds have passed since the last save (workers
            agree). Defaults to `None`. A final checkpoint is always saved.
        summary_dirs: `{"train": dir, "eval": dir}`: where this task writes each kind of
            scalars; a kind left out is not written. Defaults to none.
        summary_every: Write training scalars every this many steps. Defaults to `None`:
            after every loop call.
        progress: Show a progress bar or lines (pass `True` on the chief only). Defaults to
            `False`.
        on_nonfinite: `"stop"` raises `NonFiniteLossError`; `"restore"` goes back to the newest
            checkpoint and continues, at most `max_nonfinite_restores` times. Defaults to
            `"stop"`.
        max_nonfinite_restores: Restores allowed with `"restore"`. Defaults to 3.
        handle_preemption: Turn SIGTERM into a checkpoint and exit code 143 while `train` or
            `evaluate_continuously` runs (or for a whole `with` block). Defaults to `True`.
        train_actions: `TrainAction`s, or callables taking the logs of each loop call.
        eval_actions: Callables taking the logs of each evaluation.

    Raises:
        ValueError: Invalid `steps_per_loop`, `checkpoint_every`, `checkpoint_secs`,
            `summary_every`, `on_nonfinite` or `max_nonfinite_restores`.
        TypeError: An action that is not one.

    Example:

    ```python
    loop = tfdist.outer_loop.OuterLoop(trainer=target, evaluator=target, strategy=strategy,
                                       checkpoints=manager, steps_per_loop=50, checkpoint_every=500)
    loop.train(2000, eval_interval=500)
    ```
    """

    def __init__(
        self,
        *,
        trainer: interface.TrainTarget | None = None,
        evaluator: interface.EvalTarget | None = None,
        global_step: tf.Variable | None = None,
        strategy: tf.distribute.Strategy,
        checkpoints: checkpoint_lib.CheckpointManager,
        cluster: cluster_lib.ClusterInfo | None = None,
        steps_per_loop: int = 100,
        checkpoint_every: int | None = None,
        checkpoint_secs: float | None = None,
        summary_dirs: Mapping[str, str] | None = None,
        summary_every: int | None = None,
        progress: bool = False,
        on_nonfinite: str = "stop",
        max_nonfinite_restores: int = 3,
        handle_preemption: bool = True,
        train_actions: Iterable[interface.TrainAction | Callable[[dict], Any]] = (),
        eval_actions: Iterable[Callable[[dict], Any]] = (),
    ) -> None:
        check_loop_options(steps_per_loop=steps_per_loop, checkpoint_every=checkpoint_every,
                           checkpoint_secs=checkpoint_secs, summary_every=summary_every,
                           on_nonfinite=on_nonfinite, max_nonfinite_restores=max_nonfinite_restores)
        if global_step is None:
            if trainer is None:
                raise ValueError(
                    "OuterLoop needs a `global_step` when there is no `trainer` to take it from. "
                    "Pass global_step=<the run's step variable>."
                )
            global_step = trainer.global_step
        self.trainer = trainer
        self.evaluator = evaluator
        self.strategy = strategy
        self.checkpoints = checkpoints
        self.cluster = cluster or cluster_lib.resolve()
        self.steps_per_loop = steps_per_loop
        self.checkpoint_every = checkpoint_every
        self.checkpoint_secs = checkpoint_secs
        self.summary_every = summary_every
        self.on_nonfinite = on_nonfinite
        self.max_nonfinite_restores = max_nonfinite_restores
        self._global_step = global_step
        self._summary_dirs = dict(summary_dirs or {})
        self._summaries = SummaryWriters()
        self._progress = progress
        self._train_actions = [interface.as_train_action(a) for a in train_actions]
        self._eval_actions = interface.check_eval_actions(eval_actions)
        self._preemption = checkpoint_lib.PreemptionWatcher()
        self._handle_preemption = handle_preemption

    @property
    def global_step(self) -> int:
        return int(self._global_step.numpy())

    @property
    def preemption_requested(self) -> bool:
        """True once SIGTERM arrived in this process while the loop handled it."""
        return self._preemption.requested

    def resume(self) -> str | None:
        """Restores the newest checkpoint in `model_dir`, if any; returns its path."""
        path = self.checkpoints.restore_latest()
        if path:
            logging.info("tfdist: resumed from %s at step %d", path, self.global_step)
        return path

    # --- training ------------------------------------------------------------------------------

    def train(
        self,
        steps: int | None,
        *,
        eval_interval: int | None = None,
        evaluate: Evaluate | None = None,
        train_actions: Iterable[interface.TrainAction | Callable[[dict], Any]] = (),
    ) -> dict[str, Any]:
        """Trains until the global step reaches `steps` (or the input ends, or an action stops).

        Args:
            steps: Target global step; `None` trains until the input ends or an action stops.
            eval_interval: Evaluate every this many steps. Defaults to no evaluation.
            evaluate: What runs those evaluations, `evaluate(num_steps)`. Defaults to
                `self.evaluate`.
            train_actions: More actions for this call only (after the loop's own).

        Returns:
            The last loop call's logs, plus any evaluation results prefixed with `eval_`.

        Raises:
            NonFiniteLossError: The loss became NaN/inf.
            tfdist.checkpoint.Preempted: SIGTERM arrived; a checkpoint was saved at that step.
            tfdist.peer_failure.PeerUnavailableError: Another task died or stopped responding.
        """
        if steps is not None:
            checks.positive_int("steps", steps)
        if eval_interval is not None:
            checks.positive_int("eval_interval", eval_interval)
        if self.trainer is None:
            raise ValueError("OuterLoop.train needs a `trainer` (a tfdist.outer_loop.TrainTarget).")
        actions = self._train_actions + [interface.as_train_action(a) for a in train_actions]
        with self._preemption.watching(self._handle_preemption), peer_failure.translate(self.cluster):
            return self._train(self.trainer, steps, eval_interval, evaluate or self.evaluate, actions)

    def _train(self, trainer: interface.TrainTarget, steps: int | None, eval_interval: int | None,
               evaluate: Evaluate, actions: list[interface.TrainAction]) -> dict[str, Any]:
        step = self.global_step
        for action in actions:
            action.begin(step)
        bar = progress_lib.progress_bar(steps) if self._progress and steps is not None else None
        logs: dict[str, Any] = {}
        restores = 0
        last_saved, last_save_time = step, time.monotonic()
        next_eval = _next_multiple(step, eval_interval) if eval_interval else None
        while steps is None or step < steps:
            num = self._loop_size(step, steps, next_eval, actions)
            if any([action.before_train(step) for action in actions]):  # all of them, then stop
                break
            logs = dict(trainer.train(num))
            ran = self.global_step - step
            if ran <= 0:
                break  # the input had ended: no step ran
            bad_step = trainer.first_nonfinite_step()
            loss = logs.get("loss", 0.0)
            if bad_step is not None or not math.isfinite(loss):
                restores += 1
                last_saved = self._handle_nonfinite(trainer, bad_step, loss, restores, last_saved)
                step = self.global_step
                continue
            step = self.global_step
            stop = any([action.after_train(step, logs) for action in actions])
            if self.summary_every is None or step % self.summary_every == 0:
                self.write_summaries("train", step, logs)
            if bar is not None:
                bar.update(step, [(k, v) for k, v in logs.items() if _is_number(v)])
            if self._preemption.agreed(self.strategy):
                preempted = checkpoint_lib.Preempted(step, self._save(step, actions)[1])
                logging.warning("tfdist: %s; exiting with code %d", preempted, preempted.code)
                raise preempted
            if step != last_saved and (
                (steps is not None and step >= steps) or self._save_due(step, last_saved, last_save_time)
            ):
                stop = self._save(step, actions)[0] or stop
                last_saved, last_save_time = step, time.monotonic()
            if eval_interval is not None and next_eval is not None and step >= next_eval:
                logs.update({f"eval_{k}": v for k, v in evaluate(None).items()})
                next_eval = _next_multiple(step, eval_interval)
            if stop or ran < num:
                break  # an action asked, or the input ended
        if step != last_saved:
            self._save(step, actions)
        for action in actions:
            action.end(step)
        return logs

    def _loop_size(self, step: int, target: int | None, next_eval: int | None,
                   actions: list[interface.TrainAction]) -> int:
        """Steps for the next loop call: up to the next step where something must happen."""
        stops = [step + self.steps_per_loop]
        if target is not None:
            stops.append(target)
        if next_eval is not None:
            stops.append(next_eval)
        for every in (self.checkpoint_every, self.summary_every):
            if every:
                stops.append(_next_multiple(step, every))
        for action in actions:
            wanted = action.next_boundary(step)
            if wanted is not None and wanted > step:
                stops.append(wanted)
        return max(1, min(stops) - step)

    def _save_due(self, step: int, last_saved: int, last_save_time: float) -> bool:
        if self.checkpoint_every and step // self.checkpoint_every > last_saved // self.checkpoint_every:
            return True
        if self.checkpoint_secs:
            due = time.monotonic() - last_save_time >= self.checkpoint_secs
            return checkpoint_lib.any_worker(self.strategy, due)
        return False

    def _save(self, step: int, actions: list[interface.TrainAction]) -> tuple[bool, str | None]:
        """Saves on every worker; returns (an action asked to stop, the chief's path)."""
        for action in actions:
            action.before_save(step)
        path = self.checkpoints.save(step)
        stop = any([action.after_save(step) for action in actions])
        return stop, path

    def _handle_nonfinite(self, trainer: interface.TrainTarget, bad_step: int | None, loss: float,
                          restores: int, last_saved: int) -> int:
        step = self.global_step
        where = f"at global step {bad_step}" if bad_step is not None else f"before step {step}"
        message = f"Training loss is not finite {where} (mean loss of the last loop: {loss})."
        details: dict[str, Any] = dict(step=bad_step if bad_step is not None else step, loss=loss,
                                       last_saved=last_saved)
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"{message} Lower the learning rate, check the data, or pass "
                "on_nonfinite='restore' to go back to the last checkpoint.", **details)
        # Go back to the last good state even when giving up, so in-process callers keep it.
        path = self.checkpoints.restore_latest()
        if path is None:
            raise NonFiniteLossError(
                f"{message} Giving up: there is no checkpoint to restore.", **details)
        trainer.after_restore()
        if restores > self.max_nonfinite_restores:
            raise NonFiniteLossError(
                f"{message} Giving up: {self.max_nonfinite_restores} restores did not help; "
                f"the model is back at {path}.", **details)
        logging.warning("tfdist: %s Restored %s (restore %d of %d).", message, path, restores,
                        self.max_nonfinite_restores)
        return self.global_step

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(self, steps: int | None = None) -> dict[str, Any]:
        """Runs the evaluation target, writes eval scalars, logs and runs the eval actions.

        Args:
            steps: Batches to evaluate. Defaults to the whole evaluation data.

        Returns:
            Loss and metrics, plus `global_step`.
        """
        if self.evaluator is None:
            raise ValueError("OuterLoop.evaluate needs an `evaluator` (a tfdist.outer_loop.EvalTarget).")
        with peer_failure.translate(self.cluster):
            results = dict(self.evaluator.evaluate(steps))
        step = self.global_step
        self.write_summaries("eval", step, results)
        if self.cluster.is_chief or self.cluster.is_evaluator:
            logging.info("tfdist: eval at step %d: %s", step, _format(results))
        results["global_step"] = step
        for action in self._eval_actions:
            action(results)
        return results

    def evaluate_continuously(
        self,
        final_step: int | None,
        *,
        timeout: float | None = None,
        eval_steps: int | None = None,
        evaluate: Evaluate | None = None,
    ) -> dict[str, Any]:
        """For an evaluator task: evaluates each new checkpoint until training has ended.

        Training has ended once a checkpoint at `final_step` was evaluated, or the chief's
        `training_done` marker is there and the newest checkpoint was evaluated
        (`tfdist.outer_loop.evaluator`).

        Args:
            final_step: The training job's target step. `None`: stop on the marker only.
            timeout: Give up after this many seconds without a new checkpoint. Defaults to
                waiting as long as it takes.
            eval_steps: Batches per evaluation. Defaults to all evaluation data.
            evaluate: What runs each evaluation, `evaluate(eval_steps)`, after the checkpoint
                was restored. Defaults to `self.evaluate`.

        Returns:
            The results of the last evaluation (empty if none ran before the timeout).

        Raises:
            tfdist.checkpoint.Preempted: SIGTERM arrived (nothing is saved; exit code 143).
        """
        evaluate = evaluate or self.evaluate

        def evaluate_checkpoint(path: str, number: int) -> dict[str, Any] | None:
            del number
            try:
                self.checkpoints.restore(path)
            except (tf.errors.NotFoundError, tf.errors.DataLossError, IndexError):
                # Deleted by max_to_keep while we looked, or truncated ("Read less bytes than
                # requested" is an IndexError): the next one will do.
                return None
            return dict(evaluate(eval_steps))

        with self._preemption.watching(self._handle_preemption):
            run = evaluator_lib.evaluate_continuously(
                evaluate_checkpoint, self.checkpoints.model_dir, final_step=final_step,
                timeout=timeout, should_stop=lambda: self._preemption.requested)
            if run.reason == "preempted" or self._preemption.requested:
                preempted = checkpoint_lib.Preempted(self.global_step, None, saved=False)
                logging.warning("tfdist: evaluator %s; exiting with code %d", preempted, preempted.code)
                raise preempted
        return run.results

    # --- outputs -------------------------------------------------------------------------------

    def write_summaries(self, kind: str, step: int, values: Mapping[str, Any]) -> None:
        """Writes the scalars of `values` as `kind` ("train", "eval") summaries, if this task does."""
        directory = self._summary_dirs.get(kind)
        if directory is not None:
            self._summaries.write(directory, step, values)

    def mark_training_started(self) -> None:
        """Chief: removes an old `training_done` marker (a new run starts)."""
        if self.cluster.is_chief:
            evaluator_lib.mark_training_started(self.checkpoints.model_dir)

    def mark_training_ended(self) -> None:
        """Chief: writes the `training_done` marker at the current step (evaluators stop)."""
        if self.cluster.is_chief:
            evaluator_lib.mark_training_ended(self.checkpoints.model_dir, self.global_step)

    def preemption_handled(self) -> contextlib.AbstractContextManager:
        """A `with` block during which SIGTERM is handled (nests with `train`'s own)."""
        return self._preemption.watching(self._handle_preemption)

    def install_preemption_handler(self) -> None:
        """Handles SIGTERM until `close` (e.g. for a whole `with` block)."""
        if self._handle_preemption:
            self._preemption.install()

    def close(self) -> None:
        """Puts the process's own SIGTERM handler back."""
        self._preemption.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def _format(results: Mapping[str, Any]) -> str:
    return json.dumps({k: round(v, 5) for k, v in results.items() if _is_number(v)})
