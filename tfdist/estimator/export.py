"""The `tf.estimator.export` namespace: serving input receivers and export outputs.

A `serving_input_receiver_fn` is written exactly as for tf.estimator: it creates
`tf.compat.v1.placeholder`s for what a client sends (the receiver tensors), turns them into the
features `model_fn` expects, and returns a `ServingInputReceiver`. tfdist traces it in a TF1-style
graph (`tf.compat.v1.wrap_function`) and prunes it into a function from receiver tensors to
features, which the exported `serving_default` signature calls before `model_fn`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

DEFAULT_SERVING_SIGNATURE_DEF_KEY = "serving_default"
_TENSORS = (tf.Tensor, tf.SparseTensor, tf.RaggedTensor)


def _as_dict(value: Any, default_key: str, what: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        result = dict(value)
    else:
        result = {default_key: value}
    for key, tensor in result.items():
        if not isinstance(key, str):
            raise TypeError(f"{what} keys must be strings; received {key!r}.")
        if not isinstance(tensor, _TENSORS):
            raise TypeError(
                f"{what}[{key!r}] must be a tensor; received {type(tensor).__name__}. Create "
                "receiver tensors with tf.compat.v1.placeholder inside the "
                "serving_input_receiver_fn."
            )
    return result


class ServingInputReceiver:
    """What a `serving_input_receiver_fn` returns.

    Args:
        features: The features for `model_fn`: a tensor or a dict of tensors. A single tensor
            is wrapped as `{"feature": tensor}`, as in tf.estimator (use
            `TensorServingInputReceiver` to pass it unwrapped).
        receiver_tensors: The placeholders clients feed: a tensor (named `"input"`) or a dict.
        receiver_tensors_alternatives: Not supported; must be `None`.

    Raises:
        TypeError: Values that are not tensors, or non-string keys.
        ValueError: `receiver_tensors_alternatives` was given.
    """

    def __init__(self, features: Any, receiver_tensors: Any,
                 receiver_tensors_alternatives: Any = None) -> None:
        if receiver_tensors_alternatives is not None:
            raise ValueError(
                "receiver_tensors_alternatives is not supported. Export one receiver per "
                "exporter instead."
            )
        self.features = _as_dict(features, "feature", "features")
        self.receiver_tensors = _as_dict(receiver_tensors, "input", "receiver_tensors")


class TensorServingInputReceiver(ServingInputReceiver):
    """A receiver whose features are one tensor, passed to `model_fn` as is (not in a dict)."""

    def __init__(self, features: Any, receiver_tensors: Any,
                 receiver_tensors_alternatives: Any = None) -> None:
        super().__init__({"feature": features}, receiver_tensors, receiver_tensors_alternatives)
        self.features = features


def _placeholder(name: str, value: Any, default_batch_size: int | None) -> tf.Tensor:
    if isinstance(value, tf.TensorSpec):
        shape, dtype = value.shape, value.dtype
    elif isinstance(value, (tf.Tensor, tf.Variable)):
        shape, dtype = value.shape, value.dtype
    elif isinstance(value, np.ndarray) or np.isscalar(value):
        array = np.asarray(value)
        shape, dtype = tf.TensorShape(array.shape), tf.as_dtype(array.dtype)
    else:
        raise TypeError(
            f"build_raw_serving_input_receiver_fn: features[{name!r}] must be a tf.TensorSpec, "
            f"a tensor or an array showing shape and dtype; received {type(value).__name__}."
        )
    if shape.rank:
        shape = tf.TensorShape([default_batch_size, *shape[1:]])
    return tf.compat.v1.placeholder(dtype, shape, name=name)


def build_raw_serving_input_receiver_fn(features: Any, default_batch_size: int | None = None):
    """A receiver fn whose clients feed the features directly.

    Args:
        features: A dict of name -> `tf.TensorSpec` (or example tensor/array) — the model gets
            the dict — or a single spec, which the model gets as a tensor, fed as `"input"`.
            The first dimension becomes the batch dimension.
        default_batch_size: Fixed batch size. Defaults to `None` (any).

    Returns:
        A `serving_input_receiver_fn`.
    """
    if isinstance(features, Mapping):

        def serving_input_receiver_fn() -> ServingInputReceiver:
            tensors = {k: _placeholder(k, v, default_batch_size) for k, v in features.items()}
            return ServingInputReceiver(tensors, dict(tensors))

    else:

        def serving_input_receiver_fn() -> ServingInputReceiver:
            tensor = _placeholder("input", features, default_batch_size)
            return TensorServingInputReceiver(tensor, {"input": tensor})

    return serving_input_receiver_fn


def build_parsing_serving_input_receiver_fn(feature_spec: Mapping[str, Any],
                                            default_batch_size: int | None = None):
    """A receiver fn whose clients feed serialized `tf.train.Example`s (`"examples"`).

    Args:
        feature_spec: Name -> `tf.io.FixedLenFeature` / `VarLenFeature` / ...
        default_batch_size: Fixed batch size. Defaults to `None` (any).

    Returns:
        A `serving_input_receiver_fn`.
    """

    def serving_input_receiver_fn() -> ServingInputReceiver:
        serialized = tf.compat.v1.placeholder(
            tf.string, [default_batch_size], name="input_example_tensor")
        features = tf.io.parse_example(serialized, dict(feature_spec))
        return ServingInputReceiver(features, {"examples": serialized})

    return serving_input_receiver_fn


class ExportOutput:
    """An exported signature's outputs (base class)."""

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


class PredictOutput(ExportOutput):
    """Outputs a tensor (as `"output"`) or a dict of tensors."""

    def __init__(self, outputs: Any) -> None:
        self.outputs = outputs

    def as_dict(self) -> dict[str, Any]:
        return dict(self.outputs) if isinstance(self.outputs, Mapping) else {"output": self.outputs}


class ClassificationOutput(ExportOutput):
    """Outputs `scores` and/or `classes`."""

    def __init__(self, scores: Any = None, classes: Any = None) -> None:
        if scores is None and classes is None:
            raise ValueError("ClassificationOutput needs scores, classes or both.")
        self.scores, self.classes = scores, classes

    def as_dict(self) -> dict[str, Any]:
        out = {}
        if self.scores is not None:
            out["scores"] = self.scores
        if self.classes is not None:
            out["classes"] = self.classes
        return out


class RegressionOutput(ExportOutput):
    """Outputs one tensor as `"outputs"`."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"outputs": self.value}
