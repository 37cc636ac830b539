"""Writing a timestamped SavedModel from `model_fn` in PREDICT mode and a serving input receiver."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from tfdist.estimator import export as export_lib
from tfdist.estimator.spec import ModeKeys
from tfdist.estimator.variable_store import CHECKPOINT_ATTRIBUTE


@dataclasses.dataclass
class Receiver:
    """A traced `serving_input_receiver_fn`.

    Attributes:
        input_signature: Receiver tensor name -> `tf.TensorSpec` (the signature's inputs).
        feature_spec: Spec of the features `model_fn` gets (batch dimension relaxed).
        to_features: Maps a dict of receiver tensors to the features.
    """

    input_signature: dict[str, tf.TensorSpec]
    feature_spec: Any
    to_features: Callable[[Mapping[str, tf.Tensor]], Any]


def _relaxed_spec(tensor: Any) -> Any:
    spec = tf.type_spec_from_value(tensor)
    if isinstance(spec, tf.TensorSpec) and spec.shape.rank:
        return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)
    return spec


def trace_receiver(serving_input_receiver_fn: Callable[[], Any]) -> Receiver:
    """Traces the receiver fn in a TF1-style graph and prunes it to receiver tensors -> features.

    Raises:
        TypeError: It is not callable or does not return a `ServingInputReceiver`.
        ValueError: A receiver tensor is not a placeholder fed by clients.
    """
    if not callable(serving_input_receiver_fn):
        raise TypeError(
            "Invalid value for argument `serving_input_receiver_fn`. Received: "
            f"{type(serving_input_receiver_fn).__name__}. Pass a function returning a "
            "tfdist.estimator.export.ServingInputReceiver (e.g. from "
            "build_raw_serving_input_receiver_fn)."
        )
    holder: list[Any] = []

    def body():
        receiver = serving_input_receiver_fn()
        if not isinstance(receiver, export_lib.ServingInputReceiver):
            raise TypeError(
                "serving_input_receiver_fn must return a "
                "tfdist.estimator.export.ServingInputReceiver; it returned "
                f"{type(receiver).__name__}."
            )
        holder.append(receiver)
        return receiver.receiver_tensors, receiver.features

    wrapped = tf.compat.v1.wrap_function(body, [])
    receiver_tensors, features = wrapped.structured_outputs
    names = sorted(receiver_tensors)
    for name in names:
        tensor = receiver_tensors[name]
        if not isinstance(tensor, tf.Tensor) or tensor.op.type != "Placeholder":
            raise ValueError(
                f"receiver_tensors[{name!r}] must be a tf.compat.v1.placeholder (what clients "
                f"feed); received {tensor!r}."
            )
    flat_features = tf.nest.flatten(features, expand_composites=False)
    feeds = [receiver_tensors[n] for n in names]
    direct = {id(t): i for i, t in enumerate(feeds)}
    computed = [t for t in flat_features if id(t) not in direct]
    pruned = wrapped.prune(feeds=feeds, fetches=computed) if computed else None

    def to_features(inputs: Mapping[str, tf.Tensor]) -> Any:
        fed = [inputs[n] for n in names]
        outputs = iter(pruned(*fed) if pruned is not None else ())
        flat = [fed[direct[id(t)]] if id(t) in direct else next(outputs) for t in flat_features]
        return tf.nest.pack_sequence_as(features, flat)

    signature = {
        n: tf.TensorSpec(receiver_tensors[n].shape, receiver_tensors[n].dtype, name=n) for n in names
    }
    return Receiver(signature, tf.nest.map_structure(_relaxed_spec, features), to_features)


def signature_outputs(spec: Any) -> dict[str, dict[str, Any]]:
    """Signature key -> output dict, from a PREDICT spec's `export_outputs` (or its predictions).

    Raises:
        ValueError: Several export outputs and none named `serving_default`.
        TypeError: An export output that is not an `ExportOutput`.
    """
    export_outputs = spec.export_outputs
    if not export_outputs:
        export_outputs = {
            export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY: export_lib.PredictOutput(spec.predictions)
        }
    result = {}
    for key, output in export_outputs.items():
        if not isinstance(output, export_lib.ExportOutput):
            raise TypeError(
                f"export_outputs[{key!r}] must be a tfdist.estimator.export.PredictOutput, "
                f"ClassificationOutput or RegressionOutput; received {type(output).__name__}."
            )
        result[key] = output.as_dict()
    if export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY not in result:
        if len(result) != 1:
            raise ValueError(
                f"export_outputs has {len(result)} entries ({sorted(result)}) and none is named "
                f"{export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY!r}. Name the default one so."
            )
        (only,) = result.values()
        result[export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY] = only
    return result


def serving_module(receiver: Receiver, call_model_fn: Callable[..., Any],
                   used_variables: Callable[[], dict[str, Any]],
                   resources: list[Any] | None = None) -> tuple[tf.Module, dict[str, Any]]:
    """A module with one serving function per signature, tracking the variables they read.

    Args:
        receiver: The traced receiver.
        call_model_fn: `call(features, labels, mode)` -> spec, with the variable store active.
        used_variables: After tracing, path -> variable for what the functions read.
        resources: Other trackable objects the functions capture (e.g. Keras lookup layers
            made outside `model_fn`), saved with the module. Defaults to none.

    Returns:
        The module to save (its `serve` is the `serving_default` function) and the signatures.
    """
    def outputs(inputs):
        return signature_outputs(call_model_fn(receiver.to_features(inputs), None, ModeKeys.PREDICT))

    keys = list(tf.function(outputs).get_concrete_function(receiver.input_signature).structured_outputs)
    signatures = {}
    for key in keys:
        serve = tf.function(lambda inputs, key=key: outputs(inputs)[key],
                            input_signature=[receiver.input_signature])
        signatures[key] = serve.get_concrete_function()
    module = tf.Module()
    default = export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    module.serve = tf.function(lambda inputs: outputs(inputs)[default],
                               input_signature=[receiver.input_signature])
    module.serve.get_concrete_function()
    setattr(module, CHECKPOINT_ATTRIBUTE, used_variables())
    module.resources = list(resources or [])
    return module, signatures


def timestamped_dir(export_dir_base: str) -> str:
    """`export_dir_base/<unix seconds>`, a name not yet taken."""
    stamp = int(time.time())
    while tf.io.gfile.exists(os.path.join(export_dir_base, str(stamp))):
        stamp += 1
    return os.path.join(export_dir_base, str(stamp))


def save(module: tf.Module, signatures: dict[str, Any], export_dir_base: str,
         assets_extra: Mapping[str, str] | None = None) -> str:
    """Saves into a temporary directory, then renames it to the timestamped one.

    Returns:
        The export directory.
    """
    tf.io.gfile.makedirs(export_dir_base)
    final = timestamped_dir(export_dir_base)
    temp = os.path.join(export_dir_base, f"temp-{os.path.basename(final)}-{os.getpid()}")
    tf.saved_model.save(module, temp, signatures=signatures)
    if assets_extra:
        extra = os.path.join(temp, "assets.extra")
        for dest, source in assets_extra.items():
            target = os.path.join(extra, dest)
            tf.io.gfile.makedirs(os.path.dirname(target))
            tf.io.gfile.copy(source, target, overwrite=True)
    try:
        tf.io.gfile.rename(temp, final)
    except (OSError, tf.errors.OpError):
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final
