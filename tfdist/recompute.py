"""Recomputation (rematerialisation): recompute activations in the backward pass, don't store them.

Keras 3 marks layers for recomputation when they are *created* inside `keras.RematScope(mode)`;
on TensorFlow each marked layer's call runs under `tf.recompute_grad`, which keeps only the
layer's inputs for the backward pass and runs the layer's forward again there. That trades
compute (up to one more forward pass) for the memory of everything the layer computes inside:
attention scores and softmax, the intermediates of GELU or normalisation. A layer whose only
intermediate is its own output (a Dense + ReLU in a plain MLP) saves nothing.

`"full"` on a model built by `builder` recomputes each of the model's own layers once: not the
model itself, and not the layers nested in them (Keras's `RematScope` marks all three, and
nested recomputations rerun inner layers once per level). A layer that groups others is
therefore recomputed whole from its inputs: the registry Transformer's encoder blocks are such
layers, so `full` keeps only each block's input and one block's activations at a time (classic
per-block checkpointing). A layer that holds an active Dropout is not recomputed whole (it would
draw a new mask); its own layers are, the Dropout keeps its mask. The last block and the layers
after it (in a model without blocks, the last layer) are not recomputed: their backward runs
first, right after the forward, so recomputing them costs time and barely lowers the peak. See
`tfdist.compat.keras_remat`, which also makes marked layers work inside `tf.function`.

Every route takes a model *builder* (`Trainer(model=...)`, an Estimator `model_fn`, the code that
builds a model for `fit`), so `builder(build, mode)` is the switch for all three. Keras keeps the
scope per thread and `MirroredStrategy` may call an Estimator's `model_fn` on its replica
threads, so the scope is entered inside the builder, on whichever thread builds.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from tfdist import checks

# "none", then the Keras RematScope modes that work inside tf.function (with compat.keras_remat).
# Not "larger_than": it sizes each layer's output with `compute_output_spec` on the real graph
# tensors, which fails in graph mode ("'SymbolicTensor' object has no attribute 'sparse'").
MODES = ("none", "full", "activations")

T = TypeVar("T")


def check_mode(mode: str, *, name: str = "remat", error: type[Exception] = ValueError) -> str:
    """Returns `mode` if it is one of `MODES`; raises `error` naming `name` otherwise."""
    return checks.one_of(name, mode, MODES, error=error)


@contextlib.contextmanager
def scope(mode: str) -> Iterator[None]:
    """Layers created in the block recompute as `mode` says (`"none"`: a no-op block).

    Args:
        mode: One of `MODES`. `"full"`: every layer (once the model is built by `builder`:
            each of the model's own layers, whole); `"activations"`: only the activation
            functions of layers that have one.

    Raises:
        ValueError: An unknown mode.
    """
    check_mode(mode)
    if mode == "none":
        yield
        return
    import keras

    from tfdist.compat import keras_remat

    keras_remat.install()  # keyword arguments inside tf.function (keras-team/keras#21207)
    with keras.RematScope(mode=mode):
        yield


def builder(build: Callable[[], T], mode: str) -> Callable[[], T]:
    """Wraps a zero-argument model builder so that it builds under `scope(mode)`.

    Args:
        build: Builds the model (e.g. `lambda: models.build("transformer", ...)`).
        mode: One of `MODES`; `"none"` returns `build` itself.

    Returns:
        A builder for any route: `tfdist.loop.Trainer(model=...)`, an Estimator `model_fn`, or
        called under the strategy's scope before `compile` and `fit`.

    Raises:
        ValueError: An unknown mode (checked now, not when the model is built).
    """
    check_mode(mode)
    if mode == "none":
        return build

    @functools.wraps(build)
    def build_recomputing(*args: Any, **kwargs: Any) -> T:
        from tfdist.compat import keras_remat

        with scope(mode):
            model = build(*args, **kwargs)
        # The model and the layers nested in its layers are marked too; recomputations inside
        # recomputations rerun the inner forward once per level for no further saving.
        return keras_remat.unmark_model(model)

    return build_recomputing
