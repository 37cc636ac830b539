"""Which checkpoint of a directory can be restored; unreadable ones are moved aside, never lost.

A crash during a copy, a full disk or a kill during a save can leave the newest checkpoint
truncated, without its index, or as an unfinished ``ckpt-N_temp`` directory. `find_restorable`
reads the candidates newest first (every tensor, so truncation and checksum errors show now,
not at a deferred restore in the middle of the first step) and returns the newest good one.
Given a `restore` function it restores each candidate as it checks it: a sound checkpoint
whose every value went into an existing variable is then read once, not twice.
On the chief, the bad ones newer than it are moved into ``<directory>/unreadable/`` with one
log line each, and the ``checkpoint`` state file is rewritten to match; other workers only skip
them (all workers read the same files, so they pick the same checkpoint). When there are
checkpoints but none is readable, nothing is moved and `UnreadableCheckpointsError` names the
directory and what was found: training from scratch must be the user's decision.

Shared by every route through `tfdist.checkpoint.CheckpointManager.restore_latest`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable

import tensorflow as tf
from absl import logging

CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's default prefix, which tfdist uses
UNREADABLE_DIR = "unreadable"
MISSING = "its files are missing"
UNFINISHED = "an unfinished save: the checkpoint state file does not record it"
_NUMBERED = re.compile(rf"^{CHECKPOINT_NAME}-(\d+)(?:\.index|\.data-\d+-of-\d+|_temp)$")
# What reading a damaged checkpoint raises: OpError (not found, data loss, checksum),
# IndexError ("Read less bytes than requested"), ValueError (a bad index).
_OP_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]")
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError, RuntimeError)
Restore = Callable[[str], bool]


class UnreadableCheckpointsError(ValueError):
    """A directory has checkpoints, and none of them can be read."""


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """A checkpoint that cannot be restored, and why."""

    prefix: str
    reason: str

    @property
    def name(self) -> str:
        return os.path.basename(self.prefix)


def unreadable_reason(prefix: str) -> str | None:
    """Why the checkpoint at `prefix` cannot be restored, or `None` when every tensor reads back.

    Args:
        prefix: A checkpoint path prefix (``.../ckpt-100``).
    """
    if not tf.io.gfile.exists(prefix + ".index"):
        if tf.io.gfile.glob(prefix + ".data-*"):
            return "its index file is missing"
        if tf.io.gfile.isdir(prefix + "_temp"):
            return f"an unfinished save (only {os.path.basename(prefix)}_temp/)"
        return MISSING
    try:
        reader = tf.train.load_checkpoint(prefix)
        with tf.device("/cpu:0"):
            for key, dtype in reader.get_variable_to_dtype_map().items():
                # Reads each tensor as a restore does (variants too, e.g. an input iterator's
                # state), checking its size and checksum, one at a time.
                tf.raw_ops.RestoreV2(prefix=prefix, tensor_names=[key], shape_and_slices=[""],
                                     dtypes=[dtype])
    except READ_ERRORS as err:
        # One short line: TF's messages repeat the full path and may run over several lines.
        message = (str(getattr(err, "message", err)).strip().splitlines() or [""])[0]
        message = _OP_NOISE.sub("", message).strip()
        message = message.replace(prefix, os.path.basename(prefix))[:200]
        return f"{type(err).__name__}: {message}" if message else type(err).__name__
    return None


def _number(prefix: str) -> int:
    tail = os.path.basename(prefix).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def _on_disk(directory: str) -> dict[str, bool]:
    """``ckpt-N`` prefixes with files in `directory`, each with whether it has an index."""
    found: dict[str, bool] = {}
    if tf.io.gfile.isdir(directory):
        for name in tf.io.gfile.listdir(directory):
            match = _NUMBERED.match(name.rstrip("/"))
            if match:
                prefix = os.path.join(directory, f"{CHECKPOINT_NAME}-{match.group(1)}")
                found[prefix] = found.get(prefix, False) or name.endswith(".index")
    return found


def _newest_first(prefixes: Iterable[str]) -> list[str]:
    return sorted(set(prefixes), key=lambda p: (_number(p), p), reverse=True)


def candidates(directory: str) -> tuple[list[str], list[str]]:
    """``(recorded, unfinished)`` checkpoint prefixes of `directory`, each newest first.

    A save is complete once the ``checkpoint`` state file records it (TensorFlow updates it,
    atomically, after the files are written). Recorded: what the state file lists. Unfinished:
    ``ckpt-N`` files newer than all of those (a save killed before it was recorded). Without a
    readable state file, checkpoints with an index count as recorded, the rest as unfinished.
    """
    on_disk = _on_disk(directory)
    state = tf.train.get_checkpoint_state(directory)  # None when missing or unparsable
    listed = list(state.all_model_checkpoint_paths) if state is not None else []
    if state is not None and state.model_checkpoint_path:
        listed.append(state.model_checkpoint_path)
    # Already resolved: get_checkpoint_state joins the file's relative entries onto `directory`
    # (as `_on_disk` does), so a relative `directory` must not be joined on a second time.
    if listed:
        newest = max(_number(p) for p in listed)
        return (_newest_first(listed),
                _newest_first(p for p in on_disk if p not in listed and _number(p) > newest))
    return (_newest_first(p for p, indexed in on_disk.items() if indexed),
            _newest_first(p for p, indexed in on_disk.items() if not indexed))


def _restore_or_reason(prefix: str, restore: Restore) -> str | None:
    """Restores `prefix`; why it is unreadable, or `None` when it was restored and is sound.

    Reads the files once when `restore` used every value (its own reads verify each tensor's
    size and checksum); only when it could not (values left for variables not created yet, read
    later, mid-step) or failed are they read again by `unreadable_reason`. A failure of a
    readable checkpoint (a shape mismatch: the wrong model) is raised as it is.
    """
    if not tf.io.gfile.exists(prefix + ".index"):
        return unreadable_reason(prefix)  # no index: nothing to read
    try:
        if restore(prefix):
            return None
    except READ_ERRORS:
        reason = unreadable_reason(prefix)
        if reason is None:
            raise
        return reason
    return unreadable_reason(prefix)


def find_restorable(directory: str, *, move_aside: bool,
                    restore: Restore | None = None) -> tuple[str | None, list[Unreadable]]:
    """The newest readable checkpoint in `directory`, and what was skipped to get to it.

    Args:
        directory: A checkpoint directory (``tf.train.CheckpointManager`` layout).
        move_aside: Move what is skipped into ``directory/unreadable/`` and rewrite the state
            file (the chief only: the one task that writes `directory`).
        restore: `restore(prefix) -> bool`, to restore each candidate while checking it (then
            a sound one is read once): True when it used every value of the checkpoint. A later
            candidate's restore overrides what a failed one restored. Defaults to checking only.

    Returns:
        ``(path, skipped)``: `path` is `None` when there is no complete checkpoint at all.

    Raises:
        UnreadableCheckpointsError: There are recorded checkpoints, and none can be read.
    """
    recorded, unfinished = candidates(directory)
    skipped = [Unreadable(p, UNFINISHED) for p in unfinished]
    chosen, gone = None, False
    for prefix in recorded:
        reason = unreadable_reason(prefix) if restore is None else _restore_or_reason(prefix, restore)
        if reason is None:
            chosen = prefix
            break
        # Recorded but gone (deleted by hand, or just moved aside by the chief): skipped quietly.
        if reason == MISSING:
            gone = True
        else:
            skipped.append(Unreadable(prefix, reason))
    damaged = [s for s in skipped if s.reason != UNFINISHED]
    if chosen is None and damaged:
        found = "; ".join(f"{s.name} ({s.reason})" for s in damaged)
        raise UnreadableCheckpointsError(
            f"No readable checkpoint in {directory!r}: found {found}. Nothing was moved. "
            "Restore good copies, or move these away (or pass a new model_dir) to train "
            "from scratch.")
    instead = (f"restoring {os.path.basename(chosen)} instead" if chosen
               else "no checkpoint before it: training starts from scratch")
    for bad in skipped:
        if move_aside:
            logging.warning("tfdist.checkpoint: %s is unreadable (%s); moved it to %s, %s",
                            bad.name, bad.reason, _move_aside(directory, bad.prefix), instead)
        else:
            logging.warning("tfdist.checkpoint: %s is unreadable (%s); %s", bad.name, bad.reason,
                            instead)
    if move_aside and chosen is not None and (damaged or gone):
        _rewrite_state(directory, chosen)
    return chosen, skipped


def _move_aside(directory: str, prefix: str) -> str:
    """Moves every file of `prefix` into a fresh ``directory/unreadable/<name>[.k]/``."""
    name = os.path.basename(prefix)
    base = os.path.join(directory, UNREADABLE_DIR, name)
    target, k = base, 1
    while tf.io.gfile.exists(target):
        target, k = f"{base}.{k}", k + 1
    tf.io.gfile.makedirs(target)
    for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp"):
        tf.io.gfile.rename(path, os.path.join(target, os.path.basename(path)))
    return target


def _rewrite_state(directory: str, chosen: str) -> None:
    """Points the state file at `chosen`, listing only the checkpoints still there up to it.

    Written as the text proto `tf.train.CheckpointManager` reads (keeping the recorded save
    times, so it goes on rotating them), to a temporary name and renamed into place.
    """
    state = tf.train.get_checkpoint_state(directory)
    times = {}
    last_preserved = 0.0
    if state is not None:
        times = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps))
        last_preserved = state.last_preserved_timestamp
    kept = sorted((p for p in candidates(directory)[0]
                   if _number(p) <= _number(chosen) and tf.io.gfile.exists(p + ".index")),
                  key=_number)
    lines = [f'model_checkpoint_path: "{os.path.basename(chosen)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
    for p in kept:  # a save time for each, or the manager stops rotating (or listing) them
        when = times.get(p) or tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9
        lines.append(f"all_model_checkpoint_timestamps: {max(when, last_preserved + 1e-3)!r}")
    lines.append(f"last_preserved_timestamp: {last_preserved!r}")
    path = os.path.join(directory, "checkpoint")
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
