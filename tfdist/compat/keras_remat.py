"""Keras 3 rematerialisation (`keras.RematScope`) on TensorFlow inside `tf.function`.

Two upstream problems, both met as soon as a `RematScope` model trains in a compiled step:

1. **Keyword arguments** (keras-team/keras#21207, open): Keras runs a marked layer as
   `backend.core.remat(layer.call)(*args, **kwargs)`, and the TensorFlow backend's `remat` is
   `tf.recompute_grad`, whose `tf.custom_gradient` raises "The custom_gradient decorator
   currently supports keywords arguments only when eager execution is enabled" in graph mode.
   Keras passes `training=` (and `mask=`) as keywords to every layer that takes them, so every
   `fit`, custom-loop or Estimator step fails. `install()` replaces the backend's `remat` with
   one that moves tensor keywords into positional arguments and closes over the rest (flags
   such as `training`), so gradients still flow to every tensor argument.
2. **The model itself is marked too**: a functional model built inside the scope is a layer
   created in it, so `"full"` also wraps the whole model in one recomputation around the
   per-layer ones: the forward pass then runs three times per step for no further saving.
   `unmark_model` clears the model's own mark (private `_remat_mode`), leaving its layers'.
3. **Mixed precision and randomness are not replayed**: the recomputation runs in the backward
   pass, outside the layer's autocast scope, so a `mixed_bfloat16` layer recomputes in float32
   and its gradient ops fail on mixed dtypes ("Input 'features' of 'ReluGrad' Op has type
   float32 that does not match type bfloat16"); `remat` re-enters the scope. Dropout layers
   would draw a new mask when recomputed: `unmark_model` leaves them storing theirs.

The canary tests in tests/test_compat.py fail once Keras handles them (then this module goes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras.src.backend.common import variables as keras_variables
from keras.src.backend.tensorflow import core as tf_backend_core

_upstream_remat = tf_backend_core.remat


def remat(f: Callable[..., Any]) -> Callable[..., Any]:
    """`tf.recompute_grad(f)` that also takes keyword arguments inside `tf.function`."""

    def call(*args: Any, **kwargs: Any) -> Any:
        tensor_names = [k for k, v in kwargs.items() if tf.is_tensor(v)]
        static = {k: v for k, v in kwargs.items() if k not in tensor_names}
        count = len(args)
        autocast = keras_variables.get_autocast_scope()
        dtype = autocast.dtype if autocast is not None else None

        def positional(*flat: Any) -> Any:
            # The recomputation runs in the backward pass, outside the layer's autocast scope:
            # without it, mixed-precision layers would recompute in float32.
            with keras_variables.AutocastScope(dtype):
                return f(*flat[:count], **static, **dict(zip(tensor_names, flat[count:])))

        return tf.recompute_grad(positional)(*args, *(kwargs[k] for k in tensor_names))

    return call


def install() -> None:
    """Routes Keras's TensorFlow `remat` through `remat` above (idempotent)."""
    tf_backend_core.remat = remat


# Layers that draw random numbers: a recomputation would draw new ones (another dropout mask
# in the backward pass than in the forward pass), so they keep their outputs instead.
_RANDOM_LAYERS = (keras.layers.Dropout, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                  keras.layers.AlphaDropout)


def unmark_model(model: Any) -> Any:
    """Clears the recomputation mark of a built model itself and of its random layers; returns it."""
    if getattr(model, "layers", None) and hasattr(model, "_remat_mode"):
        model._remat_mode = None
        for layer in model._flatten_layers(include_self=False):
            if isinstance(layer, _RANDOM_LAYERS):
                layer._remat_mode = None
    return model
