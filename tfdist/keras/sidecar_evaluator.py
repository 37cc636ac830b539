"""`SidecarEvaluator`: an evaluator task that evaluates each new checkpoint of a training job.

Keras 3 has no `SidecarEvaluator` (tf_keras had `tf.keras.utils.SidecarEvaluator`); this one
keeps its constructor and `start()`, and reads what tfdist's training jobs write:

- **ModelCheckpoint files** in `checkpoint_dir`: `*.weights.h5` (`save_weights_only=True`) and
  `*.keras` files whose name ends in a number (`ckpt-{epoch}.weights.h5`). The number orders
  them. Files whose name starts with `.` are skipped: `tfdist.keras.callbacks.ModelCheckpoint`
  writes each file under a hidden temporary name and renames it when complete.
- **tf.train checkpoints** (`tf.train.Checkpoint(model=...)` saved by a `CheckpointManager`,
  `tfdist.checkpoint.CheckpointManager` or `tfdist.loop.Controller`): read through the
  directory's `checkpoint` state file, which TensorFlow updates only after a save is complete.
  Their number (`ckpt-<N>`) is the global step for tfdist's managers.

It stops (the same protocol as `tfdist.estimator.train_and_evaluate`'s evaluator):

- after evaluating a checkpoint numbered `>= max_evaluations` (tf_keras's contract), or
- once the directory holds the chief's `training_done` marker (written when `fit` ends by
  `tfdist.keras.callbacks.ModelCheckpoint`, after its last save) and the newest checkpoint has
  been evaluated, or
- after `timeout` seconds without a new checkpoint, if given.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checks

_FILE_SUFFIXES = (".weights.h5", ".keras")
_NUMBER = re.compile(r"(\d+)$")


class SidecarEvaluator:
    """Evaluates the newest checkpoint in `checkpoint_dir` each time a new one appears.

    Run it in an evaluator task (TF_CONFIG type `"evaluator"`, outside the training cluster),
    without a multi-worker strategy. Each evaluation runs `model.evaluate(data, steps=steps)`
    and writes its loss and metrics as TensorBoard scalars to `log_dir`, at the checkpoint's
    number as the step. Checkpoints written while an evaluation runs are skipped except the
    newest, as in tf_keras.

    Args:
        model: A compiled, built `keras.Model` with the architecture of the trained one.
        data: Evaluation data, anything `model.evaluate` takes as `x` (e.g. a `tf.data.Dataset`).
        checkpoint_dir: The directory the training job saves checkpoints into.
        steps: Batches per evaluation. Defaults to `None` (the whole of `data`; pass `steps` for
            a repeated dataset).
        max_evaluations: Stop after evaluating a checkpoint whose number is at least this (the
            number of epochs, for `ckpt-{epoch}` files). Defaults to `None`: stop on the
            `training_done` marker instead.
        callbacks: Keras callbacks passed to `model.evaluate`. Defaults to none.
        log_dir: Where the TensorBoard scalars go. Defaults to `checkpoint_dir/eval`.
        poll_secs: Seconds between looks at `checkpoint_dir`. Defaults to 1.
        timeout: Stop after this many seconds without a new checkpoint. Defaults to `None`
            (wait as long as it takes).

    Raises:
        TypeError: `model` is not a `keras.Model`, or `callbacks` not a list of callbacks.
        ValueError: Invalid `checkpoint_dir`, `steps`, `max_evaluations`, `poll_secs` or
            `timeout`; `model` not compiled or not built.

    Example:

    ```python
    # Training job (chief and workers):
    model.fit(dataset, epochs=3, callbacks=[tfdist.keras.callbacks.ModelCheckpoint(
        os.path.join(checkpoint_dir, "ckpt-{epoch}.weights.h5"), save_weights_only=True)])
    # Evaluator task:
    tfdist.keras.SidecarEvaluator(model, eval_dataset, checkpoint_dir).start()
    ```
    """

    def __init__(
        self,
        model: keras.Model,
        data: Any,
        checkpoint_dir: str,
        steps: int | None = None,
        max_evaluations: int | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        *,
        log_dir: str | None = None,
        poll_secs: float = 1.0,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(model, keras.Model):
            raise TypeError(
                f"Invalid value for argument `model`. Received: model={type(model).__name__}. "
                "Pass a keras.Model."
            )
        if not model.compiled:
            raise ValueError(
                "Invalid value for argument `model`: it is not compiled. Call "
                "`model.compile(loss=..., metrics=[...])` before SidecarEvaluator."
            )
        if not model.built:
            raise ValueError(
                "Invalid value for argument `model`: it is not built, so no checkpoint can be "
                "loaded into it. Give it an input shape (keras.Input) or call `model.build(...)`."
            )
        checkpoint_dir = checks.path("checkpoint_dir", checkpoint_dir,
                                     what="the training job's directory")
        if tf.io.gfile.exists(checkpoint_dir) and not tf.io.gfile.isdir(checkpoint_dir):
            raise ValueError(
                f"Invalid value for argument `checkpoint_dir`: {checkpoint_dir!r} is a file. "
                "Pass the directory the training job saves checkpoints into."
            )
        checks.positive_int("steps", steps, allow_none=True)
        checks.positive_int("max_evaluations", max_evaluations, allow_none=True)
        checks.seconds("poll_secs", poll_secs)
        checks.seconds("timeout", timeout, allow_none=True, none_means="wait for training to end")
        callbacks = list(callbacks or [])
        bad = [c for c in callbacks if not isinstance(c, keras.callbacks.Callback)]
        if bad:
            raise TypeError(
                f"Invalid value for argument `callbacks`. Received an element {bad[0]!r}. "
                "Pass a list of keras.callbacks.Callback instances."
            )
        self.model = model
        self.data = data
        self.checkpoint_dir = checkpoint_dir
        self.steps = steps
        self.max_evaluations = max_evaluations
        self.callbacks = callbacks
        self.log_dir = log_dir or os.path.join(checkpoint_dir, "eval")
        self.poll_secs = float(poll_secs)
        self.timeout = timeout
        self.evaluated: list[tuple[int, str]] = []  # (number, path) of each evaluation
        self._checkpoint = tf.train.Checkpoint(model=model)

    def start(self) -> dict[str, float]:
        """Evaluates new checkpoints until training has ended (see the module docstring).

        Returns:
            The last evaluation's loss and metrics, plus `checkpoint_number` (empty if the
            timeout passed before any checkpoint appeared).
        """
        writer = tf.summary.create_file_writer(self.log_dir)
        results: dict[str, float] = {}
        last_number = -1
        waited_since = time.monotonic()
        try:
            while True:
                # The marker first: it is written after the last save, so a listing made after
                # seeing it holds the final checkpoint.
                done = checkpoint_lib.read_done_marker(self.checkpoint_dir)
                newest = latest_checkpoint(self.checkpoint_dir)
                if newest is not None and newest[0] > last_number:
                    number, path = newest
                    evaluated = self._evaluate(number, path, writer)
                    if evaluated is not None:
                        results, last_number = evaluated, number
                        waited_since = time.monotonic()
                        if self.max_evaluations is not None and number >= self.max_evaluations:
                            logging.info("SidecarEvaluator: evaluated checkpoint %d: done", number)
                            return results
                        continue  # look again at once: training may have saved meanwhile
                if done is not None and (newest is None or newest[0] <= last_number):
                    logging.info("SidecarEvaluator: training has ended (%s)", checkpoint_lib.DONE_FILE)
                    return results
                if self.timeout is not None and time.monotonic() - waited_since > self.timeout:
                    logging.warning("SidecarEvaluator: no new checkpoint in %.0f s; stopping",
                                    self.timeout)
                    return results
                time.sleep(self.poll_secs)
        finally:
            writer.close()

    def _evaluate(self, number: int, path: str, writer: Any) -> dict[str, float] | None:
        """Loads and evaluates one checkpoint; `None` if it vanished while being read."""
        try:
            if path.endswith(_FILE_SUFFIXES):
                self.model.load_weights(path)
            else:
                self._checkpoint.restore(path).expect_partial()
        except (tf.errors.NotFoundError, tf.errors.DataLossError, OSError) as err:
            # Deleted (max_to_keep) between listing and reading, or a file that a writer other
            # than tfdist's ModelCheckpoint is still writing: look again at the next poll.
            logging.info("SidecarEvaluator: could not read %s (%s); retrying", path, err)
            return None
        logging.info("SidecarEvaluator: evaluating %s", path)
        results = self.model.evaluate(
            self.data, steps=self.steps, callbacks=self.callbacks, verbose=0, return_dict=True)
        results = {k: float(v) for k, v in results.items()}
        with writer.as_default(step=number):
            for key, value in results.items():
                tf.summary.scalar(key, value)
        writer.flush()
        self.evaluated.append((number, path))
        logging.info("SidecarEvaluator: checkpoint %d: %s", number, results)
        return {**results, "checkpoint_number": float(number)}


def latest_checkpoint(checkpoint_dir: str) -> tuple[int, str] | None:
    """The highest-numbered complete checkpoint in `checkpoint_dir`, as `(number, path)`.

    Looks at ModelCheckpoint files (`<name><N>.weights.h5`, `<name><N>.keras`, not hidden) and
    at the tf.train checkpoints listed in the directory's `checkpoint` state file.
    """
    found: list[tuple[int, str]] = []
    try:
        names = tf.io.gfile.listdir(checkpoint_dir)
    except tf.errors.NotFoundError:
        return None
    for name in names:
        if name.startswith("."):
            continue  # being written (tfdist's ModelCheckpoint renames it when complete)
        suffix = next((s for s in _FILE_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            continue
        match = _NUMBER.search(name[: -len(suffix)])
        if match:
            found.append((int(match.group(1)), os.path.join(checkpoint_dir, name)))
    state = tf.train.get_checkpoint_state(checkpoint_dir)
    if state is not None:
        for path in state.all_model_checkpoint_paths:
            match = _NUMBER.search(path)
            if match:
                found.append((int(match.group(1)), path))
    return max(found) if found else None
