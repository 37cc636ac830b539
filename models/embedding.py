"""An embedding-heavy classifier: categorical ids -> a large table -> mean-pool -> small head.

The shape of recommender and ranking models, where the embedding table holds nearly all the
weights and a step touches only the rows its ids look up: the layout parameter-server training
was made for (docs/parameter_server.md).

Two lookups (`lookup`): `keras` is `keras.layers.Embedding`, whose `ops.take` converts the whole
table to a tensor before gathering -- under `ParameterServerStrategy` that reads the whole table
from the ps on every step; `rows` gathers from the variable itself (`tf.nn.embedding_lookup`),
so the gather runs where the table lives and only the looked-up rows move (per shard, when a
partitioner split the table).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

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
        lookup: `"keras"` (`keras.layers.Embedding`) or `"rows"` (gather from the variable;
            see the module docstring). Defaults to `"keras"`.
    """

    input_shape: tuple[int, ...] = (16,)
    num_classes: int = 10
    vocab_size: int = 100_000
    embed_dim: int = 64
    hidden: tuple[int, ...] = (64,)
    lookup: str = "keras"

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
        if self.lookup not in LOOKUPS:
            raise ValueError(
                f"Invalid value for argument `lookup` of model 'embedding'. Received: "
                f"lookup={self.lookup!r}. Pass one of: {', '.join(LOOKUPS)}.")

    @property
    def table_params(self) -> int:
        """Weights in the embedding table."""
        return self.vocab_size * self.embed_dim


class RowLookup(keras.layers.Embedding):
    """`keras.layers.Embedding` that gathers from its variable: only looked-up rows are read."""

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        ids = tf.cast(inputs, "int32") if inputs.dtype not in ("int32", "int64") else inputs
        rows = tf.nn.embedding_lookup(self.embeddings.value, ids)
        return tf.cast(rows, self.compute_dtype)


LOOKUPS: dict[str, type[keras.layers.Embedding]] = {
    "keras": keras.layers.Embedding, "rows": RowLookup}


def build(config: EmbeddingConfig) -> keras.Model:
    """Builds the model (uncompiled; outputs logits). Its table is the layer named `table`."""
    inputs = keras.Input(config.input_shape, dtype="int32", name="ids")
    layer = LOOKUPS[config.lookup]
    x = layer(config.vocab_size, config.embed_dim, name="table")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    for units in config.hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, common.logits(x, config.num_classes), name="embedding")


FAMILY = registry.register(registry.ModelFamily(
    name="embedding", config_class=EmbeddingConfig, build=build,
    description="embedding table + mean-pool + dense head (integer id inputs)",
))
