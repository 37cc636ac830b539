"""Multi-worker-safe Keras callbacks: `BackupAndRestore`, `ModelCheckpoint`, `TensorBoard`.

Drop-in replacements for the Keras 3 callbacks of the same names. In a multi-worker job every
worker runs them (saves may read synchronised variables), but only the chief writes to the
user's directories; other workers write to private temporary directories and delete them.
Keras 3's own `BackupAndRestore` has every worker write one file and corrupts itself (FINDINGS §1).
"""

from __future__ import annotations

import math
import os
import shutil
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import outer_loop
from tfdist.outer_loop import preemption as preemption_lib
from tfdist.compat import keras_checkpoint_paths
from tfdist.compat import keras_initial_epoch


# Backups `BackupAndRestore` keeps: the newest, and one to fall back to.
BACKUPS_KEPT = 2
# Files being written by `ModelCheckpoint` carry this prefix until they are complete.
TEMPORARY_PREFIX = ".tmp-"


def _parent_dir(filepath: str) -> str:
    return os.path.dirname(os.path.abspath(filepath)) or "."


class BackupAndRestore(keras.callbacks.Callback):
    """Backs training up so an interrupted `fit` resumes where it stopped, mid-epoch included.

    Every worker takes part in each backup; only the chief writes to `backup_dir`. On start, the
    newest backup is restored (model, optimizer, epoch and step in the epoch): `fit` continues at
    that epoch, and the batches of the interrupted epoch that were already trained are read and
    skipped, so the run ends with the same total number of optimizer steps. The input follows
    the step: the backup records how many batches the input had given, and a resumed `fit`
    reads that many from its data before training (with `steps_per_epoch`, Keras keeps one
    iterator across epochs, so that includes the earlier epochs' batches). A backup made by
    another number of workers or replicas restores the same way (one log line names both
    sizes); pass the same global batch. The two newest
    backups are kept: an unreadable newest one is moved aside (one log line) and the one
    before is restored. On SIGTERM (a preemption) during `fit`, every worker backs up at the
    same step and `fit` raises `tfdist.checkpoint.Preempted` (exit code 143), so a restarted
    job resumes at exactly that step. No backup is written
    until a step has trained again: a fresh model's lazily built variables (optimizer slots, and
    layers under the default strategy) are restored only then. After a successful `fit` the
    backup is deleted, as Keras does.

    Args:
        backup_dir: Directory for the backup (a shared filesystem in multi-worker jobs).
        save_freq: `"epoch"`, or back up every this many training steps (rounded to
            `steps_per_execution`). Defaults to `"epoch"`.
        delete_checkpoint: Delete the backup when `fit` finishes. Defaults to `True`.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.
        on_nonfinite: A NaN or infinite training loss, the policy of every route: `"stop"`
            raises `tfdist.outer_loop.NonFiniteLossError` naming the step; `"restore"` goes
            back to the newest backup and trains on (the batches since are skipped, so the run
            ends with fewer optimizer steps), at most `max_nonfinite_restores` times.
            Defaults to `None`: the loss is not checked, as in Keras.
        max_nonfinite_restores: Restores allowed with `"restore"`. Defaults to 3.
        handle_preemption: Catch SIGTERM during `fit` (main thread only): every
            `preemption_check_steps` the workers agree on it (one tiny all-reduce across
            workers), back up and raise `tfdist.checkpoint.Preempted`. Without it, a
            multi-worker job is deaf to SIGTERM: TensorFlow's coordination service installs a
            handler that only records it (docs/reliability.md). Defaults to `True`.
        preemption_check_steps: Training steps between two such checks (rounded up to whole
            `steps_per_execution` calls); a check costs a few milliseconds across workers.
            Defaults to 10.

    Raises:
        tfdist.checkpoint.CheckpointError: `backup_dir` is a file or not writable.
        ValueError: Invalid `save_freq`, `on_nonfinite` or `max_nonfinite_restores`.

    Example:

    ```python
    model.fit(dataset, epochs=3, steps_per_epoch=70,
              callbacks=[tfdist.keras.callbacks.BackupAndRestore("/tmp/backup")])
    ```
    """

    def __init__(
        self,
        backup_dir: str,
        save_freq: str | int = "epoch",
        delete_checkpoint: bool = True,
        *,
        cluster: cluster_lib.ClusterInfo | None = None,
        on_nonfinite: str | None = None,
        max_nonfinite_restores: int = 3,
        handle_preemption: bool = True,
        preemption_check_steps: int = 10,
    ) -> None:
        super().__init__()
        if on_nonfinite is not None:
            checks.one_of("on_nonfinite", on_nonfinite, outer_loop.NONFINITE_ACTIONS)
        checks.non_negative_int("max_nonfinite_restores", max_nonfinite_restores)
        self.on_nonfinite = on_nonfinite
        self.max_nonfinite_restores = max_nonfinite_restores
        checks.positive_int("preemption_check_steps", preemption_check_steps)
        self.handle_preemption = bool(handle_preemption)
        self.preemption_check_steps = int(preemption_check_steps)
        self._preemption = preemption_lib.StepPreemption(self.preemption_check_steps)
        self._nonfinite_restores = 0
        self._last_saved = 0
        if save_freq != "epoch" and not (checks.is_integer(save_freq) and int(save_freq) >= 1):
            raise ValueError(
                f"Invalid value for argument `save_freq`. Received: save_freq={save_freq!r}. "
                "Pass 'epoch' or a positive integer."
            )
        self._cluster = cluster or cluster_lib.resolve()
        # Validated on the chief now; the manager writes it there (scratch elsewhere).
        self.backup_dir = checkpoint_lib.TaskDir(backup_dir, self._cluster).directory
        self.save_freq = save_freq
        self.delete_checkpoint = delete_checkpoint
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_epoch")
        self._step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_step")
        # What the input had given (batches from the current iterator), whether Keras keeps one
        # iterator across epochs (1, 0, or -1 before an epoch boundary was seen), and the
        # replicas that made the backup; -1/0 in a backup made before these were recorded.
        self._input_position = tf.Variable(-1, dtype=tf.int64, trainable=False, name="backup_input")
        self._input_persists = tf.Variable(-1, dtype=tf.int64, trainable=False, name="backup_persists")
        self._replicas = tf.Variable(0, dtype=tf.int64, trainable=False, name="backup_replicas")
        self._input: _InputTracker | None = None
        self._manager: checkpoint_lib.CheckpointManager | None = None
        self._current_epoch = 0
        self._steps_since_save = 0
        self._skipped_call = False  # the train-function call that just ended only read batches
        self._restore_pending = False  # restored mid-epoch, and no step has trained since
        self.restored_epoch: int | None = None
        self.restored_step: int | None = None
        self.restored_input_position: int | None = None
        self.restored_replicas: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._steps_since_save = self._nonfinite_restores = 0
        self._skipped_call = self._restore_pending = False
        self.restored_epoch = self.restored_step = None
        self.restored_input_position = self.restored_replicas = None
        self._input_position.assign(-1)
        self._input_persists.assign(-1)
        self._replicas.assign(0)
        self._restore()
        self._preemption.close()  # still installed if an earlier `fit` ended with an error
        if self.handle_preemption:
            # Now, not at construction: the multi-worker strategy (created before `fit`) has
            # replaced the process's SIGTERM handler with TensorFlow's, which only records it.
            self._preemption.install()

    def _restore(self) -> None:
        model = self.model
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=model.optimizer, epoch=self._epoch, step=self._step_in_epoch,
            input_position=self._input_position, input_persists=self._input_persists,
            replicas=self._replicas,
        )
        # Two backups: when the newest is unreadable (a crash mid-copy, a full disk), restoring
        # falls back to the one before (`CheckpointManager.restore_latest`).
        self._manager = checkpoint_lib.CheckpointManager(
            checkpoint, self.backup_dir, cluster=self._cluster, max_to_keep=BACKUPS_KEPT
        )
        self._last_saved = int(model.optimizer.iterations.numpy())
        self._input = _InputTracker(self, model.train_function, model.steps_per_execution)
        model.train_function = self._input
        if self._manager.restore_latest() is None:
            return
        self._last_saved = int(model.optimizer.iterations.numpy())
        self.restored_epoch = int(self._epoch.numpy())
        self.restored_step = int(self._step_in_epoch.numpy())
        position, persists = int(self._input_position.numpy()), int(self._input_persists.numpy())
        # Batches of earlier epochs, when Keras keeps one iterator across them (steps_per_epoch);
        # an old backup (no position) or one not yet past an epoch boundary has none.
        earlier = position - self.restored_step if position >= 0 and persists == 1 else 0
        self.restored_input_position = earlier + self.restored_step
        self._input.persists = persists
        replicas = int(self._replicas.numpy()) or None
        self.restored_replicas = replicas
        now = _replicas(model)
        keras_initial_epoch.set_initial_epoch(model, self.restored_epoch)
        logging.info(
            "tfdist: BackupAndRestore: resuming at epoch %d, step %d in the epoch (global step "
            "%d), input at batch %d; the backup was made on %s replica(s), this run has %d%s",
            self.restored_epoch, self.restored_step, self._last_saved,
            self.restored_input_position, replicas or "an unrecorded number of", now,
            "" if replicas in (None, now) else " (resized)")
        if self.restored_step or earlier:
            # Variables a fresh model creates at its first traced step (the optimizer's slots,
            # and the layers' under the default strategy) are restored then, from the backup
            # just read: it must not be replaced (and rotated out) before a step has trained.
            self._restore_pending = True
            self._input.skip(earlier, self.restored_step)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._current_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._skipped_call:  # nothing trained: no step to count, and the restore is pending
            self._skipped_call = False
            return
        self._restore_pending = False
        try:
            if self.on_nonfinite is not None and not math.isfinite(float((logs or {}).get("loss", 0.0))):
                self._handle_nonfinite(float(logs["loss"]))  # type: ignore[index]
                return
            if self.handle_preemption:
                self._check_preemption(batch + 1)
        except BaseException:
            self._preemption.close()  # `fit` calls no `on_train_end` when a callback raises
            raise
        if isinstance(self.save_freq, str):  # "epoch", the only string __init__ accepts
            return
        self._steps_since_save += self.model.steps_per_execution
        if self._steps_since_save >= self.save_freq:
            self._save(self._current_epoch, batch + 1)

    def _handle_nonfinite(self, loss: float) -> None:
        model = self.model
        step = int(model.optimizer.iterations.numpy())
        message = f"Training loss is not finite by step {step} (loss: {loss})."
        details: dict[str, Any] = dict(step=step, loss=loss, last_saved=self._last_saved)
        if self.on_nonfinite == "stop":
            raise outer_loop.NonFiniteLossError(
                f"{message} Lower the learning rate, check the data, or pass "
                "on_nonfinite='restore' to go back to the last backup.", **details)
        self._nonfinite_restores += 1
        assert self._manager is not None, "on_train_begin creates the manager"
        path = self._manager.restore_latest()
        if path is None:
            raise outer_loop.NonFiniteLossError(
                f"{message} Giving up: there is no backup to restore.", **details)
        if self._nonfinite_restores > self.max_nonfinite_restores:
            raise outer_loop.NonFiniteLossError(
                f"{message} Giving up: {self.max_nonfinite_restores} restores did not help; "
                f"the model is back at {path}.", **details)
        # The epoch's running mean of the loss holds the NaN: start it afresh.
        model.reset_metrics()
        logging.warning("tfdist: %s Restored %s (restore %d of %d).", message, path,
                        self._nonfinite_restores, self.max_nonfinite_restores)

    def _check_preemption(self, step_in_epoch: int) -> None:
        # Every worker counts the same steps, so all ask at the same call: they save at the same
        # step and stop together.
        if self._preemption.agreed_after(self.model.steps_per_execution,
                                         self.model.distribute_strategy):
            self._preempt(step_in_epoch)

    def _preempt(self, step_in_epoch: int) -> None:
        self._save(self._current_epoch, step_in_epoch)
        assert self._manager is not None, "on_train_begin creates the manager"
        preempted = checkpoint_lib.Preempted(
            self._last_saved, self._manager.latest() if self._cluster.is_chief else None)
        logging.warning("tfdist: %s; exiting with code %d", preempted, preempted.code)
        raise preempted

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._restore_pending:  # the whole epoch was skipped: the backup still holds
            return
        self._save(epoch + 1, 0)

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        self._epoch.assign(epoch)
        self._step_in_epoch.assign(step_in_epoch)
        assert self._input is not None, "on_train_begin tracks the input"
        self._input_position.assign(self._input.position)
        self._input_persists.assign(self._input.persists)
        self._replicas.assign(_replicas(self.model))
        assert self._manager is not None, "on_train_begin creates the manager"
        self._last_saved = int(self.model.optimizer.iterations.numpy())
        self._manager.save(self._last_saved)
        self._steps_since_save = 0

    def on_train_end(self, logs: dict | None = None) -> None:
        self._preemption.close()
        keras_initial_epoch.set_initial_epoch(self.model, None)
        if self._input is not None:
            self.model.train_function = self._input.release()
            self._input = None
        if self.delete_checkpoint and self._cluster.is_chief and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)


def _replicas(model: keras.Model) -> int:
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return int(strategy.num_replicas_in_sync)


class _InputTracker:
    """Wraps `model.train_function`: counts the batches each iterator gave, skips on resume.

    Keras calls the train function with the epoch's iterator; a new iterator object means Keras
    re-iterates the data each epoch (no `steps_per_epoch`), the same one across an epoch
    boundary means it keeps one (`steps_per_epoch` given).
    """

    def __init__(self, backup: BackupAndRestore, train_function: Any, per_call: int) -> None:
        self._backup = backup
        self._train_function = train_function
        self._per_call = int(per_call)
        self._iterator: Any = None
        self._epoch: int | None = None
        self.position = 0
        self.persists = -1
        self._earlier = 0  # batches of earlier epochs to read at the first call
        self._to_skip = 0  # batches of the interrupted epoch, read in whole calls

    def skip(self, earlier: int, in_epoch: int) -> None:
        self._earlier, self._to_skip = earlier, in_epoch

    def release(self) -> Any:
        self._iterator = None
        return self._train_function

    def __call__(self, iterator: Any) -> Any:
        epoch = self._backup._current_epoch
        if iterator is not self._iterator:
            if self._iterator is not None and epoch != self._epoch:
                self.persists = 0
            self._iterator, self.position = iterator, 0
        elif epoch != self._epoch and self._epoch is not None:
            self.persists = 1
        self._epoch = epoch
        for _ in range(self._earlier):  # the earlier epochs' batches of a kept iterator
            next(iterator)
        self.position += self._earlier
        self._earlier = 0
        self.position += self._per_call
        if self._to_skip > 0:
            # Read the batches the interrupted run already trained on, without training again.
            for _ in range(self._per_call):
                next(iterator)
            self._to_skip -= self._per_call
            self._backup._skipped_call = True
            return {}
        return self._train_function(iterator)


class ModelCheckpoint(keras_checkpoint_paths.RoutedModelCheckpoint):
    """Keras `ModelCheckpoint` where only the chief writes `filepath`, atomically.

    Other workers save to a temporary directory that is deleted straight after, so every worker
    does the same work (and the same reads of synchronised variables) without racing on one file.
    `save_best_only` decides from the logs, which Keras reduces across workers, so all workers
    agree. Takes the same arguments as `keras.callbacks.ModelCheckpoint`, plus `cluster`.

    For an evaluator task (`tfdist.keras.SidecarEvaluator`) watching the directory, the chief
    writes each file under a hidden temporary name (`.tmp-<name>`) and renames it into place, so
    a reader never sees a half-written file; and when `fit` ends it writes the directory's
    `training_done` marker (`{"global_step": N, "checkpoint": "<last file>"}`), removing an old
    one when `fit` starts.

    Raises:
        tfdist.checkpoint.CheckpointError: The directory of `filepath` is a file or not writable.
    """

    def __init__(
        self, filepath: str, *args: Any, cluster: cluster_lib.ClusterInfo | None = None, **kwargs: Any
    ) -> None:
        self._cluster = cluster or cluster_lib.resolve()
        self._target = checkpoint_lib.TaskDir(_parent_dir(str(filepath)), self._cluster,
                                              purpose="modelcheckpoint")
        super().__init__(filepath, *args, **kwargs)
        self._pending: tuple[str, str] | None = None  # (temporary path, final path) on the chief
        self.last_saved: str | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self._cluster.is_chief:
            checkpoint_lib.remove_done_marker(_parent_dir(self.filepath))

    def route_path(self, path: str) -> str:
        if self._cluster.is_chief:
            directory, name = os.path.split(path)
            temporary = os.path.join(directory, TEMPORARY_PREFIX + name)
            self._pending = (temporary, path)
            return temporary
        return os.path.join(self._target.acquire(), os.path.basename(path))

    def after_save(self, succeeded: bool) -> None:
        if succeeded and self._pending is not None and tf.io.gfile.exists(self._pending[0]):
            tf.io.gfile.rename(*self._pending, overwrite=True)
            self.last_saved = self._pending[1]
        self._pending = None
        self._target.release()

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        if self._cluster.is_chief:
            checkpoint_lib.write_done_marker(
                _parent_dir(self.filepath), int(self.model.optimizer.iterations.numpy()),
                checkpoint=os.path.basename(self.last_saved) if self.last_saved else None)


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras `TensorBoard` that writes `log_dir` from the chief only.

    Other workers log to a temporary directory, deleted when training ends. Takes the same
    arguments as `keras.callbacks.TensorBoard`, plus `cluster`.

    Raises:
        tfdist.checkpoint.CheckpointError: `log_dir` is a file or not writable.
    """

    def __init__(
        self, log_dir: str = "logs", *args: Any, cluster: cluster_lib.ClusterInfo | None = None,
        **kwargs: Any
    ) -> None:
        self._cluster = cluster or cluster_lib.resolve()
        self._target = checkpoint_lib.TaskDir(str(log_dir), self._cluster, purpose="tensorboard")
        super().__init__(self._target.acquire(), *args, **kwargs)

    def on_train_end(self, logs: dict | None = None) -> None:
        super().on_train_end(logs)
        self._target.release()
