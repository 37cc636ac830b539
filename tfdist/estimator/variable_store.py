"""Variables created once, by name, however often `model_fn` runs.

`model_fn` builds Keras layers on every call (each trace of each mode). A variable creator
intercepts every `tf.Variable` they make and keys it by its Keras path (see `keras_names`):

- while *building* (the first trace of a mode), a path not seen before creates the variable —
  outside the function graph (`tf.init_scope`), under the strategy's scope — and stores it;
- a path already stored returns the stored variable, so the new layer objects share it;
- outside a build, a new path is an error: variables must not depend on data or retracing.

The store is what the Estimator checkpoints (under `vars/<path>`), so checkpoints match by name,
as tf.estimator's did, and `get_variable_names()` returns paths like "sequential/dense/kernel".
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from tfdist.compat import keras_names

CHECKPOINT_ATTRIBUTE = "vars"
GLOBAL_STEP = "global_step"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


class VariableStore:
    """Path -> variable, shared by every call of `model_fn` in every mode."""

    def __init__(self) -> None:
        self.variables: dict[str, tf.Variable] = {}
        # Variables that are state of one evaluation (metrics): never checkpointed or exported.
        self._local: set[int] = set()

    def __len__(self) -> int:
        return len(self.variables)

    def mark_local(self, variables: Any) -> None:
        for variable in variables:
            self._local.add(id(_tf_variable(variable)))

    def is_local(self, variable: Any) -> bool:
        return id(variable) in self._local

    def checkpointed(self) -> dict[str, tf.Variable]:
        return {k: v for k, v in self.variables.items() if id(v) not in self._local}

    def trainable(self) -> list[tf.Variable]:
        return [v for v in self.variables.values() if v.trainable and id(v) not in self._local]

    def key_of(self, variable: Any) -> str | None:
        variable = _tf_variable(variable)
        for key, stored in self.variables.items():
            if stored is variable:
                return key
        return None

    def rename(self, old: str, new: str) -> None:
        if new not in self.variables:
            self.variables[new] = self.variables.pop(old)

    def add(self, key: str, variable: Any) -> None:
        """Stores a variable made outside `model_fn` (e.g. by an optimizer given by name)."""
        variable = _tf_variable(variable)
        if self.key_of(variable) is None:
            self.variables.setdefault(key, variable)

    @contextlib.contextmanager
    def scope(self, *, build: bool, claimed: set[str] | None = None) -> Iterator[set[str]]:
        """Fresh Keras naming plus the variable creator, for one call.

        Args:
            build: Whether new variables may be created.
            claimed: Also collects the paths this call used (e.g. across the traces of an
                export). Defaults to `None`.

        Yields:
            The set of paths used by this call.
        """
        used: set[str] = set()

        def creator(next_creator, **kwargs):
            key = keras_names.variable_path(kwargs.get("name"))
            if key in used:
                raise ValueError(
                    f"model_fn created two variables with the path {key!r} in one call. Give "
                    "the layers (or metrics, or tf.Variables) distinct `name`s: tfdist matches "
                    "variables across calls by path."
                )
            used.add(key)
            if claimed is not None:
                claimed.add(key)
            if key in self.variables:
                return self.variables[key]
            if not build:
                raise ValueError(
                    f"model_fn created a new variable {key!r} in a later call, after its first "
                    "call in this mode created all others. Create variables unconditionally "
                    "(not depending on the data, step or Python state), so every call builds "
                    "the same ones."
                )
            initial_value = kwargs.get("initial_value")
            if tf.is_tensor(initial_value) and not tf.executing_eagerly():
                static = tf.get_static_value(initial_value)
                if static is None:
                    raise ValueError(
                        f"Variable {key!r} in model_fn is initialised from a computed tensor. "
                        "Initialise it from a constant or an initializer (as Keras layers do)."
                    )
                kwargs["initial_value"] = static
            with tf.init_scope():  # a real variable, outside the function being traced
                variable = next_creator(**kwargs)
            self.variables[key] = variable
            return variable

        with keras_names.fresh_names(), tf.variable_creator_scope(creator):
            yield used


def _tf_variable(variable: Any) -> Any:
    return getattr(variable, "value", variable) if hasattr(variable, "path") else variable


# --- names in checkpoints ------------------------------------------------------------------------


def _unescape(name: str) -> str:
    out, i = [], 0
    while i < len(name):
        if name[i] == "." and i + 1 < len(name):
            out.append({"S": "/", ".": "."}.get(name[i + 1], name[i : i + 2]))
            i += 2
        else:
            out.append(name[i])
            i += 1
    return "".join(out)


_OBJECT_KEY = re.compile(rf"^{CHECKPOINT_ATTRIBUTE}/(.+){re.escape(_VALUE_SUFFIX)}$")


def checkpoint_names(path: str, *, name_based: bool = True) -> dict[str, str]:
    """Variable name -> checkpoint key for a tfdist.estimator checkpoint or SavedModel variables.

    Args:
        path: A checkpoint prefix.
        name_based: Also accept TF1 name-based keys (e.g. a tf.estimator checkpoint), whose keys
            are the variable names. Defaults to `True`.
    """
    names: dict[str, str] = {}
    for key, _ in tf.train.list_variables(path):
        match = _OBJECT_KEY.match(key)
        if match:
            names[_unescape(match.group(1))] = key
        elif key == GLOBAL_STEP + _VALUE_SUFFIX:
            names[GLOBAL_STEP] = key
        elif name_based and ".ATTRIBUTES" not in key and not key.startswith("_CHECKPOINTABLE"):
            names.setdefault(key, key)
    return names
