"""One worker's input pipeline: its shards of the keyed records, batched, as model features."""

from __future__ import annotations

from collections.abc import Sequence

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
        files, offsets, _ = source.tfrecord
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
                if parse is not None:  # the ids still come from the parsed records
                    fed[features_lib.ID_FEATURE] = parse(records)[id_column]
                return fed
        else:
            parse = readers.tfrecord_parse(source)
            batch_map = lambda records: features_lib.assemble_tf(  # noqa: E731
                feeds, parse(records), id_column)
        return data_lib.inference_dataset(shards, read_batches, batch_size, batch_map_fn=batch_map)

    arrays = features_lib.assemble_numpy(feeds, source.arrays, None)
    signature = {n: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))
                 for n, a in arrays.items()}

    def generate(start: np.int64, stop: np.int64, batch: np.int64):
        start, stop, batch = int(start), int(stop), int(batch)
        for lo in range(start, stop, batch):
            hi = min(lo + batch, stop)
            yield {n: np.ascontiguousarray(a[lo:hi]) for n, a in arrays.items()}

    def read_batches(start: tf.Tensor, stop: tf.Tensor, batch: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_generator(
            generate, args=(start, stop, tf.constant(batch, tf.int64)), output_signature=signature)

    return data_lib.inference_dataset(shards, read_batches, batch_size)

