"""Workaround: a Keras 3 variable split across parameter servers cannot be differentiated or saved.

Upstream: keras-team/keras#18624 ("Parameter server training is not supported in Keras 3");
FINDINGS §9 (spike of issue 16). Under `ParameterServerStrategy` with a `variable_partitioner`,
a Keras 3 variable's `.value` is a `tf.distribute` `ShardedVariable` (the partitioner does split
a Keras `Embedding` table across the ps tasks), but in TF 2.21 / Keras 3.15:

- `tape.gradient(loss, model.trainable_variables)` fails with
  "'ShardedVariable' object has no attribute 'handle'" (Keras' variable forwards `.handle`);
- the optimizer cannot be built for it ("ShardedVariable doesn't support being used as a
  reference": it colocates slots with the variable), nor update it (`extended.update` colocates);
- `tf.train.Checkpoint(model=model)` fails with "'ShardedVariable' object has no attribute
  'device'" (Keras' `_serialize_to_tensors` falls back to saving the `ShardedVariable` whole).

So tfdist differentiates and optimises the shards (plain `tf.Variable`s, one per ps task, whose
optimizer slots then sit on the same ps), and checkpoints the model's variables by their
TensorFlow values, where a `ShardedVariable` saves as one full tensor (restorable into any
number of shards). Unsharded variables pass through unchanged.
Canary: tests/test_compat.py::test_canary_keras_cannot_differentiate_or_save_sharded_variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.distribute import sharded_variable

UPSTREAM = "https://github.com/keras-team/keras/issues/18624"


def is_sharded(variable: Any) -> bool:
    """True for a Keras (or TF) variable split across parameter servers."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return isinstance(value, sharded_variable.ShardedVariable)


def shards(variable: Any) -> list[tf.Variable]:
    """The per-ps `tf.Variable`s of a sharded variable, in order (shape[0] split)."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    return list(value.variables)


def differentiable(variables: Iterable[Any]) -> list[Any]:
    """`variables` with each sharded one replaced by its shards: what to differentiate and optimise."""
    flat: list[Any] = []
    for variable in variables:
        flat.extend(shards(variable) if is_sharded(variable) else [variable])
    return flat


def any_sharded(variables: Sequence[Any]) -> bool:
    return any(is_sharded(v) for v in variables)


def checkpointable(model: keras.Model) -> Any:
    """What to checkpoint for `model`: the model itself, or its variables' values if any is sharded.

    The replacement tracks each variable by its Keras path, so a checkpoint written with one
    number of ps shards restores with another.
    """
    if not any_sharded(model.weights):
        return model
    values = {v.path.replace("/", "."): (v.value if isinstance(v, keras.Variable) else v)
              for v in model.weights}
    return tf.train.Checkpoint(**values)
