"""`train_and_evaluate`: what each TF_CONFIG role does.

- **Local** (no TF_CONFIG): one process trains; after a checkpoint save it evaluates if
  `throttle_secs` have passed since the last evaluation, runs the exporters, and when training
  ends evaluates the final checkpoint and runs the exporters as the final export.
- **chief / worker**: train together (MultiWorkerMirroredStrategy when the cluster has several),
  to `max_steps` or the end of the input. The chief then writes `model_dir/training_done`.
- **evaluator** (outside the training cluster; the "sidecar evaluator"): evaluates each new
  checkpoint in `model_dir` (after `start_delay_secs`, at most every `throttle_secs`) and runs
  the exporters, until training has ended by the one protocol of every tfdist evaluator
  (`tfdist.outer_loop.evaluate_continuously`): a checkpoint at `max_steps` was evaluated, or
  the chief has written `training_done` and its newest checkpoint was evaluated.
- **chief / worker / ps** (TF_CONFIG with ps tasks): `ParameterServerStrategy`. Worker and ps
  tasks serve inside `tfdist.get_strategy` until the launcher stops them (the call never
  returns there); the chief schedules the steps on the workers (`ps_training`), checkpoints,
  and writes `training_done`. Evaluation is the evaluator task's, as above.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checkpoint_recovery
from tfdist import outer_loop
from tfdist.estimator import exporters as exporters_lib
from tfdist.estimator import hooks as hooks_lib
from tfdist.estimator.estimator import Estimator
from tfdist.estimator.estimator import require_eager
from tfdist.estimator.spec import EvalSpec
from tfdist.estimator.spec import TrainSpec

DONE_FILE = checkpoint_lib.DONE_FILE


def train_and_evaluate(estimator: Estimator, train_spec: TrainSpec,
                       eval_spec: EvalSpec) -> tuple[Any, Any]:
    """Trains and evaluates according to this task's role (see the module docstring).

    Args:
        estimator: The `Estimator`.
        train_spec: What to train on and for how long.
        eval_spec: What to evaluate on, how often, and the exporters.

    Returns:
        `(eval_result, export_results)` of the last evaluation on local and evaluator tasks;
        `(None, None)` on chief and worker tasks of a cluster.

    Raises:
        RuntimeError: TensorFlow is in graph mode (`disable_eager_execution()`).
        TypeError: Arguments of the wrong types.
        ValueError: TF_CONFIG with ps tasks but no chief or no workers.
    """
    require_eager("tfdist.estimator.train_and_evaluate")
    if not isinstance(estimator, Estimator):
        raise TypeError(
            f"train_and_evaluate needs a tfdist.estimator.Estimator; received "
            f"{type(estimator).__name__}."
        )
    if not isinstance(train_spec, TrainSpec):
        raise TypeError(f"train_spec must be a TrainSpec; received {type(train_spec).__name__}.")
    if not isinstance(eval_spec, EvalSpec):
        raise TypeError(f"eval_spec must be an EvalSpec; received {type(eval_spec).__name__}.")
    cluster = estimator.config.cluster
    if cluster.is_evaluator:
        return _run_evaluator(estimator, train_spec, eval_spec)
    if cluster.is_local:
        return _run_local(estimator, train_spec, eval_spec)
    return _run_training_task(estimator, train_spec)


# --- chief and workers ---------------------------------------------------------------------------


def _checkpoint_step(path: str | None) -> int:
    """The global step of checkpoint `path` (``.../ckpt-<step>``); 0 with none (nothing trained)."""
    return int(os.path.basename(path).rsplit("-", 1)[1]) if path else 0


def _run_training_task(estimator: Estimator, train_spec: TrainSpec) -> tuple[None, None]:
    if estimator.config.is_chief:
        outer_loop.mark_training_started(estimator.model_dir)  # the evaluator must not stop on an old one
    estimator.train(train_spec.input_fn, hooks=train_spec.hooks, max_steps=train_spec.max_steps,
                    saving_listeners=train_spec.saving_listeners)
    if estimator.config.is_chief:
        step = _checkpoint_step(estimator.latest_checkpoint())
        outer_loop.mark_training_ended(estimator.model_dir, step)
        logging.info("tfdist.estimator: training finished at step %d", step)
    return None, None


# --- evaluator -----------------------------------------------------------------------------------


def _run_evaluator(estimator: Estimator, train_spec: TrainSpec, eval_spec: EvalSpec) -> tuple[Any, Any]:
    """Evaluates each new checkpoint with the one evaluator protocol of `tfdist.outer_loop`.

    An unreadable checkpoint (truncated, a missing index) is skipped with one log line and the
    evaluator waits for the next one; it is not moved: the chief, which writes `model_dir`,
    moves it aside when it next restores.
    """
    exports: list[Any] = []
    unreadable: set[str] = set()

    def latest(directory: str) -> tuple[int, str] | None:
        newest = outer_loop.latest_tf_checkpoint(directory)
        return None if newest is None or newest[1] in unreadable else newest

    def evaluate(path: str, number: int) -> dict[str, Any] | None:
        del number
        try:
            return estimator.evaluate(eval_spec.input_fn, steps=eval_spec.steps,
                                      hooks=eval_spec.hooks, checkpoint_path=path,
                                      name=eval_spec.name)
        except checkpoint_recovery.READ_ERRORS:
            # Only a checkpoint that does not read back is skipped; any other error is raised.
            reason = checkpoint_recovery.unreadable_reason(path)
            if reason is None:
                raise
            if reason != checkpoint_recovery.MISSING:
                unreadable.add(path)
                logging.warning("tfdist.estimator: evaluator skips %s: it is unreadable (%s); "
                                "waiting for the next checkpoint", os.path.basename(path), reason)
            return None  # missing: deleted by keep_checkpoint_max meanwhile; take the next one

    def export(result: dict[str, Any], path: str, final: bool) -> None:
        exports[:] = exporters_lib.run_exporters(estimator, eval_spec.exporters, path, result, final)

    run = outer_loop.evaluate_continuously(
        evaluate, estimator.model_dir, final_step=train_spec.max_steps, latest=latest,
        start_delay_secs=eval_spec.start_delay_secs, throttle_secs=eval_spec.throttle_secs,
        after_evaluation=export)
    return (run.results or None), exports


# --- one process ---------------------------------------------------------------------------------


class _EvaluateAfterSave(hooks_lib.CheckpointSaverListener):
    """Evaluates and exports after a checkpoint save, at most every `throttle_secs`."""

    def __init__(self, estimator: Estimator, eval_spec: EvalSpec, max_steps: int | None) -> None:
        self._estimator = estimator
        self._spec = eval_spec
        self._max_steps = max_steps
        self._last_time = -float("inf")
        self.result: dict[str, Any] | None = None
        self.exports: list[str] = []
        self.final_exported = False

    def evaluate(self, step: int, final: bool) -> None:
        path = self._estimator.latest_checkpoint()
        self._last_time = time.monotonic()
        self.result = self._estimator.evaluate(self._spec.input_fn, steps=self._spec.steps,
                                               hooks=self._spec.hooks, checkpoint_path=path,
                                               name=self._spec.name)
        self.exports = exporters_lib.run_exporters(self._estimator, self._spec.exporters, path,
                                                   self.result, final)
        self.final_exported = final

    def after_save(self, session: Any, global_step_value: int) -> None:
        if self._max_steps is not None and global_step_value >= self._max_steps:
            return  # the final evaluation happens when training ends
        if time.monotonic() - self._last_time >= self._spec.throttle_secs:
            self.evaluate(global_step_value, final=False)


def _run_local(estimator: Estimator, train_spec: TrainSpec, eval_spec: EvalSpec) -> tuple[Any, Any]:
    listener = _EvaluateAfterSave(estimator, eval_spec, train_spec.max_steps)
    estimator.train(train_spec.input_fn, hooks=train_spec.hooks, max_steps=train_spec.max_steps,
                    saving_listeners=[*train_spec.saving_listeners, listener])
    path = estimator.latest_checkpoint()
    step = _checkpoint_step(path)
    if listener.result is None or listener.result["global_step"] != step:
        listener.evaluate(step, final=True)
    elif not listener.final_exported:
        listener.exports = exporters_lib.run_exporters(
            estimator, eval_spec.exporters, path, listener.result, True)
    return listener.result, listener.exports
