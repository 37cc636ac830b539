"""Private TF touch point: the configuration of `tf.feature_column.shared_embeddings` columns.

A `SharedEmbeddingColumn` (TF 2.21, tensorflow/python/feature_column/feature_column_v2.py) keeps
the shared table's settings — initializer, trainable, collection name, checkpoint to load from —
only in private attributes of its `shared_embedding_column_creator` (`_initializer`, ...);
only `dimension` is public. `tf.feature_column` is
deprecated and frozen, so no upstream fix is expected; the canary test
`tests/test_compat.py::test_canary_shared_embedding_creator_has_no_public_config` fails if TF
ever adds public ones (or renames these), and then this module should read those instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

UPSTREAM = "tensorflow/python/feature_column/feature_column_v2.py: SharedEmbeddingColumnCreator"


@dataclasses.dataclass(frozen=True)
class SharedEmbeddingConfig:
    """What canned estimators need to build the shared `keras.layers.Embedding`."""

    dimension: int
    initializer: Any
    trainable: bool
    name: str
    ckpt_to_load_from: str | None


def read(column: Any) -> SharedEmbeddingConfig:
    """The shared table's settings of a `SharedEmbeddingColumn`."""
    creator = column.shared_embedding_column_creator
    return SharedEmbeddingConfig(
        dimension=creator.dimension,
        initializer=creator._initializer,
        trainable=creator._trainable,
        name=creator._name,
        ckpt_to_load_from=creator._ckpt_to_load_from,
    )
