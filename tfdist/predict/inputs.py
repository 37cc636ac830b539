"""One worker's input pipeline: its shards of the keyed records, batched, as model features."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfdist import data as data_lib
from tfdist.predict import features as features_lib
from tfdist.predict import readers
from tfdist.predict.readers import Source


def build(source: Source, feeds: Sequence[features_lib.Feed], shards: Sequence[data_lib.KeyRange],
          batch_size: int, *, id_column: str | None = None,
          raw_records: bool = False) -> tf.data.Dataset:
    """`(keys, features)` batches of `shards`, through `tfdist.data.inference_dataset`.

    Args:
        source: The input.
        feeds: How columns make the model's inputs (`features.plan_feeds`).
        shards: This worker's shards still to score.
        batch_size: Records per batch.
        id_column: Pass this column through to the outputs (TFRecord; in-memory inputs look ids
            up by key instead). Defaults to none.
        raw_records: TFRecord only: feed the serialized records to the model's one string input
            (a parsing serving signature) instead of parsing them here.

    Returns:
        The dataset.
    """
    if source.tfrecord is not None:
        return _tfrecord_dataset(source, source.tfrecord, feeds, shards, batch_size,
                                 id_column=id_column, raw_records=raw_records)
    if source.arrays is None:
        raise ValueError(f"The source has neither records nor arrays to read. Received: "
                         f"{readers.describe(source)}.")
    return _arrays_dataset(source.arrays, feeds, shards, batch_size)


def _tfrecord_dataset(source: Source, tfrecord: tuple[tuple[str, ...], tuple[int, ...], Any],
                      feeds: Sequence[features_lib.Feed], shards: Sequence[data_lib.KeyRange],
                      batch_size: int, *, id_column: str | None,
                      raw_records: bool) -> tf.data.Dataset:
    """Streams the TFRecord files; a shard never spans two files (`Source.boundaries`)."""
    files, offsets, _ = tfrecord
    files_t = tf.constant(files)
    offsets_t = tf.constant(offsets, tf.int64)

    def read_batches(start: tf.Tensor, stop: tf.Tensor, batch: int) -> tf.data.Dataset:
        index = tf.searchsorted(offsets_t, [start], side="right")[0] - 1
        records = tf.data.TFRecordDataset(files_t[index])
        return records.skip(start - offsets_t[index]).take(stop - start).batch(batch)

    if raw_records:
        name = feeds[0].input
        parse = readers.tfrecord_parse(source) if id_column else None

        def batch_map(records: tf.Tensor) -> dict[str, tf.Tensor]:
            fed = {name: records}
            if parse is not None and id_column:  # the ids still come from the parsed records
                fed[features_lib.ID_FEATURE] = parse(records)[id_column]
            return fed
    else:
        parse_all = readers.tfrecord_parse(source)
        batch_map = lambda records: features_lib.assemble_tf(  # noqa: E731
            feeds, parse_all(records), id_column)
    return data_lib.inference_dataset(shards, read_batches, batch_size, batch_map_fn=batch_map)


def _arrays_dataset(arrays_in: Mapping[str, np.ndarray], feeds: Sequence[features_lib.Feed],
                    shards: Sequence[data_lib.KeyRange], batch_size: int) -> tf.data.Dataset:
    """Slices in-memory arrays in a generator (ids are looked up by key, not passed through)."""
    arrays = features_lib.assemble_numpy(feeds, arrays_in, None)
    signature = {n: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))
                 for n, a in arrays.items()}

    def generate(start: np.int64, stop: np.int64,
                 batch: np.int64) -> Iterator[dict[str, np.ndarray]]:
        lo, hi, step = int(start), int(stop), int(batch)
        for first in range(lo, hi, step):
            last = min(first + step, hi)
            yield {n: np.ascontiguousarray(a[first:last]) for n, a in arrays.items()}

    def read_batches(start: tf.Tensor, stop: tf.Tensor, batch: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            generate, args=(start, stop, tf.constant(batch, tf.int64)), output_signature=signature)

    return data_lib.inference_dataset(shards, read_batches, batch_size)
