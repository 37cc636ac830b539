"""A multi-layer perceptron: flatten, hidden Dense layers, logits."""

from __future__ import annotations

import dataclasses

import keras

from models import common
from models import registry


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """Options of the MLP.

    Args:
        input_shape: Shape of one example (flattened first). Defaults to `(8, 8, 1)`.
        num_classes: Output classes. Defaults to 10.
        hidden: Units of each hidden layer. Defaults to `(256, 128)`.
        dropout: Dropout rate after each hidden layer. Defaults to 0.
    """

    input_shape: tuple[int, ...] = (8, 8, 1)
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        shape = common.check_common("mlp", self.input_shape, self.num_classes)
        object.__setattr__(self, "input_shape", shape)
        hidden = self.hidden
        object.__setattr__(self, "hidden", (hidden,) if isinstance(hidden, int) else tuple(hidden))
        common.check_positive("mlp", hidden=self.hidden)
        common.check_rate("mlp", "dropout", self.dropout)


def build(config: MLPConfig) -> keras.Model:
    """Builds the MLP (uncompiled; outputs logits)."""
    inputs = keras.Input(config.input_shape, name="inputs")
    x = keras.layers.Flatten()(inputs)
    for units in config.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout)(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name="mlp")


FAMILY = registry.register(registry.ModelFamily(
    name="mlp", config_class=MLPConfig, build=build,
    description="multi-layer perceptron (any input shape, flattened)",
))
