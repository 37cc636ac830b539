"""Calling the user's `model_fn`: arguments by signature, variables from the store, spec checks."""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfdist.compat import keras_loss_scaling
from tfdist.estimator import spec as spec_lib
from tfdist.estimator.variable_store import VariableStore

_MODEL_FN_ARGS = ("features", "labels", "mode", "params", "config")


def function_args(fn: Callable[..., Any]) -> tuple[str, ...]:
    """Names of `fn`'s parameters (bound `self` and `functools.partial` arguments excluded)."""
    if isinstance(fn, functools.partial):
        bound = set(fn.keywords or {})
        names = function_args(fn.func)[len(fn.args) :]
        return tuple(n for n in names if n not in bound)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()
    return tuple(
        name
        for name, p in signature.parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class ModelFnRunner:
    """Calls `model_fn(features, labels, mode[, params][, config])` and checks what it returns.

    The Keras dtype policy in force when the runner is made (e.g. `mixed_bfloat16`) is the one
    `model_fn` builds its layers with, on whatever thread it runs: Keras keeps the global policy
    per thread, and `MirroredStrategy` calls `model_fn` on its replica threads.

    Args:
        model_fn: The user's function.
        params: Passed as `params` (a deep copy) when `model_fn` takes it.
        config: The `RunConfig`, passed as `config` when `model_fn` takes it.
        store: Where its variables live.

    Raises:
        TypeError: `model_fn` is not callable.
        ValueError: It lacks `features`, takes unknown arguments, or does not take `params`
            although params were given.
    """

    def __init__(self, model_fn: Any, params: dict | None, config: Any, store: VariableStore) -> None:
        if not callable(model_fn):
            raise TypeError(
                f"Invalid value for argument `model_fn`. Received: {type(model_fn).__name__}. "
                "Pass a function model_fn(features, labels, mode, params, config) returning an "
                "EstimatorSpec."
            )
        args = function_args(model_fn)
        if "features" not in args:
            raise ValueError(
                f"model_fn ({_name(model_fn)}) must take a `features` argument; its arguments "
                f"are {list(args)}. Use model_fn(features, labels, mode, params, config) "
                "(labels, mode, params and config are optional)."
            )
        unknown = [a for a in args if a not in _MODEL_FN_ARGS]
        if unknown:
            raise ValueError(
                f"model_fn ({_name(model_fn)}) takes arguments tfdist cannot fill: {unknown}. "
                f"Valid arguments: {', '.join(_MODEL_FN_ARGS)}."
            )
        if params is not None and "params" not in args:
            raise ValueError(
                f"params were passed to the Estimator ({sorted(params)}) but model_fn "
                f"({_name(model_fn)}) has no `params` argument. Add it, or drop params."
            )
        if params is not None and not isinstance(params, dict):
            raise TypeError(
                f"Invalid value for argument `params`. Received: {type(params).__name__}. "
                "Pass a dict or None."
            )
        self.model_fn = model_fn
        self.args = args
        self.params = params
        self.config = config
        self.store = store
        self.dtype_policy = keras.mixed_precision.dtype_policy()

    def call(
        self, features: Any, labels: Any, mode: str, *, build: bool, claimed: set[str] | None = None
    ) -> spec_lib.EstimatorSpec:
        """Runs `model_fn` once (in a trace or eagerly) with the variable store active.

        Args:
            features: This replica's features.
            labels: This replica's labels, or `None`.
            mode: A `ModeKeys` value.
            build: Whether this call may create variables (the first trace of `mode`).
            claimed: Collects the paths of the variables this call used. Defaults to `None`.

        Returns:
            The checked spec, with `mode` filled in.
        """
        kwargs: dict[str, Any] = {}
        if "labels" in self.args:
            kwargs["labels"] = labels
        elif labels is not None:
            raise ValueError(
                f"input_fn returns labels but model_fn ({_name(self.model_fn)}) has no `labels` "
                "argument. Add it to model_fn, or return only features from input_fn."
            )
        if "mode" in self.args:
            kwargs["mode"] = mode
        if "params" in self.args:
            kwargs["params"] = copy.deepcopy(self.params) if self.params is not None else {}
        if "config" in self.args:
            kwargs["config"] = self.config
        caller_policy = keras.mixed_precision.dtype_policy()
        keras.mixed_precision.set_global_policy(self.dtype_policy)
        try:
            # Keras losses give the replica's own mean here, as model_fn's contract says.
            with self.store.scope(build=build, claimed=claimed), keras_loss_scaling.replica_means():
                result = self.model_fn(features=features, **kwargs)
        finally:
            keras.mixed_precision.set_global_policy(caller_policy)
        return self.check(result, mode)

    def check(self, result: Any, mode: str) -> spec_lib.EstimatorSpec:
        where = f"model_fn ({_name(self.model_fn)}) in {mode.upper()} mode"
        if not isinstance(result, spec_lib.EstimatorSpec):
            raise TypeError(
                f"{where} must return a tfdist.estimator.EstimatorSpec; it returned "
                f"{type(result).__name__}."
            )
        if result.mode is None:
            result = result._replace(mode=mode)
        elif result.mode != mode:
            raise ValueError(
                f"{where} returned EstimatorSpec(mode={result.mode!r}). Return the mode it was "
                "called with (or leave mode out; tfdist fills it in)."
            )
        if mode in (spec_lib.ModeKeys.TRAIN, spec_lib.ModeKeys.EVAL):
            if result.loss is None:
                raise ValueError(
                    f"{where} returned no `loss`. Return EstimatorSpec(mode, loss=<scalar "
                    "tensor>, ...): the mean loss over the batch"
                    + (", and optimizer=... to train." if mode == spec_lib.ModeKeys.TRAIN else ".")
                )
            loss = tf.convert_to_tensor(result.loss)
            if loss.shape.rank != 0:
                raise ValueError(
                    f"{where} returned a loss of shape {loss.shape}; it must be a scalar. Reduce "
                    "it, e.g. loss=tf.reduce_mean(per_example_losses)."
                )
            if not loss.dtype.is_floating:
                raise ValueError(
                    f"{where} returned a loss of dtype {loss.dtype.name}; it must be a float."
                )
        if mode == spec_lib.ModeKeys.TRAIN and result.optimizer is None:
            raise ValueError(
                f"{where} returned no `optimizer`. tf.estimator's train_op becomes "
                "EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.SGD(learning_rate)); "
                "tfdist applies the gradients of `loss` with it."
            )
        if mode == spec_lib.ModeKeys.PREDICT and result.predictions is None:
            raise ValueError(
                f"{where} returned no `predictions`. Return EstimatorSpec(mode, "
                "predictions=<tensor or dict of tensors>)."
            )
        return result
