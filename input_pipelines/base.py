"""`DatasetSources`: what an input pipeline hands the data layer, for training and evaluation.

A pipeline never batches, shuffles or shards (`tfdist.data` does, once, for every dataset); it
says where the examples come from and what they look like. A TFDS source is the one exception:
it is a `dataset_fn(input_context)` that reads this worker's slice (TFDS's own split slicing is
the right tool there), which `tfdist.data` treats as self-sharding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from tfdist import data as data_lib


@dataclasses.dataclass(frozen=True)
class DatasetSources:
    """The training and evaluation sources of one dataset, and the shape of its examples.

    Args:
        name: For logs and `metrics.json`, e.g. `"digits"`.
        train: Training source for `tfdist.data.DataSpec` (a `tf.data.Dataset` of unbatched
            examples, a `dataset_fn(input_context)`, or TFRecord file patterns).
        eval: Evaluation source, same kinds.
        input_shape: Shape of one example's features, e.g. `(8, 8, 1)`.
        num_classes: Number of label classes.
        train_examples: Training examples, if known (needed for `--epochs`). Defaults to `None`.
        eval_examples: Evaluation examples, if known. Defaults to `None`.
        map_fn: Per-example function turning source records into `(features, label)`; the data
            layer applies it after sharding and shuffling. Defaults to `None` (records are
            already `(features, label)` pairs).
        batch_map_fn: Per-batch function turning a batch of source records into batched
            `(features, label)` (e.g. one `tf.io.parse_example` per batch); the data layer
            applies it after per-example shuffling and batching. Defaults to `None`.
        vocab_size: Vocabulary size when features are token ids. Defaults to `None` (floats).
    """

    name: str
    train: data_lib.Source
    eval: data_lib.Source
    input_shape: tuple[int, ...]
    num_classes: int
    train_examples: int | None = None
    eval_examples: int | None = None
    map_fn: Callable[..., Any] | None = None
    batch_map_fn: Callable[..., Any] | None = None
    vocab_size: int | None = None

    def train_spec(self, global_batch_size: int, *, seed: int | None = 0) -> data_lib.DataSpec:
        """The training `DataSpec`: shuffled (whole dataset when it fits the buffer), repeated.

        Args:
            global_batch_size: Examples per step across all replicas.
            seed: Shuffle seed. Defaults to 0.
        """
        buffer = data_lib.DEFAULT_SHUFFLE_BUFFER
        if self.train_examples:
            buffer = min(buffer, self.train_examples)
        return data_lib.DataSpec(
            source=self.train, global_batch_size=global_batch_size, training=True,
            shuffle_buffer=buffer, seed=seed, map_fn=self.map_fn, batch_map_fn=self.batch_map_fn,
        )

    def eval_spec(self, global_batch_size: int, *, seed: int | None = 0) -> data_lib.DataSpec:
        """The evaluation `DataSpec`: every example once, in order, the last batch kept.

        Args:
            global_batch_size: Examples per step across all replicas.
            seed: Seed for the file-list order when sharding by file. Defaults to 0.
        """
        return data_lib.DataSpec(
            source=self.eval, global_batch_size=global_batch_size, training=False, seed=seed,
            map_fn=self.map_fn, batch_map_fn=self.batch_map_fn,
        )
