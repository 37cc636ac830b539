"""Output formats: CSV, Parquet, TFRecord and NumPy, written in chunks, in key order.

A column of one value per record is one CSV column; a column of shape `[k]` (or more, flattened)
becomes CSV columns `name_0 .. name_{k-1}`, a Parquet fixed-size list, a `tf.train.Example`
feature of k values, and a NumPy array of that shape. Every file is written under a temporary
name and renamed when complete.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from tfdist.predict import store
from tfdist.predict.errors import PredictError

from tfdist.predict.formats import OUTPUT_FORMATS as FORMATS
EXTENSIONS = {"csv": ".csv", "parquet": ".parquet", "tfrecord": ".tfrecord", "numpy": ".npz"}

Chunk = Mapping[str, np.ndarray]


def plain(array: np.ndarray) -> np.ndarray:
    """Object arrays of str/bytes (from Arrow or TensorFlow) as fixed-width str arrays."""
    if array.dtype == object or array.dtype.kind == "S":
        return np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                           for v in array.reshape(-1)]).reshape(array.shape)
    return array


def _flat(chunk: Chunk) -> dict[str, np.ndarray]:
    out = {}
    for name, value in chunk.items():
        value = plain(np.asarray(value))
        if value.ndim <= 1:
            out[name] = value
        else:
            flat = value.reshape(len(value), -1)
            for i in range(flat.shape[1]):
                out[f"{name}_{i}"] = flat[:, i]
    return out


def _arrow_table(chunk: Chunk, flatten: bool) -> Any:
    import pyarrow as pa

    arrays, names = [], []
    for name, value in (_flat(chunk) if flatten else chunk).items():
        value = plain(np.asarray(value))
        if value.ndim <= 1:
            arrays.append(pa.array(value))
        else:
            flat = value.reshape(len(value), -1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _feature(value: np.ndarray) -> Any:
    import tensorflow as tf

    flat = value.reshape(-1)
    if value.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=flat))
    if value.dtype.kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64)))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode() for v in flat]))


def write(path: str, fmt: str, chunks: Iterable[Chunk]) -> int:
    """Writes `chunks` (column dicts, in order) to `path` atomically; returns the rows written."""
    if fmt not in FORMATS:
        raise PredictError(f"Invalid value for argument `output_format`. Received: "
                           f"output_format={fmt!r}. Valid values: {', '.join(FORMATS)}.")
    if fmt == "tfrecord":
        return _write_tfrecord(path, chunks)
    rows = 0
    with store.atomic_open(path, "wb") as f:
        if fmt == "csv":
            import pyarrow.csv

            writer = None
            for chunk in chunks:
                table = _arrow_table(chunk, flatten=True)
                if writer is None:
                    writer = pyarrow.csv.CSVWriter(f, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is not None:
                writer.close()
        elif fmt == "parquet":
            import pyarrow.parquet

            writer = None
            for chunk in chunks:
                table = _arrow_table(chunk, flatten=False)
                if writer is None:
                    writer = pyarrow.parquet.ParquetWriter(f, table.schema)
                writer.write_table(table)
                rows += table.num_rows
            if writer is not None:
                writer.close()
        else:  # numpy: one .npz of whole columns
            parts: dict[str, list[np.ndarray]] = {}
            for chunk in chunks:
                for n, v in chunk.items():
                    parts.setdefault(n, []).append(plain(np.asarray(v)))
                rows += len(next(iter(chunk.values())))
            # numpy's stub takes the **arrays for its `allow_pickle: bool`; they are column names.
            np.savez(f, **{n: np.concatenate(v) for n, v in parts.items()})  # type: ignore[arg-type]
    return rows


def _write_tfrecord(path: str, chunks: Iterable[Chunk]) -> int:
    import tensorflow as tf

    rows = 0
    with store.atomic_path(path) as temp, tf.io.TFRecordWriter(temp) as writer:
        for chunk in chunks:
            columns = {n: plain(np.asarray(v)) for n, v in chunk.items()}
            count = len(next(iter(columns.values())))
            for i in range(count):
                example = tf.train.Example(features=tf.train.Features(
                    feature={n: _feature(np.asarray(v[i])) for n, v in columns.items()}))
                writer.write(example.SerializeToString())
            rows += count
    return rows


def read(path: str, fmt: str) -> dict[str, np.ndarray]:
    """Reads a file `write` wrote back into columns (tests and small outputs)."""
    if fmt == "numpy":
        with np.load(path, allow_pickle=False) as loaded:
            return {k: loaded[k] for k in loaded.files}
    if fmt in ("csv", "parquet"):
        import pyarrow.csv
        import pyarrow.parquet

        table = pyarrow.csv.read_csv(path) if fmt == "csv" else pyarrow.parquet.read_table(path)
        out = {}
        for name in table.column_names:
            column = table.column(name)
            values = column.to_pylist() if fmt == "parquet" else column.to_numpy()
            out[name] = np.asarray(values)
        return out
    raise PredictError(f"read() reads numpy, csv and parquet files, not {fmt!r}.")


def extension(fmt: str) -> str:
    return EXTENSIONS[fmt]
