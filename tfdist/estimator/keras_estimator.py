"""`model_to_estimator`: a compiled Keras model as an `Estimator` (tf.keras.estimator's).

The Estimator's `model_fn` follows the usual build rules (see `estimator.py`): each call
rebuilds the model from its config (uncompiled), and the variable store hands the new layers
the stored variables. The compiled loss and metrics are the objects `compile` would make from
the original's compile config (`compat.keras_compile_utils`), so Keras resolves them as `fit`
would — `"accuracy"` by the labels' shape, several outputs, `loss_weights` — plus the model's
regularization losses. TRAIN returns a fresh copy of the compiled optimizer, which the
Estimator builds under its strategy.

The Estimator starts from the Keras model's weights as they were at conversion (as
tf.estimator's did): each variable, when first created, takes the value of the original weight
with the same Keras path. A checkpoint in `model_dir` takes precedence when there is one.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfdist.compat import keras_compile_utils
from tfdist.compat import keras_names
from tfdist.estimator.estimator import Estimator
from tfdist.estimator.estimator import require_eager
from tfdist.estimator.run_config import RunConfig
from tfdist.estimator.spec import EstimatorSpec
from tfdist.estimator.spec import ModeKeys

_COMPILE_ARGS = ("loss", "loss_weights", "metrics", "weighted_metrics")


def _load(keras_model: Any, keras_model_path: Any, custom_objects: dict | None) -> keras.Model:
    if (keras_model is None) == (keras_model_path is None):
        raise ValueError(
            "Pass exactly one of `keras_model` and `keras_model_path`. Received: "
            f"keras_model={type(keras_model).__name__}, keras_model_path={keras_model_path!r}."
        )
    if keras_model_path is not None:
        path = os.fspath(keras_model_path)
        if not os.path.exists(path):
            raise ValueError(
                f"Invalid value for argument `keras_model_path`. Received: {path!r}, which does "
                "not exist. Pass a file written by model.save('model.keras')."
            )
        keras_model = keras.models.load_model(path, custom_objects=custom_objects, compile=True)
    if not isinstance(keras_model, keras.Model):
        raise TypeError(
            f"Invalid value for argument `keras_model`. Received: {type(keras_model).__name__}. "
            "Pass a compiled keras.Model."
        )
    if not keras_model.compiled or keras_model.optimizer is None or keras_model.loss is None:
        raise ValueError(
            f"The Keras model {keras_model.name!r} is not compiled with an optimizer and a loss. "
            "Call model.compile(optimizer=..., loss=..., metrics=...) before model_to_estimator."
        )
    return keras_model


def _output_names(model: keras.Model) -> list[str]:
    """Names of the model's outputs (Sequential models: the last layer's name)."""
    names = getattr(model, "output_names", None)
    if names:
        return list(names)
    return [model.layers[-1].name] if model.layers else ["output"]


def _input_names(model: keras.Model) -> list[str] | None:
    try:
        return [t.name for t in model.inputs]
    except (AttributeError, ValueError):  # a subclassed model that was never called
        return None


def _inputs(features: Any, input_names: list[str] | None) -> Any:
    """The model's inputs from the features an input_fn returned."""
    if not isinstance(features, Mapping):
        return features
    names = input_names or []
    if len(features) == 1 and len(names) <= 1:
        return next(iter(features.values()))  # e.g. {"dense_input": x}: tf.keras's input name
    if names and set(names) <= set(features):
        return features[names[0]] if len(names) == 1 else {n: features[n] for n in names}
    raise ValueError(
        f"input_fn's features have keys {sorted(features)}, which do not name the Keras "
        f"model's inputs {names}. Key the features by the input names (keras.Input(name=...)), "
        "or return a single tensor for a single-input model."
    )


def _predictions(outputs: Any, names: list[str]) -> Any:
    if isinstance(outputs, Mapping):
        return dict(outputs)
    if isinstance(outputs, (list, tuple)):
        return dict(zip(names, outputs))
    return {names[0]: outputs}


def _initial_values(keras_model: keras.Model, model_class: type[keras.Model], model_config: dict,
                    custom_objects: dict) -> dict[str, np.ndarray]:
    """Variable path in `model_fn` -> the Keras model's current value of that weight.

    Paths inside `model_fn` come from Keras's fresh naming there, and can differ from the
    original's (e.g. "dense/kernel" vs "sequential/dense/kernel"): so rebuild the model once the
    same way and pair the weights by position (the same config lists them in the same order).

    Raises:
        ValueError: The rebuilt model's weights do not match the original's.
    """
    if not keras_model.weights:
        return {}
    with keras_names.fresh_names(), keras.saving.custom_object_scope(custom_objects):
        reference = model_class.from_config(copy.deepcopy(model_config))
    if not reference.weights and getattr(keras_model, "inputs", None) is None:
        # A subclassed model builds on its first call, inside model_fn: its weights start from
        # their initializers (or a checkpoint), not from the Keras model's.
        logging.warning("tfdist.estimator: %r is built on its first call; model_to_estimator "
                        "starts it from its initializers, not from its current weights.",
                        keras_model.name)
        return {}
    shapes = [tuple(w.shape) for w in keras_model.weights]
    if [tuple(w.shape) for w in reference.weights] != shapes:
        raise ValueError(
            f"The Keras model {keras_model.name!r} rebuilt from its config has other weights "
            f"than the model ({len(reference.weights)} vs {len(shapes)}). Make get_config() "
            "return everything the model is built from."
        )
    return {ref.path: keras.ops.convert_to_numpy(w)
            for ref, w in zip(reference.weights, keras_model.weights)}


def make_model_fn(keras_model: keras.Model, custom_objects: dict | None = None) -> Any:
    """The `model_fn(features, labels, mode)` of a compiled Keras model (see the module doc)."""
    model_class, model_config = type(keras_model), keras_model.get_config()
    compile_config = keras_model.get_compile_config()
    optimizer_config = keras.optimizers.serialize(keras_model.optimizer)
    output_names = _output_names(keras_model)
    input_names = _input_names(keras_model)
    objects = dict(custom_objects or {})
    initial = _initial_values(keras_model, model_class, model_config, objects)

    def take_initial_values(next_creator, **kwargs):
        value = initial.get(keras_names.variable_path(kwargs.get("name")))
        if value is not None:
            kwargs["initial_value"] = value
        return next_creator(**kwargs)

    def model_fn(features, labels, mode):
        training = mode == ModeKeys.TRAIN
        with keras.saving.custom_object_scope(objects), tf.variable_creator_scope(
                take_initial_values):
            model = model_class.from_config(copy.deepcopy(model_config))  # it pops keys
            outputs = model(_inputs(features, input_names), training=training)
            if mode == ModeKeys.PREDICT:
                return EstimatorSpec(mode, predictions=_predictions(outputs, output_names))
            args = keras.saving.deserialize_keras_object(
                {k: compile_config.get(k) for k in _COMPILE_ARGS})
            loss_fn = keras_compile_utils.compiled_loss(
                args["loss"], args["loss_weights"], output_names)
            # The replica's own mean: tfdist calls model_fn with Keras's replica scaling off.
            loss = loss_fn(labels, outputs)
            if model.losses:  # regularization, unscaled
                loss += tf.add_n([tf.cast(x, loss.dtype) for x in model.losses])
            # State of one evaluation, never checkpointed: per-output losses, compiled metrics.
            metrics = {m.name: m for m in loss_fn.metrics}
            if mode == ModeKeys.EVAL:
                compiled = keras_compile_utils.compiled_metrics(
                    args["metrics"], args["weighted_metrics"], output_names)
                if compiled is not None:
                    compiled.update_state(labels, outputs)
                    metrics[compiled.name] = compiled
                return EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)
            optimizer = keras.optimizers.deserialize(optimizer_config)
            return EstimatorSpec(mode, loss=loss, optimizer=optimizer, eval_metric_ops=metrics)

    return model_fn


def model_to_estimator(
    keras_model: keras.Model | None = None,
    keras_model_path: str | None = None,
    custom_objects: dict[str, Any] | None = None,
    model_dir: str | None = None,
    config: RunConfig | None = None,
    checkpoint_format: str | None = None,
    metric_names_map: Mapping[str, str] | None = None,
    export_outputs: Mapping[str, Any] | None = None,
) -> Estimator:
    """An `Estimator` that trains, evaluates, predicts with and exports a compiled Keras model.

    As `tf.keras.estimator.model_to_estimator`: `input_fn` returns `(features, labels)`,
    features keyed by the model's input names (any single key for a single-input model) or a
    plain tensor; `evaluate` returns the compiled loss and metrics; `predict` yields the
    outputs keyed by output name (the last layer's name for a Sequential model). The model
    is rebuilt inside the Estimator's `model_fn`, from its current weights.

    Args:
        keras_model: A compiled `keras.Model` (Sequential, functional, or subclassed with
            `get_config`). Exclusive with `keras_model_path`.
        keras_model_path: A compiled model saved by `model.save(...)`.
        custom_objects: Custom layers, losses, metrics to rebuild the model. Defaults to none.
        model_dir: As for `Estimator`. Defaults to `config.model_dir` or a temporary directory.
        config: A `RunConfig`. Defaults to `RunConfig()`.
        checkpoint_format: `None` or `"checkpoint"` (object-based, tfdist's only format).
        metric_names_map: Not supported; must be `None` (metrics keep their Keras names).
        export_outputs: Not supported; must be `None` (exports serve the predictions).

    Returns:
        A `tfdist.estimator.Estimator`.

    Raises:
        RuntimeError: TensorFlow is in graph mode.
        ValueError: Neither or both models given, a model that is not compiled, or an
            unsupported argument.
        TypeError: `keras_model` is not a Keras model.

    Example:

    ```python
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    estimator = tfdist.estimator.model_to_estimator(keras_model=model, model_dir="/tmp/m")
    estimator.train(input_fn=input_fn, steps=500)
    ```
    """
    require_eager("tfdist.estimator.model_to_estimator")
    if checkpoint_format not in (None, "checkpoint"):
        raise ValueError(
            "Invalid value for argument `checkpoint_format`. Received: "
            f"checkpoint_format={checkpoint_format!r}. tfdist writes object-based checkpoints "
            "only: pass 'checkpoint' or leave it out."
        )
    for name, value in (("metric_names_map", metric_names_map),
                        ("export_outputs", export_outputs)):
        if value is not None:
            raise ValueError(
                f"model_to_estimator({name}=...) is not supported. Received: {name}={value!r}. "
                "Leave it out: metrics keep their Keras names and exports serve the predictions."
            )
    model = _load(keras_model, keras_model_path, custom_objects)
    return Estimator(make_model_fn(model, custom_objects), model_dir=model_dir, config=config)
