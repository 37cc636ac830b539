"""TFRecord files: a writer that shards examples into N files, and sources that read them back.

File-based sharding (each worker reads its own files; `tfdist.data` decides) needs the data in
at least as many files as workers. `write_shards` writes arrays or any `tf.data.Dataset` of
unbatched examples -- a TFDS split included -- into `num_shards` files of `tf.train.Example`s
(example `i` goes to file `i % num_shards`, so shards differ by at most one example), each
component stored as a serialized tensor, plus `<prefix>.json` describing the components. Read
them with `parse_fn(directory, prefix)` or, for a directory with `train` and `eval` files,
`sources(directory)`.

To convert a built-in dataset: `python -m input_pipelines.tfrecord --dataset digits --out DIR
--num_shards 8` (then train with `--dataset=tfrecord:DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from input_pipelines import registry
from input_pipelines.base import DatasetSources

_TUPLE_KEYS = ("x", "y", "w")  # names of tuple components: features, label, weight


def _as_dataset(data: Any) -> tuple[tf.data.Dataset, str, tuple[str, ...]]:
    """(unbatched dataset of dicts, "tuple" or "dict", component names)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, Mapping):
            return data, "dict", tuple(spec)
        if isinstance(spec, tuple):
            keys = _TUPLE_KEYS[: len(spec)]
            return data.map(lambda *xs: dict(zip(keys, xs))), "tuple", keys
        return data.map(lambda x: {"x": x}), "single", ("x",)
    if isinstance(data, Mapping):
        return tf.data.Dataset.from_tensor_slices(dict(data)), "dict", tuple(data)
    if isinstance(data, (tuple, list)):
        if len(data) > len(_TUPLE_KEYS):
            raise ValueError(f"write_shards takes at most {len(_TUPLE_KEYS)} arrays "
                             f"(features, labels, weights); received {len(data)}.")
        keys = _TUPLE_KEYS[: len(data)]
        return tf.data.Dataset.from_tensor_slices(dict(zip(keys, data))), "tuple", keys
    return tf.data.Dataset.from_tensor_slices({"x": data}), "single", ("x",)


def write_shards(
    data: Any, directory: str, num_shards: int, *, prefix: str = "data"
) -> list[str]:
    """Writes examples into `num_shards` TFRecord files and a `<prefix>.json` description.

    Args:
        data: Unbatched examples: a `tf.data.Dataset` (tuples, dicts or single tensors, e.g.
            `tfds.load(..., as_supervised=True)`), a tuple `(features, labels[, weights])` of
            arrays, a dict of arrays, or one array.
        directory: Output directory (created if needed).
        num_shards: Number of files, at least 1 (at least the number of workers for sharding
            by file).
        prefix: File name prefix: files are `<prefix>-00000-of-00008.tfrecord`, ...
            Defaults to `"data"`.

    Returns:
        The files written, in shard order.

    Raises:
        ValueError: `num_shards` < 1, or no examples.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError("Invalid value for argument `num_shards`. "
                         f"Received: num_shards={num_shards!r}. Pass an integer >= 1.")
    dataset, structure, keys = _as_dataset(data)
    os.makedirs(directory, exist_ok=True)
    files = [os.path.join(directory, f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord")
             for i in range(num_shards)]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    count, max_label = 0, -1
    try:
        for count, element in enumerate(dataset.as_numpy_iterator(), start=1):
            feature = {
                k: tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[tf.io.serialize_tensor(element[k]).numpy()]))
                for k in keys
            }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writers[(count - 1) % num_shards].write(example.SerializeToString())
            label = element.get({"tuple": "y", "dict": "label"}.get(structure, ""))
            if label is not None and np.ndim(label) == 0 and np.issubdtype(
                    np.asarray(label).dtype, np.integer):
                max_label = max(max_label, int(label))
    finally:
        for w in writers:
            w.close()
    if count == 0:
        raise ValueError("write_shards received no examples.")
    spec = dataset.element_spec
    meta = {
        "structure": structure,
        "keys": list(keys),
        "dtypes": [spec[k].dtype.name for k in keys],
        "shapes": [spec[k].shape.as_list() for k in keys],
        "num_examples": count,
        "num_shards": num_shards,
        "files": [os.path.basename(f) for f in files],
        "num_classes": max_label + 1 if max_label >= 0 else None,
    }
    with open(os.path.join(directory, f"{prefix}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return files


def read_meta(directory: str, prefix: str = "data") -> dict[str, Any]:
    """The description `write_shards` wrote for `prefix`.

    Raises:
        FileNotFoundError: No `<prefix>.json` in `directory`, with how to write one.
    """
    path = os.path.join(directory, f"{prefix}.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: write the files with input_pipelines.tfrecord.write_shards(..., "
            f"prefix={prefix!r}) or `python -m input_pipelines.tfrecord`."
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def file_pattern(directory: str, prefix: str = "data") -> str:
    """The glob matching the files of `prefix` in `directory`."""
    return os.path.join(directory, f"{prefix}-*-of-*.tfrecord")


def parse_fn(meta: Mapping[str, Any], *, scale_uint8: bool = False) -> Callable[[tf.Tensor], Any]:
    """A function parsing one serialized record back into the written structure.

    Args:
        meta: The description (`read_meta`).
        scale_uint8: Turn uint8 features into float32 in [0, 1] (images). Defaults to `False`.

    Returns:
        `fn(serialized) -> element`, a tuple, dict or single tensor as written.
    """
    keys, dtypes, shapes = meta["keys"], meta["dtypes"], meta["shapes"]
    features = {k: tf.io.FixedLenFeature([], tf.string) for k in keys}

    def parse(record: tf.Tensor) -> Any:
        parsed = tf.io.parse_single_example(record, features)
        values = {}
        for k, dtype, shape in zip(keys, dtypes, shapes):
            value = tf.ensure_shape(tf.io.parse_tensor(parsed[k], tf.dtypes.as_dtype(dtype)), shape)
            if scale_uint8 and k == keys[0] and dtype == "uint8":
                value = tf.cast(value, tf.float32) / 255.0
            values[k] = value
        if meta["structure"] == "dict":
            return values
        if meta["structure"] == "single":
            return values["x"]
        return tuple(values[k] for k in keys)

    return parse


def sources(
    directory: str, *, train_prefix: str = "train", eval_prefix: str = "eval"
) -> DatasetSources:
    """Sources reading `(features, label)` TFRecords written by `write_shards` (or `write_sources`).

    uint8 features are read as float32 in [0, 1] (images, e.g. a converted TFDS split).

    Args:
        directory: Holds `<train_prefix>-*.tfrecord`, `<eval_prefix>-*.tfrecord` and their
            `.json` descriptions.
        train_prefix: Prefix of the training files. Defaults to `"train"`.
        eval_prefix: Prefix of the evaluation files. Defaults to `"eval"`.

    Raises:
        FileNotFoundError: A description is missing.
        ValueError: The records are not `(features, integer label)` pairs.
    """
    train_meta, eval_meta = read_meta(directory, train_prefix), read_meta(directory, eval_prefix)
    pairs = train_meta["structure"] == "tuple" and len(train_meta["keys"]) == 2
    if not pairs or not train_meta["num_classes"]:
        raise ValueError(
            f"{directory}: the {train_prefix!r} records are not (features, integer label) pairs "
            f"(components: {train_meta['keys']}). Write them from (x, y) arrays or an "
            "as_supervised dataset."
        )
    num_classes = max(train_meta["num_classes"], eval_meta.get("num_classes") or 0)
    return DatasetSources(
        name=f"tfrecord:{directory}",
        train=file_pattern(directory, train_prefix),
        eval=file_pattern(directory, eval_prefix),
        input_shape=tuple(train_meta["shapes"][0]),
        num_classes=num_classes,
        train_examples=train_meta["num_examples"],
        eval_examples=eval_meta["num_examples"],
        map_fn=parse_fn(train_meta, scale_uint8=True),
    )


def _materialize(source: Any, map_fn: Callable[..., Any] | None) -> tf.data.Dataset:
    if isinstance(source, tf.data.Dataset):
        ds = source
    elif callable(source):
        ds = source(tf.distribute.InputContext())  # one pipeline: the whole split
    else:
        raise ValueError("write_sources converts in-memory, synthetic and TFDS sources, not files.")
    return ds.map(map_fn) if map_fn is not None else ds


def write_sources(data: DatasetSources, directory: str, num_shards: int) -> dict[str, list[str]]:
    """Writes a dataset's train and eval examples (after its `map_fn`) for `sources(directory)`.

    Returns:
        `{"train": files, "eval": files}`.
    """
    return {
        prefix: write_shards(_materialize(source, data.map_fn), directory, num_shards, prefix=prefix)
        for prefix, source in (("train", data.train), ("eval", data.eval))
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m input_pipelines.tfrecord --dataset digits --out DIR --num_shards 8`."""
    parser = argparse.ArgumentParser(prog="python -m input_pipelines.tfrecord",
                                     description="Convert a dataset into sharded TFRecord files.")
    parser.add_argument("--dataset", default="digits", help="as for tfdist-train --dataset")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num_shards", type=int, default=8, help="files per split; default 8")
    args = parser.parse_args(argv)
    written = write_sources(registry.load(args.dataset), args.out, args.num_shards)
    for prefix, files in written.items():
        print(f"{prefix}: {len(files)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
