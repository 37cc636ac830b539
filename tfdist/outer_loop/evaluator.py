"""The one evaluator protocol: evaluate each new checkpoint until training has ended.

Every evaluator task of tfdist polls with `evaluate_continuously` (the custom-loop
`Controller.evaluate_continuously`, the Estimator's evaluator task and
`tfdist.keras.SidecarEvaluator`), and decides that training has ended in one way:

- it evaluated a checkpoint numbered at least `final_step` (the training job's target step,
  when the evaluator knows it), or
- the chief's `training_done` marker (`tfdist.checkpoint.write_done_marker`, written after the
  run's last save; `mark_training_ended` here) is in the directory, and the newest checkpoint
  listed after reading it has been evaluated. This covers runs that end early (input ends, a
  hook stops) and evaluators that were not told the target.

Checkpoints written while an evaluation runs are skipped except the newest.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib

Latest = Callable[[str], "tuple[int, str] | None"]
_NUMBER = re.compile(r"(\d+)$")


def latest_tf_checkpoint(directory: str) -> tuple[int, str] | None:
    """The newest `tf.train` checkpoint in `directory` as `(number, path)`, or `None`."""
    path = tf.train.latest_checkpoint(directory)
    if path is None:
        return None
    match = _NUMBER.search(os.path.basename(path))
    return (int(match.group(1)) if match else 0), path


def mark_training_started(directory: str) -> None:
    """Chief: a new run starts, so an evaluator must not stop on an old marker."""
    checkpoint_lib.remove_done_marker(directory)


def mark_training_ended(directory: str, global_step: int, **extra: Any) -> str:
    """Chief: the run has ended at `global_step`, after its last save (evaluators stop)."""
    return checkpoint_lib.write_done_marker(directory, global_step, **extra)


@dataclasses.dataclass
class EvaluationRun:
    """What `evaluate_continuously` did.

    Attributes:
        results: The last evaluation's logs (empty when none ran).
        path: The checkpoint of the last evaluation (`None` when none ran).
        reason: Why it stopped: `"final_step"`, `"training_done"`, `"timeout"` or `"preempted"`.
    """

    results: dict[str, Any]
    path: str | None
    reason: str


def evaluate_continuously(
    evaluate: Callable[[str, int], dict[str, Any] | None],
    directory: str,
    *,
    final_step: int | None = None,
    latest: Latest = latest_tf_checkpoint,
    timeout: float | None = None,
    start_delay_secs: float = 0.0,
    throttle_secs: float = 0.0,
    poll_secs: float = 1.0,
    should_stop: Callable[[], bool] | None = None,
    after_evaluation: Callable[[dict[str, Any], str, bool], Any] | None = None,
) -> EvaluationRun:
    """Evaluates each new checkpoint in `directory` until training has ended (module docstring).

    Args:
        evaluate: `evaluate(path, number) -> logs`, or `None` when the checkpoint could not be
            read (deleted by `max_to_keep` meanwhile): it is looked for again at the next poll.
        directory: The training job's checkpoint directory.
        final_step: The training job's target step. Defaults to `None` (the marker only).
        latest: `latest(directory) -> (number, path) | None`, the newest complete checkpoint.
            Defaults to `tf.train` checkpoints.
        timeout: Stop after this many seconds without a new checkpoint. Defaults to `None`.
        start_delay_secs: Seconds to wait before the first look. Defaults to 0.
        throttle_secs: Least seconds between the starts of two evaluations. Defaults to 0.
        poll_secs: Seconds between looks. Defaults to 1.
        should_stop: Checked at every look; `True` stops with reason `"preempted"` (SIGTERM).
        after_evaluation: `after_evaluation(logs, path, final)` after each evaluation; called
            once more with `final=True` for the last one if training ended after it.

    Returns:
        An `EvaluationRun`.
    """
    stop = should_stop or (lambda: False)
    results: dict[str, Any] = {}
    last_number, last_path, last_start = -1, None, -float("inf")
    waited_since = time.monotonic()
    _sleep(start_delay_secs, stop)
    while True:
        if stop():
            return EvaluationRun(results, last_path, "preempted")
        # The marker first: it is written after the last save, so a listing made after seeing
        # it holds the final checkpoint.
        done = checkpoint_lib.read_done_marker(directory) is not None
        newest = latest(directory)
        if newest is not None and newest[0] > last_number:
            wait = throttle_secs - (time.monotonic() - last_start)
            if wait > 0:
                _sleep(wait, stop)
                done = checkpoint_lib.read_done_marker(directory) is not None
                newest = latest(directory) or newest
            number, path = newest
            last_start = time.monotonic()
            evaluated = evaluate(path, number)
            if evaluated is not None:
                results, last_number, last_path = dict(evaluated), number, path
                waited_since = time.monotonic()
                step = int(results.get("global_step", number))
                reached = final_step is not None and step >= final_step
                if after_evaluation is not None:
                    after_evaluation(results, path, reached or done)
                if reached or done:
                    logging.info("tfdist: evaluated %s (step %d): training has ended", path, step)
                    return EvaluationRun(results, path, "final_step" if reached else "training_done")
                continue  # look again at once: training may have saved meanwhile
        elif done:  # and nothing newer than the last evaluation
            logging.info("tfdist: training has ended (%s)", checkpoint_lib.DONE_FILE)
            if after_evaluation is not None and last_path is not None:
                after_evaluation(results, last_path, True)
            return EvaluationRun(results, last_path, "training_done")
        if timeout is not None and time.monotonic() - waited_since >= timeout:
            logging.warning("tfdist: no new checkpoint in %.0f s; stopping", timeout)
            return EvaluationRun(results, last_path, "timeout")
        _sleep(poll_secs, stop)


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleeps, waking every 0.1 s to see whether to stop (SIGTERM ends the wait promptly)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0 and not stop():
        time.sleep(min(left, 0.1))
