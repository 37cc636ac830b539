"""A small CNN for small images (8x8 digits, 28x28 MNIST-like, 32x32 CIFAR-like).

Each stage is a 3x3 convolution followed by 2x2 max pooling while the feature map is at least
4 pixels high and wide, so the same config fits 8x8 and 28x28 inputs.
"""

from __future__ import annotations

import dataclasses

import keras

from models import common
from models import registry


@dataclasses.dataclass(frozen=True)
class CNNConfig:
    """Options of the small CNN.

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(8, 8, 1)`.
        num_classes: Output classes. Defaults to 10.
        filters: Filters of each 3x3 convolution stage. Defaults to `(32, 64)`.
        dense: Units of the hidden Dense layer before the logits. Defaults to 128.
        dropout: Dropout rate before the logits. Defaults to 0.
    """

    input_shape: tuple[int, ...] = (8, 8, 1)
    num_classes: int = 10
    filters: tuple[int, ...] = (32, 64)
    dense: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        shape = common.check_common("cnn", self.input_shape, self.num_classes)
        if len(shape) != 3:
            raise ValueError(
                "Model 'cnn' needs image inputs (height, width, channels). "
                f"Received: input_shape={shape!r}. Use 'mlp' or 'transformer' for other shapes."
            )
        object.__setattr__(self, "input_shape", shape)
        filters = self.filters
        object.__setattr__(self, "filters", (filters,) if isinstance(filters, int) else tuple(filters))
        common.check_positive("cnn", filters=self.filters, dense=self.dense)
        common.check_rate("cnn", "dropout", self.dropout)


def build(config: CNNConfig) -> keras.Model:
    """Builds the CNN (uncompiled; outputs logits)."""
    inputs = keras.Input(config.input_shape, name="inputs")
    x = inputs
    height, width = config.input_shape[:2]
    for filters in config.filters:
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        if height >= 4 and width >= 4:
            x = keras.layers.MaxPooling2D()(x)
            height, width = height // 2, width // 2
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(config.dense, activation="relu")(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout)(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name="cnn")


FAMILY = registry.register(registry.ModelFamily(
    name="cnn", config_class=CNNConfig, build=build,
    description="small CNN for 8x8 to 32x32 images",
))
