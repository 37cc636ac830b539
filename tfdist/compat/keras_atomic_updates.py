"""Workaround: Keras 3 `Variable.assign_add` is a read then a write, so concurrent workers lose updates.

Upstream: keras-team/keras#18624 (Keras 3 has no parameter-server training); FINDINGS §9.
`KerasVariable.assign_add(v)` is `self.assign(self + v)` (same for `assign_sub`). Under
`ParameterServerStrategy` the functions of several workers update the same variable on a ps at
once, and a read-then-write loses increments: measured in the issue-16 spike, 8 rounds of 4
functions x 5 steps left Adam's `iterations` at 119 of 160, and a `keras.metrics.Mean` of the
loss read back about half the true mean (its `total` and `count` lose different updates).
TensorFlow's own `tf.Variable.assign_add` is one atomic op on the ps.

`atomic()` makes `assign_add`/`assign_sub` of Keras variables call the TensorFlow variable's
atomic op while a function is *traced* under it (tfdist traces its scheduled training
functions there); the graph keeps the atomic ops. Outside the block nothing changes.
Canary: tests/test_compat.py::test_canary_keras_assign_add_is_still_read_then_write.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from keras.src.backend.tensorflow import core as keras_tf_core

UPSTREAM = "https://github.com/keras-team/keras/issues/18624"
_Variable = keras_tf_core.Variable
_lock = threading.Lock()


def _assign_add(self: Any, value: Any) -> Any:
    return self.value.assign_add(tf.cast(value, self.value.dtype))


def _assign_sub(self: Any, value: Any) -> Any:
    return self.value.assign_sub(tf.cast(value, self.value.dtype))


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """Within the block (on any thread), Keras variables' `assign_add`/`assign_sub` are atomic ops."""
    with _lock:
        _Variable.assign_add = _assign_add
        _Variable.assign_sub = _assign_sub
        try:
            yield
        finally:
            del _Variable.assign_add  # back to the inherited read-then-write methods
            del _Variable.assign_sub
