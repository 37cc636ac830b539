"""A small Transformer encoder classifier, for token ids (text) or sequences of feature vectors.

Token ids of shape `(seq_len,)` go through an embedding (`vocab_size` set); float inputs of
shape `(seq_len, features)` -- or images `(height, width, channels)`, read row by row as a
sequence of `height` tokens -- go through a Dense projection (`vocab_size=None`). Then learned
position embeddings, `num_layers` pre-norm encoder blocks (self-attention and a feed-forward
layer, each with a residual connection; each block is one nested layer, `encoder_block_<i>`, so
that recomputation can checkpoint whole blocks), mean pooling over positions and the logits. There is no
padding mask: every position counts.
"""

from __future__ import annotations

import dataclasses

import keras

from models import common
from models import registry


@keras.saving.register_keras_serializable(package="tfdist_models")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to a `(batch, length, dim)` input."""

    def __init__(self, length: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight(
            shape=(self.length, input_shape[-1]), initializer="random_normal", name="embeddings")

    def call(self, x):
        return x + keras.ops.cast(self.embeddings, x.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "length": self.length}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Options of the Transformer classifier.

    Args:
        input_shape: `(seq_len,)` token ids, `(seq_len, features)` or `(height, width, channels)`.
            Defaults to `(8, 8, 1)`.
        num_classes: Output classes. Defaults to 10.
        vocab_size: Token vocabulary for integer inputs of shape `(seq_len,)`; `None` for float
            inputs. Defaults to `None`.
        embed_dim: Model width. Defaults to 64.
        num_heads: Attention heads (must divide `embed_dim`). Defaults to 4.
        ff_dim: Hidden units of the feed-forward layers. Defaults to 128.
        num_layers: Encoder blocks. Defaults to 2.
        dropout: Dropout rate after attention and feed-forward layers. Defaults to 0.
    """

    input_shape: tuple[int, ...] = (8, 8, 1)
    num_classes: int = 10
    vocab_size: int | None = None
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 128
    num_layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        shape = common.check_common("transformer", self.input_shape, self.num_classes)
        object.__setattr__(self, "input_shape", shape)
        common.check_positive("transformer", embed_dim=self.embed_dim, num_heads=self.num_heads,
                              ff_dim=self.ff_dim, num_layers=self.num_layers)
        common.check_rate("transformer", "dropout", self.dropout)
        if self.vocab_size is not None:
            common.check_positive("transformer", vocab_size=self.vocab_size)
            if len(shape) != 1:
                raise ValueError(
                    "Model 'transformer' with a vocab_size takes token ids of shape (seq_len,). "
                    f"Received: input_shape={shape!r}."
                )
        elif len(shape) not in (2, 3):
            raise ValueError(
                "Model 'transformer' without a vocab_size takes float inputs of shape "
                f"(seq_len, features) or (height, width, channels). Received: input_shape={shape!r}."
                " For token ids pass vocab_size."
            )
        if self.embed_dim % self.num_heads:
            raise ValueError(
                "Model 'transformer' needs num_heads to divide embed_dim. Received: "
                f"embed_dim={self.embed_dim}, num_heads={self.num_heads}."
            )

    @property
    def seq_len(self) -> int:
        return self.input_shape[0]


def build(config: TransformerConfig) -> keras.Model:
    """Builds the Transformer classifier (uncompiled; outputs logits)."""
    dim = config.embed_dim
    if config.vocab_size is not None:
        inputs = keras.Input(config.input_shape, dtype="int32", name="inputs")
        x = keras.layers.Embedding(config.vocab_size, dim, name="token_embedding")(inputs)
    else:
        inputs = keras.Input(config.input_shape, name="inputs")
        x = inputs
        if len(config.input_shape) == 3:  # image rows as tokens
            height, width, channels = config.input_shape
            x = keras.layers.Reshape((height, width * channels))(x)
        x = keras.layers.Dense(dim, name="input_projection")(x)
    x = PositionEmbedding(config.seq_len, name="position_embedding")(x)
    for index in range(config.num_layers):
        x = _encoder_block(config, x.shape[1:], name=f"encoder_block_{index}")(x)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name="transformer")


def _encoder_block(config: TransformerConfig, shape: tuple, name: str) -> keras.Model:
    """One pre-norm encoder block as a layer of its own: the unit `--remat=full` recomputes."""
    dim = config.embed_dim
    inputs = keras.Input(shape, name=f"{name}_inputs")
    h = keras.layers.LayerNormalization(epsilon=1e-6)(inputs)
    h = keras.layers.MultiHeadAttention(config.num_heads, dim // config.num_heads)(h, h)
    if config.dropout:
        h = keras.layers.Dropout(config.dropout)(h)
    x = keras.layers.Add()([inputs, h])
    h = keras.layers.LayerNormalization(epsilon=1e-6)(x)
    h = keras.layers.Dense(config.ff_dim, activation="gelu")(h)
    h = keras.layers.Dense(dim)(h)
    if config.dropout:
        h = keras.layers.Dropout(config.dropout)(h)
    return keras.Model(inputs, keras.layers.Add()([x, h]), name=name)


FAMILY = registry.register(registry.ModelFamily(
    name="transformer", config_class=TransformerConfig, build=build,
    description="small Transformer encoder classifier (tokens, sequences or image rows)",
))
