"""An embedding-heavy classifier: categorical ids -> a large table -> mean-pool -> small head.

The shape of recommender and ranking models, where the embedding table holds nearly all the
weights and a step touches only the rows its ids look up: the layout parameter-server training
was made for (docs/parameter_server.md).
"""

from __future__ import annotations

import dataclasses

import keras

from models import common
from models import registry


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    """Options of the embedding model.

    Args:
        input_shape: `(ids_per_example,)`: integer ids in `[0, vocab_size)`. Defaults to `(16,)`.
        num_classes: Output classes. Defaults to 10.
        vocab_size: Rows of the embedding table. Defaults to 100,000.
        embed_dim: Columns of the embedding table. Defaults to 64.
        hidden: Units of the dense head's hidden layers. Defaults to `(64,)`.
    """

    input_shape: tuple[int, ...] = (16,)
    num_classes: int = 10
    vocab_size: int = 100_000
    embed_dim: int = 64
    hidden: tuple[int, ...] = (64,)

    def __post_init__(self) -> None:
        shape = common.check_common("embedding", self.input_shape, self.num_classes)
        if len(shape) != 1:
            raise ValueError(
                f"Invalid value for argument `input_shape` of model 'embedding'. Received: "
                f"input_shape={self.input_shape!r}. Pass (ids_per_example,), e.g. (16,): the "
                "model takes integer ids, not images.")
        object.__setattr__(self, "input_shape", shape)
        hidden = self.hidden
        object.__setattr__(self, "hidden", (hidden,) if isinstance(hidden, int) else tuple(hidden))
        common.check_positive("embedding", vocab_size=self.vocab_size, embed_dim=self.embed_dim,
                              hidden=self.hidden)

    @property
    def table_params(self) -> int:
        """Weights in the embedding table."""
        return self.vocab_size * self.embed_dim


def build(config: EmbeddingConfig) -> keras.Model:
    """Builds the model (uncompiled; outputs logits). Its table is the layer named `table`."""
    inputs = keras.Input(config.input_shape, dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocab_size, config.embed_dim, name="table")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    for units in config.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name="embedding")


FAMILY = registry.register(registry.ModelFamily(
    name="embedding", config_class=EmbeddingConfig, build=build,
    description="embedding table + mean-pool + dense head (integer id inputs)",
))
