"""tf.estimator's optimizer arguments -> Keras 3 optimizers (names, instances, callables)."""

from __future__ import annotations

from typing import Any

import keras

# tf.estimator's names (canned/optimizers.py) and their Keras 3 classes.
_NAMES = {
    "Adagrad": keras.optimizers.Adagrad,
    "Adam": keras.optimizers.Adam,
    "Ftrl": keras.optimizers.Ftrl,
    "RMSProp": keras.optimizers.RMSprop,
    "SGD": keras.optimizers.SGD,
}


def check(optimizer: Any, argument: str) -> None:
    """Raises at construction for an optimizer argument that `get` would reject."""
    if isinstance(optimizer, str):
        if optimizer not in _NAMES:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Received: {argument}={optimizer!r}. "
                f"Pass one of {sorted(_NAMES)}, a keras.optimizers.Optimizer, or a callable "
                "returning one."
            )
    elif not (isinstance(optimizer, keras.optimizers.Optimizer) or callable(optimizer)):
        raise TypeError(
            f"Invalid value for argument `{argument}`. Received: {type(optimizer).__name__}. "
            f"Pass one of {sorted(_NAMES)}, a keras.optimizers.Optimizer, or a callable "
            "returning one."
        )


def get(optimizer: Any, learning_rate: float, argument: str = "optimizer",
        name: str | None = None) -> Any:
    """A Keras optimizer: a name gets `learning_rate` (tf.estimator's default for the model).

    `name` names an optimizer made from a name (the two parts of a combined model need
    distinct names: optimizer variables are keyed by them). Called inside `model_fn`: an
    instance is passed through (tfdist rebuilds it under the strategy if needed), a callable
    is called.
    """
    check(optimizer, argument)
    if isinstance(optimizer, str):
        kwargs = {"name": name} if name else {}
        return _NAMES[optimizer](learning_rate=learning_rate, **kwargs)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    result = optimizer()
    if not isinstance(result, keras.optimizers.Optimizer):
        raise TypeError(
            f"The callable passed as `{argument}` returned {type(result).__name__}; it must "
            "return a keras.optimizers.Optimizer."
        )
    return result
