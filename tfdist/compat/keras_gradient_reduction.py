"""Workaround: Keras 3 optimizers all-reduce gradients in full precision, in one fixed way.

Upstream: Keras 3's TensorFlow optimizer always sums gradients across replicas inside
`apply_gradients` (`keras/src/backend/tensorflow/optimizer.py`, `TFOptimizer.
_all_reduce_sum_gradients`: one `replica_context.all_reduce(SUM, grads)`, no communication
options, FINDINGS §13) and offers no option to compress or pack them; no upstream issue asks for
one (searched keras-team/keras for "all_reduce compression" / "communication_options"). A route
that reduced compressed gradients itself would have them reduced a second time by the optimizer.

The fix: `_all_reduce_sum_gradients` is replaced by one that, for an optimizer registered with
`configure`, reduces through `tfdist.gradients.all_reduce_sum` (compression, packing); every
other optimizer reduces exactly as upstream. `collect` lets the `fit` route's accumulation run
Keras's `train_step` on micro-batches with the optimizer's `apply` (which `apply_gradients`
calls) recording the gradients instead of applying them (tfdist.compat.keras_fit_accumulation).
`keras.optimizers.LossScaleOptimizer` overrides `apply` itself, so it records the same way: the
gradients it records are still scaled (the scale only changes when it applies), and applying
their mean once unscales, checks them for non-finite values and updates the scale once per
optimizer step.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from keras.src.backend.tensorflow import optimizer as keras_tf_optimizer
from keras.src.optimizers import loss_scale_optimizer as keras_loss_scale_optimizer

from tfdist import gradients as gradients_lib

UPSTREAM = "https://github.com/keras-team/keras/blob/v3.15.0/keras/src/backend/tensorflow/optimizer.py"
_TARGET = keras_tf_optimizer.TFOptimizer
_original_all_reduce = _TARGET._all_reduce_sum_gradients
_base_apply = keras_tf_optimizer.base_optimizer.BaseOptimizer.apply
_LOSS_SCALE = keras_loss_scale_optimizer.LossScaleOptimizer
_loss_scale_apply = _LOSS_SCALE.apply

_options: weakref.WeakKeyDictionary[Any, gradients_lib.GradientOptions] = weakref.WeakKeyDictionary()
_local = threading.local()  # per replica thread: optimizer -> list collecting grads_and_vars


def configure(optimizer: Any, options: gradients_lib.GradientOptions | None) -> None:
    """Makes `optimizer` reduce its gradients as `options` say (`None`: as upstream)."""
    if options is None or options.is_default:
        _options.pop(optimizer, None)
    else:
        _options[optimizer] = options


def options_of(optimizer: Any) -> gradients_lib.GradientOptions | None:
    """The options `configure` gave `optimizer`, or `None`."""
    return _options.get(optimizer)


@functools.wraps(_original_all_reduce)
def _all_reduce_sum_gradients(self, grads_and_vars):
    options = _options.get(self)
    if options is None or tf.distribute.get_replica_context() is None:
        return _original_all_reduce(self, grads_and_vars)
    grads_and_vars = list(grads_and_vars)
    present = [i for i, (g, _) in enumerate(grads_and_vars) if g is not None]
    if not present:
        return _original_all_reduce(self, grads_and_vars)  # upstream's error for "no gradients"
    reduced = gradients_lib.all_reduce_sum([grads_and_vars[i][0] for i in present], options)
    out = [(None, v) for _, v in grads_and_vars]
    for i, r in zip(present, reduced):
        out[i] = (r, grads_and_vars[i][1])
    return out


@contextlib.contextmanager
def collect(optimizer: Any) -> Iterator[list[list[tuple[Any, Any]]]]:
    """Within this block (on this thread) `optimizer.apply(_gradients)` records, not applies.

    Yields:
        A list that receives one `[(grad, var), ...]` per `apply` call.
    """
    collectors = getattr(_local, "collectors", None)
    if collectors is None:
        collectors = _local.collectors = {}
    calls: list[list[tuple[Any, Any]]] = []
    collectors[id(optimizer)] = calls
    try:
        yield calls
    finally:
        del collectors[id(optimizer)]


def _recorded(self, grads, trainable_variables) -> bool:
    calls = getattr(_local, "collectors", {}).get(id(self))
    if calls is None:
        return False
    if trainable_variables is None:
        trainable_variables = self._trainable_variables
    calls.append(list(zip(grads, trainable_variables)))
    return True


def _apply(self, grads, trainable_variables=None):
    if not _recorded(self, grads, trainable_variables):
        return _base_apply(self, grads, trainable_variables)
    return None


@functools.wraps(_loss_scale_apply)
def _apply_loss_scaled(self, grads, trainable_variables=None):
    if not _recorded(self, grads, trainable_variables):
        return _loss_scale_apply(self, grads, trainable_variables)
    return None


def install() -> None:
    """Patches `TFOptimizer._all_reduce_sum_gradients`, adds `TFOptimizer.apply` and wraps
    `LossScaleOptimizer.apply` (idempotent)."""
    _TARGET._all_reduce_sum_gradients = _all_reduce_sum_gradients
    _TARGET.apply = _apply
    _LOSS_SCALE.apply = _apply_loss_scaled


def uninstall() -> None:
    """Restores upstream (for the canary test)."""
    _TARGET._all_reduce_sum_gradients = _original_all_reduce
    if "apply" in vars(_TARGET):
        del _TARGET.apply
    _LOSS_SCALE.apply = _loss_scale_apply
