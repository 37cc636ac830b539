"""Workaround: variables first created inside a `tf.function` under MirroredStrategy.

Upstream: no issue found (searched 2026-12-01); the failure is FINDINGS §2 cause 2 reached by
another road. The TF tutorial `distribute/custom_training` builds its Keras model without an
input shape, so Keras 3 creates the layers' weights while `tf.function` traces
`strategy.run(train_step)` (Keras 2 opened a `tf.init_scope` for that; Keras 3 does not). The
first call then fails with `You must feed a value for placeholder tensor
'cond/else/_1/cond/Placeholder_1' with dtype int32`.

Why: MirroredStrategy gives each copy after the first the initial value `identity(primary.value())`
(`MirroredExtended._get_variable_creator_initial_value`), and inside a function graph that reads
the primary, a variable whose handle is captured from outside. `tf.function` cannot lift such an
initializer out of the graph (`UnliftableError`), so it falls back to running the whole first
trace inside a `tf.cond` (`fn_with_cond`). The gradient all-reduce in that trace captures its
collective instance keys at call time, the captures land on the `cond` branch graph, and nothing
feeds them.

The fix: inside a function graph, the other copies start from the primary's initial-value tensor
itself (the same value; TF reads the primary only to copy it). Every initializer can then be
lifted, `tf.function` initializes the variables eagerly and retraces without creating any,
exactly as for a model built before the first call. `MultiWorkerMirroredStrategy`'s extended
class overrides the first copy's value (a broadcast from the chief) and defers the others to
MirroredStrategy's, so both classes are patched.
"""

from __future__ import annotations

import functools
import threading

import tensorflow as tf
from tensorflow.python.distribute import collective_all_reduce_strategy, mirrored_strategy

UPSTREAM = "FINDINGS §2 cause 2 (deferred captures on a cond branch graph); no upstream issue"
_METHOD = "_get_variable_creator_initial_value"
_TARGETS = (
    mirrored_strategy.MirroredExtended,
    collective_all_reduce_strategy.CollectiveAllReduceExtended,
)
_ORIGINALS = {cls: cls.__dict__[_METHOD] for cls in _TARGETS}
# The first copy's initial value, per thread: MirroredStrategy creates the copies of one variable
# one after the other on the thread that asked for it (replica threads run one at a time).
_state = threading.local()


class _Primary:
    """Holds the initial value the first copy of one variable was created from."""

    value = None


def _tracing() -> bool:
    return tf.inside_function() and not tf.executing_eagerly()


def _recording(initial_value, primary: _Primary):
    def initial_value_fn():
        result = initial_value() if callable(initial_value) else initial_value
        # A checkpoint-restore value wraps its tensor; the copies need the tensor.
        primary.value = getattr(result, "wrapped_value", result)
        return result

    return initial_value_fn


def _copies_primary_value(primary_var):
    primary = getattr(_state, "primary", None)
    value = None if primary is None else primary.value
    if value is None:
        return None
    if tf.is_tensor(value):
        # Only a tensor of this function graph can be lifted with the primary's initializer
        # (an eager tensor has no `graph`: it would be captured, which is not liftable either).
        if getattr(value, "graph", None) is not tf.compat.v1.get_default_graph():
            return None
        if value.dtype.base_dtype != primary_var.dtype.base_dtype:
            return None
        if not value.shape.is_compatible_with(primary_var.shape):
            return None
    return lambda: tf.identity(tf.convert_to_tensor(value, dtype=primary_var.dtype))


def _patched(original):
    @functools.wraps(original)
    def get_initial_value(self, replica_id, device, primary_var, **kwargs):
        value = original(
            self, replica_id=replica_id, device=device, primary_var=primary_var, **kwargs
        )
        if not _tracing():
            return value
        if replica_id == 0:
            _state.primary = _Primary()
            return _recording(value, _state.primary)
        return _copies_primary_value(primary_var) or value

    return get_initial_value


def install() -> None:
    """Patches the strategies' initial-value method (idempotent)."""
    for cls, original in _ORIGINALS.items():
        setattr(cls, _METHOD, _patched(original))


def uninstall() -> None:
    """Restores the upstream methods (for the canary test)."""
    for cls, original in _ORIGINALS.items():
        setattr(cls, _METHOD, original)
