"""Route 1's outer loop: `Controller`, a thin adapter of `tfdist.outer_loop.OuterLoop`.

`Controller` keeps route 1's API (`train`, `evaluate`, `train_and_evaluate`,
`evaluate_continuously`, `export`) and runs a `Trainer` on the shared outer loop, which owns
the cadence, checkpoints, resume, summaries, progress, non-finite-loss policy, preemption and
the evaluator protocol. The `Trainer` is the loop's `TrainTarget` and `EvalTarget`; what is
route 1's own here is the export at the end and the learning rate in the training scalars.

Step counts follow Orbit: `train(steps)` trains *until* the global step reaches `steps`, so a
restarted job asked for the same `steps` finishes the same run.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import export as export_lib
from tfdist import outer_loop
from tfdist.loop.trainer import Trainer
from tfdist.outer_loop.controller import NONFINITE_ACTIONS  # noqa: F401 - part of the API
from tfdist.outer_loop.controller import NonFiniteLossError
from tfdist.outer_loop.controller import check_loop_options

__all__ = ["NONFINITE_ACTIONS", "Controller", "NonFiniteLossError"]


class _LearningRateSummary(outer_loop.TrainAction):
    """Adds the optimizer's learning rate to the training scalars after each loop call."""

    def __init__(self, loop: outer_loop.OuterLoop, trainer: Trainer) -> None:
        self._loop = loop
        self._trainer = trainer

    def after_train(self, step: int, logs: dict) -> None:
        del logs
        self._loop.write_summaries("train", step, {"learning_rate": self._trainer.learning_rate()})


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
            TF 2.21; there (and after a resume at another size) the input is rebuilt to start
            where it would be after the restored steps at this size. Defaults to `True`.

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
        check_loop_options(steps_per_loop=steps_per_loop, checkpoint_every=checkpoint_every,
                           on_nonfinite=on_nonfinite, max_nonfinite_restores=max_nonfinite_restores)
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
        self.checkpoint = tf.train.Checkpoint(**trainer.checkpoint_items(input_position=checkpoint_input))
        self.checkpoints = checkpoint_lib.CheckpointManager(
            self.checkpoint, self.model_dir, cluster=self.cluster, max_to_keep=max_to_keep
        )
        # The chief writes training and evaluation scalars; an evaluator task, its evaluations.
        kinds: tuple[str, ...] = ("train", "eval") if self.is_chief else ()
        if self.cluster.is_evaluator:
            kinds = ("eval",)
        self._loop = outer_loop.OuterLoop(
            trainer=trainer, evaluator=trainer, strategy=self.strategy,
            checkpoints=self.checkpoints, cluster=self.cluster, steps_per_loop=steps_per_loop,
            checkpoint_every=self.checkpoint_every,
            summary_dirs={k: os.path.join(self.model_dir, k) for k in (kinds if summaries else ())},
            progress=progress and self.is_chief, on_nonfinite=on_nonfinite,
            max_nonfinite_restores=max_nonfinite_restores, handle_preemption=handle_preemption,
        )
        self._train_actions = [_LearningRateSummary(self._loop, trainer)]
        self.restored_from = self._loop.resume()
        self._resume_input()

    @property
    def global_step(self) -> int:
        return self._loop.global_step

    def _resume_input(self) -> None:
        """After a resume, moves the input to the restored step unless its position was saved.

        A checkpoint made at another size (or by a distributed iterator) has no input position:
        the input then starts where it would be after that many steps at this size.
        """
        if self.trainer.train_data is None:
            return
        logging.info("tfdist.loop: global batch %d over %d replica(s), %d per replica, at step %d",
                     self.trainer.global_batch_size, self.strategy.num_replicas_in_sync,
                     self.trainer.train_data.per_replica_batch_size(self.strategy.num_replicas_in_sync),
                     self.global_step)
        if self.restored_from is None:
            return
        tracked = getattr(self.checkpoint, "train_input", None) is not None
        restored = tracked and checkpoint_lib.holds_input_position(self.restored_from)
        self.trainer.resume_input(self.global_step, position_restored=restored)

    @property
    def preemption_requested(self) -> bool:
        """True once SIGTERM arrived in this process while the controller handled it.

        The controller handles SIGTERM while `train`, `train_and_evaluate` or
        `evaluate_continuously` runs, or for a whole `with Controller(...)` block. This is
        this process's flag only; workers that must act on it together (it is what `train`
        agrees on at each loop boundary) combine it across the job with
        `tfdist.checkpoint.any_worker(strategy, controller.preemption_requested)`.
        """
        return self._loop.preemption_requested

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
        checks.positive_int("steps", steps)
        if self.trainer.train_data is None:
            raise ValueError("Controller.train needs a Trainer with train_data.")
        results = self._loop.train(steps, eval_interval=eval_interval,
                                   evaluate=lambda n: self.evaluate(n),
                                   train_actions=self._train_actions)
        if self.export_at_end:
            self.export()
        return results

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
        return self._loop.evaluate(steps)

    def train_and_evaluate(
        self, train_steps: int, eval_interval: int, eval_steps: int | None = None
    ) -> dict[str, float]:
        """Trains to `train_steps`, evaluating every `eval_interval` steps and at the end.

        This is a whole run: the chief removes an old `training_done` marker when it starts and
        writes one when it has ended, so evaluator tasks stop (`evaluate_continuously`).

        Returns:
            The final training results and the final evaluation results prefixed with `eval_`.
        """
        checks.positive_int("eval_interval", eval_interval)
        with self._loop.preemption_handled():
            self._loop.mark_training_started()
            results = self.train(train_steps, eval_interval=eval_interval)
            final = self.final_evaluation(results, eval_steps)
            self._loop.mark_training_ended()
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

        Training has also ended when the chief's `training_done` marker is in `model_dir` and
        the newest checkpoint was evaluated (the one protocol of `tfdist.outer_loop`).

        Args:
            train_steps: The training job's target step; the last evaluation is of that step.
            timeout: Give up after this many seconds without a new checkpoint. Defaults to
                waiting as long as it takes.
            eval_steps: Batches per evaluation. Defaults to all evaluation data.

        Returns:
            The results of the last evaluation (empty if none ran before the timeout).
        """
        return self._loop.evaluate_continuously(
            train_steps, timeout=timeout, eval_steps=eval_steps, evaluate=lambda n: self.evaluate(n))

    # --- outputs -------------------------------------------------------------------------------

    def export(self) -> dict[str, str]:
        """Saves `model.keras` and a SavedModel under `model_dir` (chief only).

        Returns:
            Paths written (empty on non-chief workers).
        """
        if not self.is_chief:
            return {}
        return export_lib.export_model(self.trainer.model, self.model_dir, cluster=self.cluster)

    def close(self) -> None:
        """Releases the training iterator and the SIGTERM handler of a `with` block.

        Safe to call twice; leaving `with Controller(...)` calls it.
        """
        self._loop.close()
        self.trainer.release_input()

    def __enter__(self) -> Controller:
        """Handles SIGTERM for the whole `with` block (also between `train` calls)."""
        self._loop.install_preemption_handler()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
