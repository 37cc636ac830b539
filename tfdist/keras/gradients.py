"""Gradient compression, packing and accumulation for Keras `Model.fit` (route 2).

`fit` all-reduces inside the optimizer's `apply_gradients`, so both levers are installed on the
compiled model: compression through tfdist's override of Keras's all-reduce, accumulation by
running the model's `train_step` on micro-batches (`tfdist.compat.keras_gradient_reduction`,
`tfdist.compat.keras_fit_accumulation`).
"""

from __future__ import annotations

import keras

from tfdist import checks
from tfdist import compat
from tfdist import data as data_lib
from tfdist import gradients as gradients_lib
from tfdist.compat import keras_fit_accumulation
from tfdist.compat import keras_gradient_reduction


def configure(model: keras.Model, *, gradients: gradients_lib.GradientOptions | None = None,
              data: data_lib.DataSpec | None = None, accumulation_steps: int | None = None) -> None:
    """Sets how `model.fit` reduces and accumulates gradients (call after `compile`).

    Args:
        model: A compiled Keras model.
        gradients: Compression and packing of the all-reduce. Defaults to `None`
            (TensorFlow's float32 reduction).
        data: The training `tfdist.data.DataSpec`: its `accumulation_steps` is used (and its
            batch checked against the strategy's replicas). Defaults to `None`.
        accumulation_steps: Micro-batches per optimizer step, when there is no `data`: each
            batch `fit` reads is cut into this many. Defaults to `None` (1, or the data's).

    Raises:
        ValueError: An uncompiled model, options of the wrong type, both `data` and
            `accumulation_steps`, or a batch that does not split into the micro-batches.

    Example:

    ```python
    model.compile(optimizer="sgd", loss="mse")
    tfdist.keras.gradients.configure(
        model, gradients=tfdist.gradients.GradientOptions(compression="bfloat16"), data=spec)
    model.fit(tfdist.data.for_fit(strategy, spec), ...)
    ```
    """
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Invalid value for argument `model`. Received: model={model.name!r}, which is not "
            "compiled. Call model.compile(...) first, then configure.")
    if gradients is not None and not isinstance(gradients, gradients_lib.GradientOptions):
        raise ValueError(
            f"Invalid value for argument `gradients`. Received: gradients={gradients!r}. Pass "
            "a tfdist.gradients.GradientOptions or None.")
    if data is not None and accumulation_steps is not None:
        raise ValueError(
            f"Pass the accumulation steps once. Received: accumulation_steps="
            f"{accumulation_steps} and data with accumulation_steps={data.accumulation_steps}. "
            "Set them on the DataSpec and pass data=spec only.")
    steps = 1
    if data is not None:
        data.micro_batch_size(model.distribute_strategy.num_replicas_in_sync)
        steps = data.accumulation_steps
    elif accumulation_steps is not None:
        steps = checks.positive_int("accumulation_steps", accumulation_steps)
    compat.apply()
    keras_gradient_reduction.configure(model.optimizer, gradients)
    keras_fit_accumulation.configure(model, steps)
