"""Keras 3 rematerialisation (`keras.RematScope`) on TensorFlow inside `tf.function`.

Three upstream problems, all met as soon as a `RematScope` model trains in a compiled step:

1. **Keyword arguments** (keras-team/keras#21207, open): Keras runs a marked layer as
   `backend.core.remat(layer.call)(*args, **kwargs)`, and the TensorFlow backend's `remat` is
   `tf.recompute_grad`, whose `tf.custom_gradient` raises "The custom_gradient decorator
   currently supports keywords arguments only when eager execution is enabled" in graph mode.
   Keras passes `training=` (and `mask=`) as keywords to every layer that takes them, so every
   `fit`, custom-loop or Estimator step fails. `install()` replaces the backend's `remat` with
   one that moves tensor keywords into positional arguments and closes over the rest (flags
   such as `training`), so gradients still flow to every tensor argument.
2. **Nested layers are marked too**: `"full"` marks every layer created in the scope, the
   model itself and the layers nested in others (a functional model built inside the scope is a
   layer created in it; a block's attention, its projections, ...). Recomputations then nest:
   recomputing the model whole on top of its layers runs the forward pass three times, and a
   layer nested in a marked one runs once more per level, for no further saving (only the
   outermost marked layer's inputs are kept anyway). `unmark_model` leaves one mark on each
   path from the model down (private `_remat_mode`): on the model's own layers, or one level
   further in where a layer holds a random layer (see 3).
3. **Mixed precision and randomness are not replayed**: the recomputation runs in the backward
   pass, outside the layer's autocast scope, so a `mixed_bfloat16` layer recomputes in float32
   and its gradient ops fail on mixed dtypes ("Input 'features' of 'ReluGrad' Op has type
   float32 that does not match type bfloat16"); `remat` re-enters the scope. Dropout layers
   would draw a new mask when recomputed (their seed generator advances on every call), and so
   would any recomputed layer that holds one: `unmark_model` leaves them storing theirs, and
   marks the layers inside a layer that holds an active one (rate > 0) instead of that layer.

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


def _draws_random_numbers(layer: Any) -> bool:
    """A random layer that is not a no-op (a Dropout of rate 0 returns its inputs)."""
    return isinstance(layer, _RANDOM_LAYERS) and bool(
        getattr(layer, "rate", None) or getattr(layer, "stddev", None))


def _sublayers(layer: Any) -> list[Any]:
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _keep_outermost(layer: Any, mark: Any) -> None:
    """Marks `layer` (storing only its inputs) and clears every mark nested in it, or, if a
    random layer hides in it, leaves it unmarked and does the same one level further in."""
    inner = list(layer._flatten_layers(include_self=False))
    if isinstance(layer, keras.layers.InputLayer):  # never called: nothing to recompute
        layer._remat_mode = None
        return
    if _draws_random_numbers(layer) or any(_draws_random_numbers(sub) for sub in inner):
        layer._remat_mode = None
        for sub in _sublayers(layer):
            _keep_outermost(sub, mark)
        return
    layer._remat_mode = mark
    for sub in inner:
        sub._remat_mode = None


def _store_the_last_block(layers: list[Any]) -> None:
    """Unmarks the model's last block and the layers after it (`layers` in model order).

    Their backward runs first, straight after the forward: recomputing them would rebuild at
    once what the forward has just dropped, costing time for little lower a peak (the peak
    comes while one block's activations are alive, whichever block; measured on the bench's
    8-block Transformer: step 1.23x instead of 1.41x, peak 0.650x instead of 0.629x). A block is
    a layer that groups others (e.g. an encoder block); in a model without any, only the last
    layer stores its work.
    """
    blocks = [i for i, layer in enumerate(layers) if _sublayers(layer)]
    start = blocks[-1] if blocks else len(layers) - 1
    for layer in layers[max(start, 0):]:
        layer._remat_mode = None
        for sub in layer._flatten_layers(include_self=False):
            sub._remat_mode = None


def unmark_model(model: Any) -> Any:
    """Leaves each layer of a model built in `RematScope` recomputing once; returns the model.

    `"full"`: the model's own layers keep their mark and the layers nested in them lose theirs,
    except where a marked layer would redraw random numbers (then its sublayers are marked
    instead, and the random layers store their outputs). Other modes (`"activations"`): the
    model itself and its random layers lose their marks (nothing nests there: only activation
    functions recompute).
    """
    mark = getattr(model, "_remat_mode", None)
    if not getattr(model, "layers", None) or mark is None:
        return model
    model._remat_mode = None
    if mark.mode == "full":
        layers = _sublayers(model)
        for layer in layers:
            _keep_outermost(layer, mark)
        _store_the_last_block(layers)
        return model
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, _RANDOM_LAYERS):
            layer._remat_mode = None
    return model
