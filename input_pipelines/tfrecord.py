"""TFRecord files: a writer that shards examples into N files, and sources that read them back.

File-based sharding (each worker reads its own files; `tfdist.data` decides) needs the data in
at least as many files as workers. `write_shards` writes arrays or any `tf.data.Dataset` of
unbatched examples -- a TFDS split included -- into `num_shards` files of `tf.train.Example`s
(example `i` goes to file `i % num_shards`, so shards differ by at most one example), plus
`<prefix>.json` describing the components. Each component is one fixed-length feature of its
flattened values: a `float_list` for float16/bfloat16/float32, an `int64_list` for bool and
integers up to 32 bits and int64, a `bytes_list` for strings (one value per element) and for
the dtypes those lists cannot hold exactly (float64, uint64, complex: the raw little-endian
bytes). So a whole batch of records parses with one `tf.io.parse_example`: `sources` hands the
data layer a per-batch parser (`batch_map_fn`), after per-example shuffling. Read them with
`parse_fn(read_meta(directory, prefix))` or, for a directory with `train` and `eval` files,
`sources(directory)`.

Files written before format 2 (each component a `tf.io.serialize_tensor` string, no `"format"`
in the `.json`) are still read, one record at a time (about 4x slower); rewrite them with
`python -m input_pipelines.tfrecord` for the fast path.

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

# Format 1: every component a `tf.io.serialize_tensor` string (no "format" key in the .json).
# Format 2: fixed-length float_list / int64_list / bytes_list features, parsed per batch.
FORMAT_VERSION = 2
_META_KEYS = ("structure", "keys", "dtypes", "shapes", "num_examples", "num_shards", "files",
              "num_classes")
_FLOAT_DTYPES = ("float16", "bfloat16", "float32")
_INT_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")
_RAW_DTYPES = ("float64", "uint64", "complex64", "complex128")  # bytes_list, raw bytes
# How each dtype is stored: the feature list, and the dtype `tf.io.parse_example` returns.
_ENCODINGS = {
    **{d: ("float", "float32") for d in _FLOAT_DTYPES},
    **{d: ("int64", "int64") for d in _INT_DTYPES},
    **{d: ("raw", "string") for d in _RAW_DTYPES},
    "string": ("bytes", "string"),
}


def _encoding(key: str, dtype: str) -> str:
    if dtype not in _ENCODINGS:
        raise ValueError(f"write_shards cannot store component {key!r} of dtype {dtype}; "
                         f"supported: {', '.join(sorted(_ENCODINGS))}.")
    return _ENCODINGS[dtype][0]


def _feature(value: np.ndarray, encoding: str) -> tf.train.Feature:
    flat = np.asarray(value).reshape(-1)
    if encoding == "float":
        return tf.train.Feature(
            float_list=tf.train.FloatList(value=flat.astype(np.float32).tolist()))
    if encoding == "int64":
        return tf.train.Feature(
            int64_list=tf.train.Int64List(value=flat.astype(np.int64).tolist()))
    if encoding == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(v) for v in flat]))
    raw = flat.astype(flat.dtype.newbyteorder("<")).tobytes()
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[raw]))


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
        ValueError: `num_shards` < 1, no examples, a dtype no feature list can hold, or
            examples whose shapes differ.
    """
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError("Invalid value for argument `num_shards`. "
                         f"Received: num_shards={num_shards!r}. Pass an integer >= 1.")
    dataset, structure, keys = _as_dataset(data)
    os.makedirs(directory, exist_ok=True)
    files = [os.path.join(directory, f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord")
             for i in range(num_shards)]
    spec = dataset.element_spec
    dtypes = [spec[k].dtype.name for k in keys]
    encodings = [_encoding(k, d) for k, d in zip(keys, dtypes)]
    # Fixed-length features need one shape per component: the element spec's, or else the
    # first example's, which every other example must match.
    shapes: list[list[int] | None] = [
        spec[k].shape.as_list() if spec[k].shape.is_fully_defined() else None for k in keys]
    writers = [tf.io.TFRecordWriter(f) for f in files]
    count, max_label = 0, -1
    try:
        for count, element in enumerate(dataset.as_numpy_iterator(), start=1):
            for j, k in enumerate(keys):
                shape, expected = list(np.shape(element[k])), shapes[j]
                if expected is None:
                    shapes[j] = shape
                elif shape != expected:
                    raise ValueError(
                        f"write_shards needs one shape per component: example {count - 1} has "
                        f"{k!r} of shape {tuple(shape)}, earlier ones {tuple(expected)}. Resize "
                        "or pad the examples first.")
            feature = {k: _feature(element[k], e) for k, e in zip(keys, encodings)}
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
    meta = {
        "format": FORMAT_VERSION,
        "structure": structure,
        "keys": list(keys),
        "dtypes": dtypes,
        "shapes": shapes,
        "encodings": encodings,
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

    Files written before format 2 get `"format": 1` (read one record at a time).

    Raises:
        FileNotFoundError: No `<prefix>.json` in `directory`, with how to write one.
        ValueError: The description is not valid JSON, lacks entries, or has a format this
            version cannot read, with how to rewrite the files.
    """
    path = os.path.join(directory, f"{prefix}.json")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: write the files with input_pipelines.tfrecord.write_shards(..., "
            f"prefix={prefix!r}) or `python -m input_pipelines.tfrecord`."
        )
    rewrite = ("Rewrite the files with input_pipelines.tfrecord.write_shards or "
               "`python -m input_pipelines.tfrecord`.")
    with tf.io.gfile.GFile(path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not a valid description (JSON error: {e}). {rewrite}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a valid description: found a {type(meta).__name__}, "
                         f"not an object. {rewrite}")
    meta.setdefault("format", 1)
    if meta["format"] not in (1, FORMAT_VERSION):
        raise ValueError(f"{path} has format {meta['format']!r}; this version reads formats 1 and "
                         f"{FORMAT_VERSION}. {rewrite}")
    required = _META_KEYS + (("encodings",) if meta["format"] >= 2 else ())
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"{path} (format {meta['format']}) lacks {', '.join(missing)}. {rewrite}")
    return meta


def file_pattern(directory: str, prefix: str = "data") -> str:
    """The glob matching the files of `prefix` in `directory`."""
    return os.path.join(directory, f"{prefix}-*-of-*.tfrecord")


def _structure(meta: Mapping[str, Any], values: dict[str, tf.Tensor]) -> Any:
    if meta["structure"] == "dict":
        return values
    if meta["structure"] == "single":
        return values["x"]
    return tuple(values[k] for k in meta["keys"])


def parse_fn(meta: Mapping[str, Any], *, scale_uint8: bool = False) -> Callable[[tf.Tensor], Any]:
    """A function parsing serialized records back into the written structure.

    For format 2 (`write_shards` today) the function takes one record or a batch of them (a
    vector) and parses them with one `tf.io.parse_example`: use it as a `batch_map_fn`. For
    format 1 files it takes one record (a `map_fn`).

    Args:
        meta: The description (`read_meta`).
        scale_uint8: Turn uint8 features (the first component) into float32 in [0, 1] (images).
            Defaults to `False`.

    Returns:
        `fn(serialized) -> element`, a tuple, dict or single tensor as written, batched like
        `serialized`.
    """
    keys, dtypes, shapes = meta["keys"], meta["dtypes"], meta["shapes"]

    def scaled(k: str, dtype: str) -> bool:
        return scale_uint8 and k == keys[0] and dtype == "uint8"

    if meta.get("format", 1) == 1:
        features = {k: tf.io.FixedLenFeature([], tf.string) for k in keys}

        def parse_one(record: tf.Tensor) -> Any:
            parsed = tf.io.parse_single_example(record, features)
            values = {}
            for k, dtype, shape in zip(keys, dtypes, shapes):
                value = tf.ensure_shape(
                    tf.io.parse_tensor(parsed[k], tf.dtypes.as_dtype(dtype)), shape)
                values[k] = tf.cast(value, tf.float32) / 255.0 if scaled(k, dtype) else value
            return _structure(meta, values)

        return parse_one

    encodings = meta["encodings"]
    features = {
        k: tf.io.FixedLenFeature([] if e == "raw" else shape, _ENCODINGS[d][1])
        for k, d, shape, e in zip(keys, dtypes, shapes, encodings)
    }

    def parse(records: tf.Tensor) -> Any:
        parsed = tf.io.parse_example(records, features)
        values = {}
        for k, dtype, shape, encoding in zip(keys, dtypes, shapes, encodings):
            value = parsed[k]
            if encoding == "raw":  # decode_raw has no uint64: decode int64, then bitcast
                raw_dtype = tf.int64 if dtype == "uint64" else tf.dtypes.as_dtype(dtype)
                value = tf.io.decode_raw(value, raw_dtype, little_endian=True)
                value = tf.reshape(value, tf.concat([tf.shape(records), shape], 0))
                if dtype == "uint64":
                    value = tf.bitcast(value, tf.uint64)
            elif scaled(k, dtype):  # straight from the parsed int64
                value = tf.cast(value, tf.float32) / 255.0
            elif value.dtype.name != dtype:
                value = tf.cast(value, dtype)
            values[k] = value
        return _structure(meta, values)

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
        ValueError: A description is invalid, the records are not `(features, integer label)`
            pairs, or the train and eval records differ in format or components.
    """
    train_meta, eval_meta = read_meta(directory, train_prefix), read_meta(directory, eval_prefix)
    layout = ("format", "structure", "keys", "dtypes", "shapes")
    differs = [k for k in layout if train_meta[k] != eval_meta[k]]
    if differs:
        raise ValueError(
            f"{directory}: the {train_prefix!r} and {eval_prefix!r} records differ in "
            + "; ".join(f"{k} ({train_meta[k]} vs {eval_meta[k]})" for k in differs)
            + ". Write both splits the same way, e.g. with `python -m input_pipelines.tfrecord`."
        )
    pairs = train_meta["structure"] == "tuple" and len(train_meta["keys"]) == 2
    if not pairs or not train_meta["num_classes"]:
        raise ValueError(
            f"{directory}: the {train_prefix!r} records are not (features, integer label) pairs "
            f"(components: {train_meta['keys']}). Write them from (x, y) arrays or an "
            "as_supervised dataset."
        )
    num_classes = max(train_meta["num_classes"], eval_meta.get("num_classes") or 0)
    parse = parse_fn(train_meta, scale_uint8=True)
    batched = train_meta["format"] >= 2  # format 1 parses one record at a time
    return DatasetSources(
        name=f"tfrecord:{directory}",
        train=file_pattern(directory, train_prefix),
        eval=file_pattern(directory, eval_prefix),
        input_shape=tuple(train_meta["shapes"][0]),
        num_classes=num_classes,
        train_examples=train_meta["num_examples"],
        eval_examples=eval_meta["num_examples"],
        map_fn=None if batched else parse,
        batch_map_fn=parse if batched else None,
    )


def _materialize(source: Any, data: DatasetSources) -> tf.data.Dataset:
    if isinstance(source, tf.data.Dataset):
        ds = source
    elif callable(source):
        ds = source(tf.distribute.InputContext())  # one pipeline: the whole split
    else:
        raise ValueError("write_sources converts in-memory, synthetic and TFDS sources, not files.")
    if data.map_fn is not None:
        ds = ds.map(data.map_fn)
    if data.batch_map_fn is not None:
        ds = ds.batch(1024).map(data.batch_map_fn).unbatch()
    return ds


def write_sources(data: DatasetSources, directory: str, num_shards: int) -> dict[str, list[str]]:
    """Writes a dataset's train and eval examples (after its map functions) for `sources(dir)`.

    Returns:
        `{"train": files, "eval": files}`.
    """
    return {
        prefix: write_shards(_materialize(source, data), directory, num_shards, prefix=prefix)
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
