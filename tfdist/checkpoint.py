"""Checkpoints that are safe across workers, and preemption handling, for every route.

In a multi-worker job every worker must take part in a save (reading synchronised variables may
run collectives), but only the chief may write into the model directory: two processes writing
one file corrupt it. So the chief writes to `model_dir` and every other worker writes to a
private temporary directory that it deletes straight after. All workers restore from the chief's
directory (a shared filesystem, as with TF's own multi-worker checkpointing).

Preemption: `PreemptionWatcher` turns SIGTERM into a flag that the training loop checks between
loop calls; the workers agree on it (one tiny all-reduce), save at the same step and exit with
`PREEMPTED_EXIT_CODE`, so a restarted job resumes from exactly that step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfdist import checkpoint_recovery
from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import export as export_lib
from tfdist import strategy as strategy_lib

# 128 + SIGTERM, what a shell reports for a process ended by SIGTERM: launchers restart on it.
PREEMPTED_EXIT_CODE = 143
# For fault-injection tests only: a directory; each save, once its files are written and before
# the `checkpoint` state file records it, creates `saving-<step>` there and waits for
# `release-<step>` (a test kills the process meanwhile).
HOLD_SAVE_ENV = "TFDIST_TEST_HOLD_SAVE"
# For fault-injection runs only (tfdist-faults): a directory; after each save, every task writes
# the floating-point tensors it saved (weights, optimizer slots) there as `<task>.npz`, so the
# workers' final weights can be compared (other workers than the chief keep no checkpoint).
DUMP_WEIGHTS_ENV = "TFDIST_TEST_DUMP_WEIGHTS"


class CheckpointError(ValueError):
    """A model directory or checkpoint cannot be used."""


class Preempted(SystemExit):
    """Raised after a preemption checkpoint was saved; exits the program with code 143."""

    def __init__(self, step: int, path: str | None, *, saved: bool = True) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.step = step
        self.path = path  # None on non-chief workers: they save to a scratch directory
        self.saved = saved  # False for an evaluator: it has nothing of its own to save

    def __str__(self) -> str:
        if not self.saved:
            return f"preempted by SIGTERM at step {self.step}"
        return f"preempted by SIGTERM; saved a checkpoint at step {self.step} ({self.path})"


def validate_model_dir(model_dir: str) -> str:
    """Checks that `model_dir` can hold checkpoints and creates it.

    Args:
        model_dir: Directory for checkpoints, summaries and exports.

    Returns:
        The directory path.

    Raises:
        CheckpointError: The path is a file or cannot be created or written.
    """
    model_dir = checks.path("model_dir", model_dir, what="a directory path", error=CheckpointError)
    if tf.io.gfile.exists(model_dir) and not tf.io.gfile.isdir(model_dir):
        raise CheckpointError(
            f"model_dir={model_dir!r} is a file, not a directory. Pass a directory path "
            "(it is created if missing), or move the file away."
        )
    try:
        tf.io.gfile.makedirs(model_dir)
    except (OSError, tf.errors.OpError) as err:
        raise CheckpointError(
            f"Cannot create model_dir={model_dir!r}: {err}. Pass a writable directory."
        ) from None
    if "://" not in model_dir and not os.access(model_dir, os.W_OK):
        raise CheckpointError(
            f"model_dir={model_dir!r} is not writable by this process. Pass a writable directory."
        )
    return model_dir


class TaskDir:
    """Where this task writes what the chief writes to `directory`: the one "chief writes" rule.

    On the chief, `directory` itself (validated and created now). On any other task, a private
    scratch directory per `acquire()`, deleted by `release()`: the other workers must do the same
    work as the chief (a save may read synchronised variables, which runs collectives), but two
    processes writing one file corrupt it. Used by `CheckpointManager` and every callback of
    `tfdist.keras.callbacks`.

    Args:
        directory: The chief's directory (a shared filesystem in multi-worker jobs).
        cluster: This task's place in the cluster.
        purpose: Names the scratch directories (``tfdist-<purpose>-<task>-<id>-...``).

    Raises:
        CheckpointError: On the chief, `directory` is a file or cannot be created or written.

    Example:

    ```python
    target = TaskDir(log_dir, cluster, purpose="summaries")
    with target as path:  # log_dir on the chief; a fresh scratch directory elsewhere
        write_everything_into(path)
    ```
    """

    def __init__(self, directory: str, cluster: cluster_lib.ClusterInfo, *,
                 purpose: str = "checkpoint") -> None:
        self.cluster = cluster
        self.directory = validate_model_dir(directory) if cluster.is_chief else directory
        self._prefix = f"tfdist-{purpose}-{cluster.task_type}-{cluster.task_id}-"
        self._scratch: str | None = None

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    def acquire(self) -> str:
        """The directory to write now: `directory` on the chief, else a fresh scratch directory."""
        if self.cluster.is_chief:
            return self.directory
        self.release()
        self._scratch = tempfile.mkdtemp(prefix=self._prefix)
        return self._scratch

    def release(self) -> None:
        """Deletes the scratch directory, if any (nothing to do on the chief)."""
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> str:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class CheckpointManager:
    """Saves and restores a `tf.train.Checkpoint` from every worker; only the chief writes `model_dir`.

    Args:
        checkpoint: What to save (model, optimizer, global step, ...).
        model_dir: The chief's checkpoint directory, shared by all workers for restores.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.
        max_to_keep: Checkpoints kept in `model_dir`. Defaults to 5.

    Example:

    ```python
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    manager = tfdist.checkpoint.CheckpointManager(ckpt, "/tmp/run")
    manager.restore_latest()
    manager.save(step=100)
    ```
    """

    def __init__(
        self,
        checkpoint: tf.train.Checkpoint,
        model_dir: str,
        *,
        cluster: cluster_lib.ClusterInfo | None = None,
        max_to_keep: int = 5,
    ) -> None:
        checks.positive_int("max_to_keep", max_to_keep, error=CheckpointError)
        self._checkpoint = checkpoint
        self._cluster = cluster or cluster_lib.resolve()
        self._target = TaskDir(model_dir, self._cluster)
        self.model_dir = self._target.directory
        self._max_to_keep = max_to_keep
        self._chief_manager = (
            tf.train.CheckpointManager(checkpoint, self.model_dir, max_to_keep=max_to_keep)
            if self._cluster.is_chief
            else None
        )

    @property
    def is_chief(self) -> bool:
        return self._cluster.is_chief

    def latest(self) -> str | None:
        """Path prefix of the newest checkpoint in `model_dir`, or `None`."""
        return tf.train.latest_checkpoint(self.model_dir)

    def save(self, step: int) -> str | None:
        """Saves on every worker; returns the chief's checkpoint path (`None` on other workers).

        A checkpoint becomes the latest only once all its files are written (the `checkpoint`
        state file is updated last, atomically), so a kill during a save leaves the previous
        one as the latest.

        Args:
            step: The global step, used as the checkpoint number.

        Raises:
            CheckpointError: The disk is full (the message names the directory and the space
                needed; the partial checkpoint is removed, the previous one stays).
        """
        options = _hold_save_options(step)
        if self._chief_manager is not None:
            try:
                path = self._chief_manager.save(checkpoint_number=step, options=options)
            except (tf.errors.OpError, OSError) as err:
                _raise_if_no_space(err, self.model_dir, step, self.latest())
                raise
            logging.info("tfdist.checkpoint: saved %s", path)
            _dump_weights(path, step, self._cluster)
            return path
        # Same save on a private directory, so collectives inside the save match the chief's.
        with self._target as scratch:
            try:
                path = tf.train.CheckpointManager(self._checkpoint, scratch, max_to_keep=1).save(
                    checkpoint_number=step, options=options)
            except (tf.errors.OpError, OSError) as err:
                _raise_if_no_space(err, scratch, step, self.latest())
                raise
            _dump_weights(path, step, self._cluster)
        return None

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint in `model_dir`, if any.

        A newer checkpoint that cannot be read (truncated, no index, an unfinished save) is
        skipped with one log line; the chief moves it into ``model_dir/unreadable/``
        (`tfdist.checkpoint_recovery`).

        Returns:
            The restored path, or `None` when there is no checkpoint yet.

        Raises:
            CheckpointError: There are checkpoints and none can be read (nothing is moved).
        """
        path, skipped = _find_restorable(self.model_dir, self._cluster, restore=self._restore_all)
        if path is None:
            return None
        if skipped and self._chief_manager is not None:
            # The state file was rewritten: the manager must not list the moved ones again.
            self._chief_manager = tf.train.CheckpointManager(
                self._checkpoint, self.model_dir, max_to_keep=self._max_to_keep)
        logging.info("tfdist.checkpoint: restored %s", path)
        return path

    def _restore_all(self, path: str) -> bool:
        """Restores `path`; True when every value was read now (none waits for a variable)."""
        status = self._checkpoint.restore(path)
        status.expect_partial()
        try:
            status.assert_consumed()
        except AssertionError:
            return False  # values for variables built later (e.g. optimizer slots): unchecked
        return True

    def restore(self, path: str) -> None:
        """Restores a given checkpoint (e.g. one that the evaluator found)."""
        self._checkpoint.restore(path).expect_partial()


def holds_input_position(path: str, name: str = "train_input") -> bool:
    """True if the checkpoint at `path` saved a `tf.data` iterator under `name`.

    Checkpoints made by distributed iterators (several replicas or workers) never do, so a
    run resumed at another size from one cannot restore its input position.
    """
    key = f"{name}/.ATTRIBUTES/ITERATOR_STATE"
    try:
        return tf.train.load_checkpoint(path).has_tensor(key)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError):
        return False


def newest_restorable(directory: str, cluster: cluster_lib.ClusterInfo | None = None) -> str | None:
    """The newest checkpoint of `directory` that can be read; the one every route restores.

    Newer unreadable ones (truncated, no index, an unfinished save) are skipped with one log
    line each; on the chief they are moved into ``directory/unreadable/``.

    Args:
        directory: A checkpoint directory.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.

    Returns:
        The checkpoint's path prefix, or `None` when there is none.

    Raises:
        CheckpointError: There are checkpoints and none can be read (nothing is moved).
    """
    return _find_restorable(directory, cluster or cluster_lib.resolve())[0]


def _find_restorable(directory: str, cluster: cluster_lib.ClusterInfo,
                     restore: checkpoint_recovery.Restore | None = None) -> tuple[str | None, list]:
    try:
        return checkpoint_recovery.find_restorable(directory, move_aside=cluster.is_chief,
                                                   restore=restore)
    except checkpoint_recovery.UnreadableCheckpointsError as err:
        raise CheckpointError(str(err)) from None


def _hold_save_options(step: int) -> tf.train.CheckpointOptions | None:
    """With `HOLD_SAVE_ENV` set (tests): a write callback that waits before the save is recorded."""
    hold_dir = os.environ.get(HOLD_SAVE_ENV)
    if not hold_dir:
        return None

    def hold(path: str) -> None:
        del path
        with open(os.path.join(hold_dir, f"saving-{step}"), "w"):
            pass
        while not os.path.exists(os.path.join(hold_dir, f"release-{step}")):
            time.sleep(0.05)

    return tf.train.CheckpointOptions(experimental_write_callbacks=[hold])


def _dump_weights(path: str, step: int, cluster: cluster_lib.ClusterInfo) -> None:
    """With `DUMP_WEIGHTS_ENV` set (fault injection): this task's saved float tensors, as npz."""
    directory = os.environ.get(DUMP_WEIGHTS_ENV)
    if not directory:
        return
    reader = tf.train.load_checkpoint(path)
    arrays = {key: reader.get_tensor(key)
              for key, dtype in reader.get_variable_to_dtype_map().items() if dtype.is_floating}
    name = f"{cluster.task_type}-{cluster.task_id}"
    temporary = os.path.join(directory, f".tmp-{name}.npz")
    np.savez(temporary, __step__=np.int64(step), **arrays)
    os.replace(temporary, os.path.join(directory, f"{name}.npz"))


def _is_no_space(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return "No space left on device" in str(err)


def _files_size(prefix: str) -> int:
    paths = tf.io.gfile.glob(prefix + ".*")
    for temp in tf.io.gfile.glob(prefix + "_temp"):
        paths += [os.path.join(temp, name) for name in tf.io.gfile.listdir(temp)]
    return sum(tf.io.gfile.stat(p).length for p in paths if not tf.io.gfile.isdir(p))


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} KB"


def _raise_if_no_space(err: BaseException, directory: str, step: int, previous: str | None) -> None:
    """Turns a full disk into one line naming `directory` and the space a checkpoint needs.

    The failed save's partial files are removed (they are this save's own, never a good
    checkpoint), which also gives the space back.
    """
    if not _is_no_space(err):
        return
    prefix = os.path.join(directory, f"{checkpoint_recovery.CHECKPOINT_NAME}-{step}")
    written = _files_size(prefix)
    for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp"):
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    if previous is not None:
        needed = f"about {_megabytes(_files_size(previous))} (the size of {os.path.basename(previous)})"
        kept = f"; {os.path.basename(previous)} is intact"
    else:
        needed, kept = f"more than the {_megabytes(written)} written before the disk filled", ""
    free = (f", {_megabytes(shutil.disk_usage(directory).free)} free"
            if "://" not in directory and os.path.isdir(directory) else "")
    raise CheckpointError(
        f"No space left on device saving checkpoint {os.path.basename(prefix)} in {directory!r}: "
        f"it needs {needed}{free}{kept}. Free space there or pass a model_dir on a larger disk."
    ) from None


def export_model(model: Any, model_dir: str) -> dict[str, str]:
    """Deprecated: use `tfdist.export.export_model` (a no-op returning ``{}`` off the chief)."""
    warnings.warn("tfdist.checkpoint.export_model moved to tfdist.export.export_model",
                  DeprecationWarning, stacklevel=2)
    return export_lib.export_model(model, model_dir)


# The chief's "training has ended" marker, read by evaluator tasks (the estimator's
# `train_and_evaluate`, `tfdist.keras.SidecarEvaluator`): JSON `{"global_step": N, ...}`.
DONE_FILE = "training_done"


def write_done_marker(directory: str, global_step: int, **extra: Any) -> str:
    """Writes `directory/training_done` atomically (written to a temporary name, then renamed).

    Call it on the chief only, after the last checkpoint of the run was saved.

    Args:
        directory: The checkpoint directory the evaluator watches.
        global_step: The training step at which training ended.
        **extra: More JSON-serialisable fields (e.g. the last checkpoint's name).

    Returns:
        The marker's path.
    """
    path = os.path.join(directory, DONE_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump({"global_step": int(global_step), **extra}, f)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path


def read_done_marker(directory: str) -> dict[str, Any] | None:
    """The marker `write_done_marker` wrote in `directory`, or `None` while there is none."""
    try:
        with tf.io.gfile.GFile(os.path.join(directory, DONE_FILE)) as f:
            marker = json.load(f)
        int(marker["global_step"])
        return marker
    except (tf.errors.NotFoundError, ValueError, KeyError, TypeError, OSError):
        return None


def remove_done_marker(directory: str) -> None:
    """Removes a marker left by an earlier run (call it on the chief when training starts)."""
    path = os.path.join(directory, DONE_FILE)
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


_AGREE_FNS: dict[int, Any] = {}


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """True on every worker when `flag` is true on any (one tiny all-reduce across workers).

    Lets workers take the same decision at the same step (save now, stop now), which collective
    training needs: a worker that saves or stops alone leaves the others waiting in a collective.
    Every worker must call it at the same point.

    Args:
        strategy: The training strategy. With one worker no communication happens.
        flag: This worker's vote.
    """
    # Under ParameterServerStrategy only the chief (the coordinator) runs the loop and decides.
    if strategy_lib.num_workers(strategy) == 1 or isinstance(
            strategy, tf.distribute.ParameterServerStrategy):
        return bool(flag)
    fn = _AGREE_FNS.get(id(strategy))
    if fn is None:

        @tf.function
        def agree(value):
            per_replica = strategy.run(tf.identity, args=(value,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        fn = _AGREE_FNS[id(strategy)] = agree
    return int(fn(tf.constant(int(bool(flag)), tf.int32))) > 0


class PreemptionWatcher:
    """Turns SIGTERM into a flag the training loop checks between loop calls.

    Installed only from the main thread (Python delivers signals there); elsewhere it is inert.
    Use `watching()` around a run so the previous handler is back when it ends, however it
    ends; `install()` / `close()` do the same by hand.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: Any = None
        self._installed = False

    def install(self) -> PreemptionWatcher:
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    @contextlib.contextmanager
    def watching(self, enabled: bool = True) -> Iterator[PreemptionWatcher]:
        """Installs the handler for the duration of a `with` block, then restores the previous one.

        Nested blocks are fine: only the outermost one that installed the handler restores it.

        Args:
            enabled: When False, the block runs with the process's handler untouched.
        """
        installed_here = enabled and not self._installed
        if installed_here:
            self.install()
        try:
            yield self
        finally:
            if installed_here:
                self.close()

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        logging.warning("tfdist: SIGTERM received; saving a checkpoint at the next loop boundary")
        self._event.set()

    @property
    def requested(self) -> bool:
        """True once this process received SIGTERM."""
        return self._event.is_set()

    def agreed(self, strategy: tf.distribute.Strategy) -> bool:
        """True when any worker of the job received SIGTERM (all workers get the same answer).

        Args:
            strategy: The training strategy; multi-worker strategies all-reduce the flag.
        """
        return any_worker(strategy, self.requested)

    def close(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
