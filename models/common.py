"""Checks and layers every model family shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras


def check_common(family: str, input_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """Validates the fields every config has; returns `input_shape` as a tuple.

    Raises:
        ValueError: A non-positive dimension or fewer than 2 classes.
    """
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ValueError(
            f"Invalid value for argument `input_shape` of model {family!r}. "
            f"Received: input_shape={input_shape!r}. Pass positive integers, e.g. (8, 8, 1)."
        )
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(
            f"Invalid value for argument `num_classes` of model {family!r}. "
            f"Received: num_classes={num_classes!r}. Pass an integer >= 2."
        )
    return shape


def check_positive(family: str, **values: Any) -> None:
    """Raises `ValueError` naming the first value that is not a positive int (or tuple of them)."""
    for name, value in values.items():
        items = value if isinstance(value, tuple) else (value,)
        if not items or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            raise ValueError(
                f"Invalid value for argument `{name}` of model {family!r}. "
                f"Received: {name}={value!r}. Pass positive integers."
            )


def check_rate(family: str, name: str, value: float) -> None:
    """Raises `ValueError` unless 0 <= value < 1."""
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Invalid value for argument `{name}` of model {family!r}. "
            f"Received: {name}={value!r}. Pass a rate in [0, 1)."
        )


def logits(x: Any, num_classes: int) -> Any:
    """The classification head: float32 logits, so losses stay exact under mixed precision."""
    return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
