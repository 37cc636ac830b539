"""Loading a trained model once per worker, and what its serving signature expects.

A model is a `.keras` file, a SavedModel directory (`model.export`, `tf.saved_model.save`, or
the Estimator-style export with its `serving_default` signature), or a directory holding one of
those: a `tfdist-train` model dir (`model.keras`, `saved_model/`, or `export/<timestamp>/` from
the estimator route) or an export base with timestamped versions (the newest is used).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from tfdist.predict.errors import PredictError
from tfdist.predict.locate import fingerprint, resolve_path  # noqa: F401  (part of this API)

SIGNATURE_KEY = "serving_default"


@dataclasses.dataclass(frozen=True)
class Model:
    """A loaded model and its serving interface.

    Attributes:
        path: The file or directory loaded.
        kind: `"keras"` or `"saved_model"`.
        inputs: Input name -> `tf.TensorSpec` (batch dimension `None`), in signature order.
        outputs: Output name -> per-record shape (`None` for unknown sizes), in write order.
        call: `call(features: dict) -> dict` of output tensors; traceable.
    """

    path: str
    kind: str
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, list[int | None]]
    call: Callable[[Mapping[str, tf.Tensor]], dict[str, tf.Tensor]]
    handle: Any = None  # the loaded object, kept alive while `call` is used


def _spec(spec: Any, name: str) -> tf.TensorSpec:
    shape = tf.TensorShape(spec.shape)
    if shape.rank is not None and shape.rank > 0:
        shape = tf.TensorShape([None, *shape[1:]])
    return tf.TensorSpec(shape, spec.dtype, name=name)


def _load_keras(path: str) -> Model:
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 -- any load failure is the same user error
        raise PredictError(f"Cannot load the model {path!r}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None
    try:
        inputs = model.inputs
        outputs = model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs:
        raise PredictError(f"The model {path!r} has no defined inputs (a subclassed model that was "
                           "never built?). Export it with model.export(...) and pass the SavedModel.")
    names = [t.name.split(":")[0] for t in inputs]
    specs = {n: _spec(t, n) for n, t in zip(names, inputs)}
    out_names = ([f"output_{i}" for i in range(len(outputs))] if len(outputs) > 1
                 else ["output_0"])

    def call(features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        args = [features[n] for n in names]
        result = model(args[0] if len(args) == 1 else args, training=False)
        return dict(zip(out_names, tf.nest.flatten(result)))

    shapes = {n: list(t.shape[1:]) for n, t in zip(out_names, outputs)}
    return Model(path, "keras", specs, shapes, call, handle=model)


def _load_saved_model(path: str) -> Model:
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # noqa: BLE001
        raise PredictError(f"Cannot load the SavedModel {path!r}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None
    signatures = dict(loaded.signatures)
    if SIGNATURE_KEY not in signatures:
        raise PredictError(f"The SavedModel {path!r} has no {SIGNATURE_KEY!r} signature; it has "
                           f"{sorted(signatures) or 'none'}. Export it with a serving signature.")
    fn = signatures[SIGNATURE_KEY]
    _, kwargs = fn.structured_input_signature
    specs = {n: _spec(s, n) for n, s in kwargs.items()}
    out_names = tuple(sorted(fn.structured_outputs))
    shapes = {n: fn.structured_outputs[n].shape.as_list()[1:] for n in out_names}

    def call(features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        result = fn(**{n: features[n] for n in specs})
        return {n: result[n] for n in out_names}

    return Model(path, "saved_model", specs, shapes, call, handle=loaded)


def load(path: str, strategy: tf.distribute.Strategy | None = None) -> Model:
    """Loads the model at `path` (see `resolve_path`), under `strategy`'s scope if given.

    Args:
        path: A `.keras` file, a SavedModel directory, or a directory holding one.
        strategy: Variables are created under its scope (mirrored over its replicas).

    Returns:
        The `Model`.

    Raises:
        PredictError: Nothing loadable at `path`, or loading failed (one line).
    """
    resolved, kind = resolve_path(path)
    scope = strategy.scope() if strategy is not None else _null()
    with scope:
        return _load_keras(resolved) if kind == "keras" else _load_saved_model(resolved)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
