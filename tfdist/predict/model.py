"""Loading a trained model once per worker, and what its serving signature expects.

A model is a `.keras` file, a SavedModel directory (`model.export`, `tf.saved_model.save`, or
the Estimator-style export with its `serving_default` signature), or a directory holding one of
those: a `tfdist-train` model dir (`model.keras`, `saved_model/`, or `export/<timestamp>/` from
the estimator route) or an export base with timestamped versions (the newest is used).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from tfdist.predict.errors import PredictError

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


def _is_saved_model(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt"))


def _versions(path: str) -> list[str]:
    found = [os.path.join(path, n) for n in os.listdir(path) if n.isdigit()]
    return sorted((p for p in found if _is_saved_model(p)), key=lambda p: int(os.path.basename(p)))


def resolve_path(path: str) -> tuple[str, str]:
    """The model file or SavedModel directory `path` names, and its kind.

    Raises:
        PredictError: Nothing loadable there, with what was looked for.
    """
    if not path:
        raise PredictError("Invalid value for argument `model`. Received: model=''. Pass a .keras "
                           "file, a SavedModel directory or a tfdist-train model_dir.")
    if not os.path.exists(path):
        raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, which "
                           "does not exist. Pass a .keras file, a SavedModel directory or a "
                           "tfdist-train model_dir (e.g. runs/default after `make train`).")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return path, "keras"
        raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, a file "
                           "that is not a .keras model. Pass a .keras file or a SavedModel directory.")
    if _is_saved_model(path):
        return path, "saved_model"
    if os.path.isfile(os.path.join(path, "model.keras")):
        return os.path.join(path, "model.keras"), "keras"
    for sub in ("saved_model", "export"):
        if os.path.isdir(os.path.join(path, sub)):
            return resolve_path(os.path.join(path, sub))
    versions = _versions(path)
    if versions:
        return versions[-1], "saved_model"
    raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, a directory "
                       "with no model.keras, saved_model.pb, saved_model/, export/ or timestamped "
                       "export in it. Pass the model file or the export directory.")


def fingerprint(path: str, kind: str) -> str:
    """A short hash of the model's files (its graph and weights), for the run manifest."""
    digest = hashlib.sha256()
    if kind == "keras":
        files = [path]
    else:
        files = [os.path.join(root, n) for root, _, names in os.walk(path) for n in sorted(names)]
    for name in sorted(files):
        digest.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


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
    return Model(path, "keras", specs, shapes, call)


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

    model = Model(path, "saved_model", specs, shapes, call)
    object.__setattr__(model, "_keepalive", loaded)  # the signature needs its object alive
    return model


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
