"""Parameter counts and analytic FLOPs per example, for benchmarks (examples/s -> FLOP/s).

FLOPs are counted from layer shapes, not measured: every multiply-add counts as 2 FLOPs, in
the layers that dominate the cost --

- `Dense`: `2 * in_features * units` per position (a Dense over a sequence counts each token);
- `Conv1D/2D/3D`: `2 * kernel_size * in_channels / groups * filters` per output position;
  `DepthwiseConv2D` and `SeparableConv2D` likewise per output position;
- `MultiHeadAttention`: its query, key, value and output projections as Dense layers, plus
  `2 * heads * query_len * key_len * (key_dim + value_dim)` for the scores and the weighted sum.

Everything else (biases, activations, normalization, pooling, softmax, embedding lookups,
residual adds) is left out. Counts are for the forward pass of one example; a training step
costs about 3 times that (forward, plus two matrix products per layer backward).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from models import registry


def _model(model_or_config: Any) -> keras.Model:
    if isinstance(model_or_config, keras.Model):
        return model_or_config
    for name in registry.names():
        family = registry.get(name)
        if isinstance(model_or_config, family.config_class):
            return family.build(model_or_config)
    raise TypeError(
        f"Expected a keras.Model or a registered model config. Received: "
        f"{type(model_or_config).__name__}."
    )


def count_params(model_or_config: Any) -> int:
    """Number of weights (trainable and not) of a model, or of the model a config builds."""
    return int(_model(model_or_config).count_params())


def flops_per_example(model_or_config: Any) -> int:
    """Forward-pass FLOPs for one example (multiply-adds x 2; see the module docstring).

    Args:
        model_or_config: A built Keras model whose layers have known input shapes (functional or
            `Sequential` with an `Input`), or a registered model config (its model is built).

    Returns:
        The FLOPs, as an integer.
    """
    return int(sum(_layer_flops(layer) for layer in _leaf_layers(_model(model_or_config))))


def _leaf_layers(model: keras.Model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(tensor.shape[1:])  # drop the batch dimension


def _positions(shape: tuple[int, ...]) -> int:
    return math.prod(shape[:-1])  # every dimension but the last (channels or features)


def _layer_flops(layer: keras.layers.Layer) -> float:
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return _attention_flops(layer)
    if isinstance(layer, keras.layers.Dense):
        shape = _shape(layer.input)
        return 2 * shape[-1] * layer.units * _positions(shape)
    if isinstance(layer, keras.layers.SeparableConv2D):
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        kernel = math.prod(layer.kernel_size)
        depthwise = 2 * kernel * in_shape[-1] * layer.depth_multiplier
        pointwise = 2 * in_shape[-1] * layer.depth_multiplier * layer.filters
        return (depthwise + pointwise) * _positions(out_shape)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        kernel = math.prod(layer.kernel_size)
        return 2 * kernel * in_shape[-1] * layer.depth_multiplier * _positions(out_shape)
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        in_shape, out_shape = _shape(layer.input), _shape(layer.output)
        kernel = math.prod(layer.kernel_size)
        return 2 * kernel * in_shape[-1] // layer.groups * layer.filters * _positions(out_shape)
    return 0


def _attention_flops(layer: keras.layers.MultiHeadAttention) -> float:
    inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
    query = _shape(inputs[0])
    value = _shape(inputs[1]) if len(inputs) > 1 else query
    key = _shape(inputs[2]) if len(inputs) > 2 else value
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    q_len, kv_len = _positions(query), _positions(value)
    out_dim = _shape(layer.output)[-1]
    projections = 2 * heads * (
        q_len * query[-1] * key_dim
        + _positions(key) * key[-1] * key_dim
        + kv_len * value[-1] * value_dim
        + q_len * value_dim * out_dim
    )
    attention = 2 * heads * q_len * kv_len * (key_dim + value_dim)
    return projections + attention
