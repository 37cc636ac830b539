"""Input readers: CSV, Parquet (pyarrow), NumPy and TFRecord (`input_pipelines.tfrecord`).

Every reader turns the input into a `Source`: the number of records, the columns (name ->
per-record dtype and shape) and `read_batches(start, stop, batch_size)`, the records with keys
(row numbers, counted across the input files in sorted order) in `[start, stop)`, batched.
`tfdist.data.inference_dataset` keys, shards and batches them from there.

CSV, Parquet and NumPy inputs are read into memory once per worker (`.npy` files are memory
mapped); TFRecord files are streamed, and a shard never spans two files.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfdist.predict.errors import PredictError
from tfdist.predict.formats import INPUT_FORMATS as FORMATS
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "numpy",
               ".npz": "numpy", ".tfrecord": "tfrecord", ".json": "tfrecord"}


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: the dtype and shape of a single record's value."""

    dtype: tf.DType
    shape: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype.name} {list(self.shape)}"


@dataclasses.dataclass
class Source:
    """Keyed records, readable by key range.

    Attributes:
        format: The input format.
        files: The input files, in key order.
        num_records: Records across all files.
        columns: Column name -> `Column`.
        boundaries: Keys where a new file starts (shards do not span them; TFRecord only).
        arrays: The columns as arrays (in-memory formats only).
        tfrecord: For TFRecord inputs: `(files, offsets, meta)`.
    """

    format: str
    files: tuple[str, ...]
    num_records: int
    columns: dict[str, Column]
    boundaries: tuple[int, ...] = ()
    arrays: dict[str, np.ndarray] | None = None
    tfrecord: tuple[tuple[str, ...], tuple[int, ...], dict[str, Any]] | None = None


def _expand(patterns: Sequence[str]) -> list[str]:
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(globlib.glob(pattern))
        if not matched:
            raise PredictError(f"Invalid value for argument `input`. Received: input={pattern!r}, "
                               "which matches no file. Check the path or the glob pattern.")
        files += [m for m in matched if m not in files]
    return files


def _format_of(files: Sequence[str], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    kinds = {"tfrecord" if os.path.isdir(f) else _EXTENSIONS.get(os.path.splitext(f)[1].lower())
             for f in files}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None:
        raise PredictError(f"Cannot tell the input format of {list(files)[:3]!r} from the file "
                           "names. Pass --input_format=csv, parquet, numpy or tfrecord.")
    return kind


def _column(array: np.ndarray, name: str, path: str) -> Column:
    if array.dtype == object or array.dtype.kind in "US":
        return Column(tf.string, tuple(array.shape[1:]))
    try:
        return Column(tf.as_dtype(array.dtype), tuple(array.shape[1:]))
    except TypeError:
        raise PredictError(f"Column {name!r} of {path!r} has dtype {array.dtype}, which TensorFlow "
                           "cannot hold. Convert it to a numeric or string type.") from None


def _from_arrays(fmt: str, files: list[str], parts: list[dict[str, np.ndarray]]) -> Source:
    names = list(parts[0])
    for path, part in zip(files, parts):
        if list(part) != names:
            raise PredictError(f"Input {path!r} has columns {list(part)}, but {files[0]!r} has "
                               f"{names}. Every input file needs the same columns.")
    arrays = {n: parts[0][n] if len(parts) == 1 else np.concatenate([p[n] for p in parts])
              for n in names}
    lengths = {n: len(a) for n, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise PredictError(f"The input's columns differ in length: {lengths}. Every column needs "
                           "one value per record.")
    num = next(iter(lengths.values()), 0)
    columns = {n: _column(a, n, files[0]) for n, a in arrays.items()}
    return Source(fmt, tuple(files), num, columns, arrays=arrays)


def _read_numpy(path: str) -> dict[str, np.ndarray]:
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as loaded:
                return {k: loaded[k] for k in loaded.files}
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PredictError(f"Cannot read the NumPy input {path!r}: {e}") from None
    if array.ndim == 0:
        raise PredictError(f"The NumPy input {path!r} holds a scalar; it needs one row per record.")
    return {"x": array}


def _table_to_arrays(table: Any, path: str) -> dict[str, np.ndarray]:
    import pyarrow as pa

    arrays = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or \
                pa.types.is_large_list(column.type):
            values = column.to_pylist()
            try:
                arrays[name] = np.asarray(values)
            except ValueError:
                raise PredictError(f"Column {name!r} of {path!r} has lists of different lengths; "
                                   "every record needs the same shape.") from None
            if arrays[name].dtype == object:
                raise PredictError(f"Column {name!r} of {path!r} has lists of different lengths "
                                   "or nulls; every record needs the same shape.")
        else:
            if column.null_count:
                raise PredictError(f"Column {name!r} of {path!r} has {column.null_count} missing "
                                   "value(s). Fill them in first.")
            arrays[name] = column.to_numpy(zero_copy_only=False)
    return arrays


def _read_csv(path: str) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.csv

    try:
        table = pyarrow.csv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise PredictError(f"Cannot read the CSV input {path!r}: {str(e).splitlines()[0]}") from None
    return _table_to_arrays(table, path)


def _read_parquet(path: str) -> dict[str, np.ndarray]:
    import pyarrow as pa
    import pyarrow.parquet

    try:
        table = pyarrow.parquet.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise PredictError(f"Cannot read the Parquet input {path!r}: "
                           f"{str(e).splitlines()[0]}") from None
    return _table_to_arrays(table, path)


def _read_tfrecord(files: list[str]) -> Source:
    from input_pipelines import tfrecord

    if len(files) != 1:
        raise PredictError(f"TFRecord input takes one description: a directory or a <prefix>.json "
                           f"written by input_pipelines.tfrecord.write_shards. Received {files!r}.")
    path = files[0]
    if os.path.isdir(path):
        described = sorted(globlib.glob(os.path.join(path, "*.json")))
        if len(described) != 1:
            raise PredictError(f"Invalid value for argument `input`. Received: input={path!r}, a "
                               f"directory with {len(described)} .json description(s). Pass the "
                               "<prefix>.json of the files to score.")
        path = described[0]
    directory, prefix = os.path.dirname(path), os.path.basename(path)[: -len(".json")]
    try:
        meta = tfrecord.read_meta(directory, prefix)
    except (FileNotFoundError, ValueError) as e:
        raise PredictError(str(e)) from None
    names = [os.path.join(directory, f) for f in meta["files"]]
    missing = [f for f in names if not os.path.exists(f)]
    if missing:
        raise PredictError(f"{path} lists {missing[0]!r}, which does not exist. Rewrite the files.")
    # write_shards puts example i into file i % num_shards: file s holds len(range(s, N, n)).
    n, total = meta["num_shards"], meta["num_examples"]
    counts = [len(range(s, total, n)) for s in range(len(names))]
    offsets = tuple(int(x) for x in np.cumsum([0] + counts))
    columns = {k: Column(tf.as_dtype(d), tuple(s)) for k, d, s in
               zip(meta["keys"], meta["dtypes"], meta["shapes"])}
    return Source("tfrecord", tuple(names), total, columns, boundaries=offsets[1:-1],
                  tfrecord=(tuple(names), offsets, meta))


def open_source(inputs: Sequence[str], fmt: str = "auto") -> Source:
    """Opens the input files and describes their records.

    Args:
        inputs: File paths or glob patterns (TFRecord: the directory or `<prefix>.json` that
            `input_pipelines.tfrecord.write_shards` wrote).
        fmt: One of `FORMATS`. Defaults to `"auto"` (from the file extension).

    Returns:
        The `Source`.

    Raises:
        PredictError: No such files, an unknown format, unreadable or empty input.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise PredictError("Invalid value for argument `input`. Received: input=[]. Pass the "
                           "files to score.")
    if fmt not in FORMATS:
        raise PredictError(f"Invalid value for argument `input_format`. Received: "
                           f"input_format={fmt!r}. Valid values: {', '.join(FORMATS)}.")
    files = _expand(inputs)
    fmt = _format_of(files, fmt)
    if fmt == "tfrecord":
        source = _read_tfrecord(files)
    else:
        reader = {"csv": _read_csv, "parquet": _read_parquet, "numpy": _read_numpy}[fmt]
        source = _from_arrays(fmt, files, [reader(f) for f in files])
    if source.num_records == 0:
        raise PredictError(f"The input {', '.join(source.files)} has no records; nothing to score.")
    return source


def tfrecord_parse(source: Source) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """For a TFRecord source: parses a batch of serialized records into a column dict."""
    from input_pipelines import tfrecord

    if source.tfrecord is None:
        raise ValueError(f"tfrecord_parse needs a TFRecord source. Received: {describe(source)}.")
    meta = source.tfrecord[2]
    parse = tfrecord.parse_fn(meta)
    keys = meta["keys"]

    def fn(records: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = parse(records)
        if isinstance(parsed, dict):
            return dict(parsed)
        if isinstance(parsed, tuple):
            return dict(zip(keys, parsed))
        return {keys[0]: parsed}

    return fn


def describe(source: Source) -> str:
    """One line for logs."""
    cols = ", ".join(f"{n}: {c.describe()}" for n, c in source.columns.items())
    return f"{source.format} input, {source.num_records} records in {len(source.files)} file(s) ({cols})"


def fingerprint(source: Source) -> list[dict[str, Any]]:
    """The input files with their sizes and modification times, for the run manifest."""
    files = list(source.files) if source.tfrecord is None else list(source.tfrecord[0])
    out = []
    for f in files:
        st = os.stat(f)
        out.append({"path": os.path.abspath(f), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out
