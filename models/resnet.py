"""A CIFAR-style ResNet (He et al. 2016, section 4.2) of configurable depth.

`depth = 6n + 2`: a 3x3 stem, three stages of `n` basic blocks (two 3x3 convolutions each) with
`width`, `2*width` and `4*width` filters, the last two starting with stride 2 and a 1x1 projection
shortcut, then global average pooling and the logits. ResNet-20 has depth 20 (n = 3).
"""

from __future__ import annotations

import dataclasses

import keras

from models import common
from models import registry


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Options of the CIFAR-style ResNet.

    Args:
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        num_classes: Output classes. Defaults to 10.
        depth: Total weighted layers, `6n + 2` (20, 32, 44, 56, 110, ...). Defaults to 20.
        width: Filters of the first stage (doubled in each later stage). Defaults to 16.
        weight_decay: L2 penalty on convolution and dense kernels. Defaults to 0.
    """

    input_shape: tuple[int, ...] = (32, 32, 3)
    num_classes: int = 10
    depth: int = 20
    width: int = 16
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        shape = common.check_common("resnet", self.input_shape, self.num_classes)
        if len(shape) != 3:
            raise ValueError(
                "Model 'resnet' needs image inputs (height, width, channels). "
                f"Received: input_shape={shape!r}."
            )
        object.__setattr__(self, "input_shape", shape)
        common.check_positive("resnet", depth=self.depth, width=self.width)
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(
                "Invalid value for argument `depth` of model 'resnet'. "
                f"Received: depth={self.depth}. Pass 6n + 2 with n >= 1 (8, 14, 20, 32, 56, 110)."
            )
        if self.weight_decay < 0:
            raise ValueError(
                "Invalid value for argument `weight_decay` of model 'resnet'. "
                f"Received: weight_decay={self.weight_decay}. Pass 0 or more."
            )

    @property
    def blocks_per_stage(self) -> int:
        return (self.depth - 2) // 6


def _conv(filters: int, kernel: int, stride: int, decay: float) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L2(decay) if decay else None,
    )


def _block(x, filters: int, stride: int, decay: float):
    shortcut = x
    y = _conv(filters, 3, stride, decay)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Activation("relu")(y)
    y = _conv(filters, 3, 1, decay)(y)
    y = keras.layers.BatchNormalization()(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, stride, decay)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


def build(config: ResNetConfig) -> keras.Model:
    """Builds the ResNet (uncompiled; outputs logits)."""
    decay = config.weight_decay
    inputs = keras.Input(config.input_shape, name="inputs")
    x = _conv(config.width, 3, 1, decay)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    for stage in range(3):
        filters = config.width * 2**stage
        for block in range(config.blocks_per_stage):
            x = _block(x, filters, 2 if stage and not block else 1, decay)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name=f"resnet{config.depth}")


FAMILY = registry.register(registry.ModelFamily(
    name="resnet", config_class=ResNetConfig, build=build,
    description="CIFAR-style ResNet, depth 6n+2",
))
