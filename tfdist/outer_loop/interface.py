"""What a route implements to run under `OuterLoop`, and the shape of its extension points.

Shaped like Orbit's runner interface (`orbit/runner.py`): a route's inner loop is a
`TrainTarget` (`train(num_steps) -> logs`, the global step, what to checkpoint) and, for
evaluation, an `EvalTarget` (`evaluate(num_steps) -> logs`). Everything between loop calls
(cadence, checkpoints, summaries, preemption, non-finite losses) is the `OuterLoop`'s; what a
route adds there is a `TrainAction` (or an eval action: a callable taking the evaluation logs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

Logs = dict[str, Any]


class TrainTarget:
    """The inner training loop of a route: runs steps, owns the global step.

    Subclass it, set `global_step` and implement `train`; the other methods have defaults.

    Attributes:
        global_step: The step counter `train` advances by one per step (an int64 variable).
    """

    global_step: tf.Variable

    def train(self, num_steps: int) -> Logs:
        """Runs up to `num_steps` training steps (fewer when finite input ends).

        Returns:
            Logs of these steps: `"loss"` (checked for NaN/inf) and any scalars to summarise.
        """
        raise NotImplementedError

    def checkpoint_items(self) -> dict[str, Any]:
        """The trackables to checkpoint (model, optimizer, global step, ...)."""
        return {"global_step": self.global_step}

    def first_nonfinite_step(self) -> int | None:
        """The first step of the last `train` call whose loss was not finite, if tracked."""
        return None

    def after_restore(self) -> None:
        """Called after the loop restored a checkpoint to recover from a non-finite loss."""


class EvalTarget:
    """The evaluation loop of a route."""

    def evaluate(self, num_steps: int | None) -> Logs:
        """Evaluates `num_steps` batches (`None`: to the end of the data); returns loss and metrics."""
        raise NotImplementedError


class TrainAction:
    """Something a route runs around the loop calls of `OuterLoop.train` (Orbit's train actions).

    Every method is optional. `after_train` is the Orbit action proper (called with the logs of
    each loop call); the others let adapters such as tf.estimator's hooks and saving listeners
    keep their contracts. Methods returning `True` ask training to stop after this loop call
    (`before_train`: before it).
    """

    def begin(self, step: int) -> None:
        """Called once when `train` starts, at global step `step`."""

    def next_boundary(self, step: int) -> int | None:
        """A later global step at which a loop call must end (so the action acts exactly there)."""
        del step
        return None

    def before_train(self, step: int) -> bool | None:
        """Called before each loop call."""
        del step
        return None

    def after_train(self, step: int, logs: Logs) -> bool | None:
        """Called after each loop call with its logs (the loss was finite)."""
        del step, logs
        return None

    def before_save(self, step: int) -> None:
        """Called before each checkpoint save of `train`."""

    def after_save(self, step: int) -> bool | None:
        """Called after each checkpoint save of `train`."""
        del step
        return None

    def end(self, step: int) -> None:
        """Called once when `train` ends normally, after its final save."""


class _CallableAction(TrainAction):
    """A plain `fn(logs)` used as a train action."""

    def __init__(self, fn: Callable[[Logs], Any]) -> None:
        self._fn = fn

    def after_train(self, step: int, logs: Logs) -> None:
        del step
        self._fn(logs)


def as_train_action(action: TrainAction | Callable[[Logs], Any]) -> TrainAction:
    """A `TrainAction`, or a callable taking the logs of each loop call, as a `TrainAction`.

    Raises:
        TypeError: Neither.
    """
    if isinstance(action, TrainAction):
        return action
    if callable(action):
        return _CallableAction(action)
    raise TypeError(
        f"Invalid value for argument `train_actions`. Received an element {action!r}. Pass "
        "tfdist.outer_loop.TrainAction instances or callables taking the logs."
    )


def check_eval_actions(actions: Any) -> list[Callable[[Mapping[str, Any]], Any]]:
    """The eval actions as a list of callables.

    Raises:
        TypeError: An element that is not callable.
    """
    actions = list(actions or ())
    for action in actions:
        if not callable(action):
            raise TypeError(
                f"Invalid value for argument `eval_actions`. Received an element {action!r}. "
                "Pass callables taking the evaluation logs."
            )
    return actions
