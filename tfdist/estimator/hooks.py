"""Training hooks and checkpoint listeners with tf.estimator's method names.

TF2 has no sessions, so hooks wrap *loop calls* of the shared outer loop (`HooksAction` runs
them, and the saving listeners, as one `tfdist.outer_loop.TrainAction`): `before_run` runs before each `tf.function`
call of the training loop and `after_run` after it (`RunConfig(steps_per_loop=1)`, the default,
makes that every step, as in tf.estimator). `session` arguments are `None`.

What a hook can fetch: `before_run` returns `SessionRunArgs(fetches)` where fetches name run
values — `"loss"` (the last step's loss, mean over this worker's replicas) and `"global_step"`
(after the call) — in any nesting of lists, tuples and dicts; `after_run` gets
`run_values.results` in the same structure. A `LoggingTensorHook` returned in
`EstimatorSpec(training_hooks=...)` may also log tensors computed in `model_fn`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist import outer_loop

RUN_VALUE_KEYS = ("loss", "global_step")


class NanLossDuringTrainingError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class SessionRunArgs:
    """What `before_run` asks to fetch: names of run values in any nesting (see module doc)."""

    fetches: Any = None
    feed_dict: Any = None
    options: Any = None

    def __post_init__(self) -> None:
        if self.feed_dict is not None or self.options is not None:
            raise ValueError(
                "SessionRunArgs(feed_dict=..., options=...) is not supported: TF2 has no "
                "sessions. Feed data through input_fn."
            )


@dataclasses.dataclass(frozen=True)
class SessionRunValues:
    """What `after_run` receives: `results` mirrors the fetches of `before_run`."""

    results: Any = None
    options: Any = None
    run_metadata: Any = None


class SessionRunContext:
    """Passed to `before_run` / `after_run`; `request_stop()` ends training after this call.

    Attributes:
        global_step: The global step before this loop call (tfdist addition).
        original_args: `None` (there is no session.run call).
        session: `None`.
    """

    def __init__(self, global_step: int) -> None:
        self.global_step = global_step
        self.original_args = None
        self.session = None
        self._stop_requested = False

    def request_stop(self) -> None:
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested


class SessionRunHook:
    """Base class: override any of `begin`, `after_create_session`, `before_run`, `after_run`, `end`."""

    def begin(self) -> None:
        """Called once when training (or evaluation, prediction) starts."""

    def after_create_session(self, session: Any, coord: Any) -> None:
        """Called once after `begin`, with `session=None` and `coord=None`."""

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs | None:
        """Called before each loop call; may return `SessionRunArgs` naming run values."""
        return None

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        """Called after each loop call with the values requested by `before_run`."""

    def end(self, session: Any) -> None:
        """Called once at the end, with `session=None`."""

    def next_boundary(self, global_step: int) -> int | None:
        """tfdist addition: the next global step at which this hook wants a loop call to end.

        With `steps_per_loop > 1`, loop calls are cut short there so the hook acts at exactly
        that step. Defaults to `None` (no preference).
        """
        del global_step
        return None


def resolve_fetches(fetches: Any, values: Mapping[str, Any]) -> Any:
    """Maps run-value names in `fetches` (any nesting) to their values.

    Raises:
        ValueError: A name that is not a run value.
    """
    if fetches is None:
        return None
    if isinstance(fetches, str):
        if fetches not in values:
            available = sorted(k for k in values if not k.startswith("training_hooks/"))
            raise ValueError(
                f"SessionRunArgs fetches {fetches!r}, which is not a run value. Available: "
                f"{', '.join(available)}. Tensors from model_fn can be logged by returning a "
                "LoggingTensorHook in EstimatorSpec(training_hooks=...)."
            )
        return values[fetches]
    if isinstance(fetches, Mapping):
        return {k: resolve_fetches(v, values) for k, v in fetches.items()}
    if isinstance(fetches, (list, tuple)):
        return type(fetches)(resolve_fetches(v, values) for v in fetches)
    raise TypeError(
        f"SessionRunArgs fetches must be run-value names ({', '.join(RUN_VALUE_KEYS)}) in "
        f"lists, tuples or dicts; received {type(fetches).__name__}. TF2 cannot fetch graph "
        "tensors by session.run."
    )


def after_runs(hooks: list[SessionRunHook], requests: list[Any], context: SessionRunContext,
               values: Mapping[str, Any]) -> None:
    """Calls each hook's `after_run` with what its `before_run` request fetches from `values`."""
    for hook, request in zip(hooks, requests):
        fetches = request.fetches if isinstance(request, SessionRunArgs) else request
        hook.after_run(context, SessionRunValues(results=resolve_fetches(fetches, values)))


class StopAtStepHook(SessionRunHook):
    """Requests a stop at a global step.

    Args:
        num_steps: Stop after this many steps from where this training call starts.
        last_step: Stop when the global step reaches this.

    Raises:
        ValueError: Both or neither given, or a negative value.
    """

    def __init__(self, num_steps: int | None = None, last_step: int | None = None) -> None:
        if (num_steps is None) == (last_step is None):
            raise ValueError(
                "StopAtStepHook needs exactly one of num_steps and last_step. Received: "
                f"num_steps={num_steps!r}, last_step={last_step!r}."
            )
        for name, value in (("num_steps", num_steps), ("last_step", last_step)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
                    "Pass an integer >= 0."
                )
        self._num_steps = num_steps
        self._last_step = last_step

    @property
    def last_step(self) -> int | None:
        return self._last_step

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        if self._last_step is None:
            assert self._num_steps is not None, "__init__ requires exactly one of the two"
            self._last_step = run_context.global_step + self._num_steps
        if run_context.global_step >= self._last_step:
            run_context.request_stop()
        return SessionRunArgs("global_step")

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if run_values.results >= self._last_step:
            run_context.request_stop()

    def next_boundary(self, global_step: int) -> int | None:
        if self._last_step is None:
            assert self._num_steps is not None, "__init__ requires exactly one of the two"
            return global_step + self._num_steps
        return self._last_step


class NanTensorHook(SessionRunHook):
    """Stops (or raises) when a fetched value is NaN or infinite.

    tfdist checks the training loss after every loop call anyway; this hook is for ported code
    that adds it explicitly, or for other run values.

    Args:
        loss_tensor: The run value to check. Defaults to `"loss"`.
        fail_on_nan_loss: Raise `NanLossDuringTrainingError` (else request a stop).
            Defaults to `True`.
    """

    def __init__(self, loss_tensor: str = "loss", fail_on_nan_loss: bool = True) -> None:
        if not isinstance(loss_tensor, str):
            raise TypeError(
                "NanTensorHook takes the name of a run value (\"loss\"); received "
                f"{type(loss_tensor).__name__}. TF2 cannot fetch graph tensors."
            )
        self._name = loss_tensor
        self._fail = fail_on_nan_loss

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        return SessionRunArgs(self._name)

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        if not math.isfinite(float(run_values.results)):
            message = f"NaN loss during training (global step {run_context.global_step})."
            if self._fail:
                raise NanLossDuringTrainingError(message)
            logging.error("%s Stopping.", message)
            run_context.request_stop()


class LoggingTensorHook(SessionRunHook):
    """Logs values every N steps or seconds.

    Args:
        tensors: A dict of display name -> value, or a list of values. A value is a run-value
            name (`"loss"`, `"global_step"`) or — when this hook is returned in
            `EstimatorSpec(training_hooks=...)` — a tensor computed in `model_fn`
            (its value on this worker's first replica, at the last step of the loop call).
        every_n_iter: Log every this many steps.
        every_n_secs: Log every this many seconds.
        at_end: Log the last values when training ends. Defaults to `False`.
        formatter: Turns the dict of values into the logged string. Defaults to
            `"name = value, ..."`.

    Raises:
        ValueError: Neither or both of `every_n_iter` / `every_n_secs` (without `at_end`).
    """

    def __init__(
        self,
        tensors: Mapping[str, Any] | list | tuple,
        every_n_iter: int | None = None,
        every_n_secs: float | None = None,
        at_end: bool = False,
        formatter: Callable[[dict[str, Any]], str] | None = None,
    ) -> None:
        if not at_end and (every_n_iter is None) == (every_n_secs is None):
            raise ValueError(
                "LoggingTensorHook needs exactly one of every_n_iter and every_n_secs (or "
                f"at_end=True). Received: every_n_iter={every_n_iter!r}, "
                f"every_n_secs={every_n_secs!r}."
            )
        if every_n_iter is not None and (not isinstance(every_n_iter, int) or every_n_iter < 1):
            raise ValueError(
                f"Invalid value for argument `every_n_iter`. Received: {every_n_iter!r}. "
                "Pass an integer >= 1."
            )
        # display name -> value, and display name -> the key tfdist fetches a tensor under. A
        # list's keys are positions: a tensor's name differs between the traces of model_fn
        # (e.g. "Identity:0" in the build trace, "while/cond_1/Identity:0" in the loop).
        if isinstance(tensors, Mapping):
            self._tensors = dict(tensors)
            self._keys = {name: str(name) for name in self._tensors}
        elif isinstance(tensors, (list, tuple)):
            self._tensors, self._keys = {}, {}
            for position, value in enumerate(tensors):
                name = self._display_name(value)
                if name in self._tensors:
                    name = f"{name} ({position})"
                self._tensors[name] = value
                self._keys[name] = name if isinstance(value, str) else f"#{position}"
        else:
            raise TypeError(
                "LoggingTensorHook takes a dict of name -> value or a list of values; received "
                f"{type(tensors).__name__}."
            )
        self._every_n_iter = every_n_iter
        self._every_n_secs = every_n_secs
        self._at_end = at_end
        self._formatter = formatter
        self._last_step: int | None = None
        self._last_time: float | None = None
        self._last_values: dict[str, Any] | None = None

    @staticmethod
    def _display_name(value: Any) -> str:
        if isinstance(value, str):
            return value
        return getattr(value, "name", None) or str(value)

    def tensor_values(self) -> dict[str, Any]:
        """The values that are tensors, by a key that is the same on every call of `model_fn`.

        tfdist fetches them from the training step under these keys.
        """
        return {self._keys[k]: v for k, v in self._tensors.items() if not isinstance(v, str)}

    def bind_fetched(self, keys: Mapping[str, str]) -> None:
        """Replaces tensors by the run-value names tfdist fetches them under (internal).

        Args:
            keys: A key of `tensor_values()` -> the run-value name of its tensor.
        """
        for name, key in self._keys.items():
            if key in keys:
                self._tensors[name] = keys[key]

    def begin(self) -> None:
        tensors = [name for name, value in self._tensors.items() if not isinstance(value, str)]
        if tensors:
            raise ValueError(
                f"LoggingTensorHook was given tensors ({', '.join(tensors)}) but was not "
                "returned by model_fn. Pass run-value names (\"loss\", \"global_step\"), or "
                "return the hook in EstimatorSpec(training_hooks=[...]) to log tensors from "
                "model_fn."
            )
        self._last_step = None
        self._last_time = None

    def _due(self, step: int) -> bool:
        if self._last_step is None:
            return True
        if self._every_n_iter is not None:
            return step - self._last_step >= self._every_n_iter
        if self._every_n_secs is not None:
            assert self._last_time is not None, "after_run sets it with _last_step"
            return time.monotonic() - self._last_time >= self._every_n_secs
        return False

    def before_run(self, run_context: SessionRunContext) -> SessionRunArgs:
        return SessionRunArgs({"tensors": self._tensors, "step": "global_step"})

    def after_run(self, run_context: SessionRunContext, run_values: SessionRunValues) -> None:
        values = {k: _to_python(v) for k, v in run_values.results["tensors"].items()}
        self._last_values = values
        step = run_values.results["step"]
        if self._due(step) and (self._every_n_iter or self._every_n_secs):
            self._log(values)
            self._last_step = step
            self._last_time = time.monotonic()

    def end(self, session: Any) -> None:
        if self._at_end and self._last_values is not None:
            self._log(self._last_values)

    def next_boundary(self, global_step: int) -> int | None:
        if self._every_n_iter is None or self._last_step is None:
            return None
        return self._last_step + self._every_n_iter

    def _log(self, values: dict[str, Any]) -> None:
        if self._formatter is not None:
            logging.info("%s", self._formatter(values))
        else:
            logging.info("%s", ", ".join(f"{k} = {v}" for k, v in values.items()))


def _to_python(value: Any) -> Any:
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    if hasattr(value, "ndim") and value.ndim == 0:
        return value.item()
    return value


class CheckpointSaverListener:
    """Called around checkpoint saves in `train` (tf.estimator's saving listener).

    `after_save` returning `True` requests a stop.
    """

    def begin(self) -> None:
        """Called once when training starts."""

    def before_save(self, session: Any, global_step_value: int) -> None:
        """Called before each save (`session=None`)."""

    def after_save(self, session: Any, global_step_value: int) -> bool | None:
        """Called after each save (`session=None`); return True to stop training."""
        return None

    def end(self, session: Any, global_step_value: int) -> None:
        """Called once at the end of training, after the final save."""


class HooksAction(outer_loop.TrainAction):
    """Runs `SessionRunHook`s and `CheckpointSaverListener`s as one action of the outer loop.

    `before_run` / `after_run` wrap each loop call (with one `SessionRunContext` per call; a
    stop it requests ends training), `next_boundary` cuts loop calls where a hook acts, and
    the listeners wrap every checkpoint save of the run (`after_save` returning `True` stops).

    Args:
        hooks: The hooks of this `train` call.
        listeners: Its saving listeners.
        run_values: Returns the run values of the last loop call beyond `loss` and
            `global_step` (the tensors `LoggingTensorHook`s fetch).
    """

    def __init__(self, hooks: list[SessionRunHook], listeners: list[CheckpointSaverListener],
                 run_values: Callable[[], Mapping[str, Any]]) -> None:
        self._hooks = hooks
        self._listeners = listeners
        self._run_values = run_values
        self._context = SessionRunContext(0)
        self._requests: list[Any] = []

    def begin(self, step: int) -> None:
        for hook in self._hooks:
            hook.begin()
        for hook in self._hooks:
            hook.after_create_session(None, None)
        for listener in self._listeners:
            listener.begin()

    def next_boundary(self, step: int) -> int | None:
        wanted = [b for h in self._hooks if (b := h.next_boundary(step)) is not None and b > step]
        return min(wanted) if wanted else None

    def before_train(self, step: int) -> bool:
        self._context = SessionRunContext(step)
        self._requests = [hook.before_run(self._context) for hook in self._hooks]
        return self._context.stop_requested

    def after_train(self, step: int, logs: Mapping[str, Any]) -> bool:
        values = {**self._run_values(), "loss": logs["loss"], "global_step": step}
        after_runs(self._hooks, self._requests, self._context, values)
        return self._context.stop_requested

    def before_save(self, step: int) -> None:
        for listener in self._listeners:
            listener.before_save(None, step)

    def after_save(self, step: int) -> bool:
        stop = False
        for listener in self._listeners:
            stop = bool(listener.after_save(None, step)) or stop
        return stop

    def end(self, step: int) -> None:
        for listener in self._listeners:
            listener.end(None, step)
        for hook in self._hooks:
            hook.end(None)
