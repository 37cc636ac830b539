"""Build traces: the first call of `model_fn` in a mode creates its variables, and nothing runs.

`model_fn` is traced (`tf.function(...).get_concrete_function`, never executed) under the
strategy's scope — in replica context (`strategy.run`) for TRAIN and EVAL, as the real steps
will call it. The variable store creates each new variable for real, outside the trace. Because
nothing executes, building has no side effects (no metric updates, no batch-norm statistics),
and needs only the input *specs*, not data. The TRAIN build then builds the optimizer on the
trainable variables, under the scope and before any training step is traced (FINDINGS §3).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdist.compat import keras_optimizer_build
from tfdist.estimator.model_fn import ModelFnRunner
from tfdist.estimator.spec import ModeKeys
from tfdist.estimator.variable_store import VariableStore


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seeds variable initialisation; leaves Python's and NumPy's random state as it was."""
    if seed is None:
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def trace(runner: ModelFnRunner, strategy: tf.distribute.Strategy, mode: str,
          feature_spec: Any, label_spec: Any, seed: int | None) -> Any:
    """Traces `model_fn` once in `mode`, creating its variables; returns the spec it returned.

    Raises:
        ValueError: A bad spec, or (TRAIN) a loss that depends on no variable model_fn created.
    """
    specs: list[Any] = []

    def replica_fn(features: Any, labels: Any) -> None:
        with tf.GradientTape() as tape:
            spec = runner.call(features, labels, mode, build=True)
        if not specs:
            specs.append(spec)
        if mode == ModeKeys.TRAIN:
            grads = tape.gradient(spec.loss, runner.store.trainable())
            if all(g is None for g in grads):
                raise ValueError(
                    "The TRAIN loss returned by model_fn does not depend on any trainable "
                    "variable created inside model_fn. Build the model (its layers) inside "
                    "model_fn; tfdist trains the variables model_fn creates."
                )

    def build_fn(features: Any, labels: Any) -> None:
        if mode == ModeKeys.PREDICT:
            replica_fn(features, None)
        else:
            strategy.run(replica_fn, args=(features, labels))

    with seeded(seed), strategy.scope():
        tf.function(build_fn).get_concrete_function(feature_spec, label_spec)
    return specs[0]


def build_optimizers(strategy: tf.distribute.Strategy, store: VariableStore,
                     optimizer: Any) -> list[tuple[keras.optimizers.Optimizer, list[tf.Variable]]]:
    """The TRAIN spec's optimizer(s), each with the trainable variables it applies to.

    `optimizer` is one optimizer (all trainable variables), or a dict of variable-path prefix
    -> optimizer (each variable to the optimizer of its longest matching prefix), as canned
    estimators with two parts (linear and DNN) need.

    Raises:
        TypeError: Not a Keras optimizer or its name.
        ValueError: An optimizer that was already used, a variable no prefix matches, or
            loss scaling with several optimizers.
    """
    if not isinstance(optimizer, Mapping):
        return [(build_optimizer(strategy, store, optimizer), store.trainable())]
    trainable = store.trainable()
    prefixes = sorted(optimizer, key=len, reverse=True)
    parts: dict[str, list[tf.Variable]] = {p: [] for p in optimizer}
    for variable in trainable:
        key = _stored_key(store, variable)
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(
                f"EstimatorSpec(optimizer={{...}}): the trainable variable {key!r} matches none "
                f"of the prefixes {sorted(optimizer)}. Add a prefix for it."
            )
        parts[prefix].append(variable)
    result = []
    for prefix in sorted(optimizer):
        if not parts[prefix]:
            continue
        opt = build_optimizer(strategy, store, optimizer[prefix], parts[prefix])
        if isinstance(opt, keras.optimizers.LossScaleOptimizer):
            raise ValueError(
                "EstimatorSpec(optimizer={...}) with a LossScaleOptimizer is not supported: "
                "loss scaling needs one optimizer. Pass a single optimizer."
            )
        result.append((opt, parts[prefix]))
    names = [opt.name for opt, _ in result]
    if len(set(names)) != len(names):
        raise ValueError(
            f"EstimatorSpec(optimizer={{...}}): the optimizers are named {names}; their "
            "variables are keyed by name, so give each a distinct `name=`."
        )
    return result


def build_optimizer(strategy: tf.distribute.Strategy, store: VariableStore,
                    optimizer: Any, variables: list[tf.Variable] | None = None,
                    ) -> keras.optimizers.Optimizer:
    """One optimizer, owned by `strategy` and built on `variables` (default: all trainable).

    Raises:
        TypeError: Not a Keras optimizer or its name.
        ValueError: An optimizer that was already used.
    """
    if isinstance(optimizer, str):
        with strategy.scope(), store.scope(build=True):
            optimizer = keras.optimizers.get(optimizer)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "EstimatorSpec(optimizer=...) must be a keras.optimizers.Optimizer or its name; "
            f"received {type(optimizer).__name__}."
        )
    if optimizer.built:
        raise ValueError(
            f"The optimizer {optimizer.name!r} returned by model_fn was already used (built). "
            "Create it inside model_fn, or pass an unused one (or its name, e.g. 'adam')."
        )
    if keras_optimizer_build.strategy_of(optimizer) is not strategy:
        # Created outside this strategy's scope and unused: an equivalent one made here is safe.
        with strategy.scope(), store.scope(build=True):
            optimizer = optimizer.__class__.from_config(optimizer.get_config())
    trainable = store.trainable() if variables is None else variables
    created: set[str] = set()
    with strategy.scope(), store.scope(build=True, claimed=created):
        optimizer.build(trainable)
    _rename_slots(store, trainable, created)
    for variable in optimizer.variables:
        store.add(variable.path, variable)
    return optimizer


def _stored_key(store: VariableStore, variable: tf.Variable) -> str:
    """The store path of one of the store's own variables."""
    key = store.key_of(variable)
    if key is None:
        raise KeyError(f"The variable {variable.name!r} is not in the Estimator's variable store.")
    return key


def _rename_slots(store: VariableStore, trainable: list[tf.Variable], created: set[str]) -> None:
    """Names slots after their variable's path, as Keras does ("adam/dense_kernel_momentum").

    Keras names a slot after the TF name of a plain `tf.Variable` ("dense_1/kernel:0", which
    depends on graph name scopes); the store passes those, so map them back to store paths.
    """
    by_tf_name = {
        str(v.name).replace("/", "_").replace(":", "_"): _stored_key(store, v).replace("/", "_")
        for v in trainable
    }
    for key in sorted(created):
        if key not in store.variables or "/" not in key:
            continue
        prefix, rest = key.split("/", 1)
        matches = [n for n in by_tf_name if rest.startswith(n + "_")]
        if matches:
            tf_name = max(matches, key=len)
            store.rename(key, f"{prefix}/{by_tf_name[tf_name]}{rest[len(tf_name):]}")
