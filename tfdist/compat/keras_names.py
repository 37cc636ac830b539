"""Private Keras touch points: tf.estimator's "fresh graph" naming for each `model_fn` call.

tf.estimator built a new graph for every `train`/`evaluate`/`predict` call, so the Keras layers a
`model_fn` created got the same names every time ("dense", "dense_1", ...) and checkpoints matched
variables by name. tfdist reproduces that: while `model_fn` runs, Keras's layer-name counters
and variable-path stack start empty, so the *path* of every variable (e.g.
"sequential/dense/kernel") is the same on every call and in every mode. Those paths key the
Estimator's variable store.

Keras 3 keeps both in thread-local global state with no public API to swap them:
`keras.src.backend.common.global_state` attributes "object_name_uids" (used by
`keras.src.utils.naming.get_uid`) and "name_scope_stack" (used by
`keras.src.backend.common.name_scope.current_path`). Checked against Keras 3.15; the canary test
`tests/test_estimator.py::test_keras_naming_touch_points` fails if Keras renames them.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

from keras.src.backend.common import global_state
from keras.src.backend.common.name_scope import current_path

_UIDS = "object_name_uids"
_SCOPES = "name_scope_stack"


@contextlib.contextmanager
def fresh_names() -> Iterator[None]:
    """Starts Keras auto-naming and name scopes from scratch on this thread, then restores them."""
    saved = {key: global_state.get_global_attribute(key) for key in (_UIDS, _SCOPES)}
    global_state.set_global_attribute(_UIDS, collections.defaultdict(int))
    global_state.set_global_attribute(_SCOPES, [])
    try:
        yield
    finally:
        for key, value in saved.items():
            global_state.set_global_attribute(key, value)


def variable_path(name: str | None) -> str:
    """The Keras path a variable named `name` gets when created here, e.g. "dense/kernel"."""
    name = (name or "Variable").split(":")[0]
    parent = current_path()
    return f"{parent}/{name}" if parent else name
