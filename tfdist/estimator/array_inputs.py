"""`numpy_input_fn` and `pandas_input_fn`: tf.estimator's in-memory input helpers, on `tfdist.data`.

tf.estimator fed arrays through TF1 queues (`queue_capacity`, `num_threads`). Here the arrays
become a `tf.data` source of `tfdist.data.DataSpec`, so the data layer shards them — one share
per input pipeline, before shuffling — and batches them per replica. The returned `input_fn`
takes `input_context`, so the Estimator builds one pipeline per worker
(`distribute_datasets_from_function`) and `batch_size` is the *global* batch, split over the
replicas, as it was when tf.estimator split an `input_fn`'s batches under `train_distribute`.

Differences from tf.estimator: arguments are checked when the helper is called (tf.estimator
checked `x` and `y` when the input function ran); `num_threads` is accepted and unused (tf.data
parallelises on its own); the short final batch of a finite input is kept, as
`dequeue_up_to` kept it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfdist import checks
from tfdist import data as data_lib

_DEFAULT_TARGET_COLUMN = "target"
# Array kinds tf.data takes as they are: bool, integers, floats, complex, bytes, unicode.
_TENSOR_KINDS = "biufcSU"


def _check_count(name: str, value: Any, *, none_ok: bool = False) -> None:
    checks.positive_int(name, value, allow_none=none_ok)


def _check_shuffle(shuffle: Any, helper: str) -> bool:
    if not isinstance(shuffle, bool):
        raise ValueError(
            f"Invalid value for argument `shuffle` of {helper}. Received: shuffle={shuffle!r}. "
            "Pass it explicitly: True for training, False for evaluation and prediction."
        )
    return shuffle


def _array(value: Any, where: str) -> np.ndarray:
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.ndim == 0:
        raise ValueError(
            f"Invalid value for {where}. Received: a scalar ({value!r}). Pass an array with one "
            "row per example."
        )
    if array.dtype.kind == "O":  # e.g. a pandas string column
        for kind in (str, bytes):
            if all(isinstance(v, kind) for v in array.flat):
                array = array.astype(kind)
                break
    if array.dtype.kind not in _TENSOR_KINDS:
        raise TypeError(
            f"Invalid value for {where}. Received: an array of dtype {array.dtype}. Pass numbers, "
            "booleans or strings (convert dates, missing values or mixed objects first)."
        )
    return array


def _as_arrays(value: Any, argument: str) -> np.ndarray | dict[str, np.ndarray]:
    """An array, or a dict of arrays (keys sorted, as tf.estimator iterated them)."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Received: {argument}={{}} (an empty "
                "dict). Pass at least one array" + (", or None." if argument == "y" else ".")
            )
        return {k: _array(value[k], f"`{argument}[{k!r}]`") for k in sorted(value)}
    if isinstance(value, np.ndarray):
        if value.size == 0:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Received: an empty array of shape "
                f"{value.shape}. Pass at least one example."
            )
        return _array(value, f"argument `{argument}`")
    raise TypeError(
        f"Invalid value for argument `{argument}`. Received: {type(value).__name__}. Pass a "
        "numpy array or a dict of them."
    )


def _lengths(name: str, value: np.ndarray | dict[str, np.ndarray]) -> dict[str, int]:
    if isinstance(value, dict):
        return {f"{name}[{k!r}]": len(v) for k, v in value.items()}
    return {name: len(value)}


def arrays_input_fn(
    features: np.ndarray | dict[str, np.ndarray],
    labels: np.ndarray | dict[str, np.ndarray] | None,
    *,
    batch_size: int,
    num_epochs: int | None,
    shuffle: bool,
    shuffle_buffer: int,
) -> Callable[..., tf.data.Dataset]:
    """The `input_fn(input_context=None)` over checked in-memory arrays (both helpers end here).

    Raises:
        ValueError: The arrays differ in length.
    """
    lengths = {**_lengths("x", features), **({} if labels is None else _lengths("y", labels))}
    if len(set(lengths.values())) != 1:
        listed = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(
            "Invalid value for arguments `x` and `y`: every array must have one row per "
            f"example, but their lengths differ. Received lengths: {listed}."
        )

    def input_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        # Built when called, not before: a tf.data source initialises TensorFlow's runtime.
        element = features if labels is None else (features, labels)
        source = tf.data.Dataset.from_tensor_slices(element)
        # Epochs repeat before sharding, as tf.estimator's queue ran them back to back; each
        # pipeline then reads every n-th example of that stream (disjoint, covering).
        source = source.repeat(num_epochs) if num_epochs is not None else source.repeat()
        spec = data_lib.DataSpec(
            source=source,
            global_batch_size=batch_size,
            shuffle_buffer=shuffle_buffer if shuffle else 0,
            repeat=False,
            drop_remainder=False,
            seed=None,  # like tf.estimator's queues: TF's seed (RunConfig.tf_random_seed)
            sharding="auto",  # by example across pipelines (an in-memory source)
        )
        return data_lib.make_dataset(spec, input_context)

    return input_fn


def numpy_input_fn(
    x: np.ndarray | dict[str, np.ndarray],
    y: np.ndarray | dict[str, np.ndarray] | None = None,
    batch_size: int = 128,
    num_epochs: int | None = 1,
    shuffle: bool | None = None,
    queue_capacity: int = 1000,
    num_threads: int = 1,
) -> Callable[..., tf.data.Dataset]:
    """An `input_fn` feeding numpy arrays, as `tf.compat.v1.estimator.inputs.numpy_input_fn` did.

    Args:
        x: A numpy array (the features are that tensor) or a dict of arrays (the features are
            a dict with the same keys).
        y: An array or dict of arrays (the labels), or `None` for features only (prediction).
            Defaults to `None`.
        batch_size: Examples per step across all replicas and workers. Defaults to 128.
        num_epochs: Passes over the data; `None` repeats forever. Defaults to 1.
        shuffle: Whether to shuffle. Required (tf.estimator required it too).
        queue_capacity: The shuffle buffer, in examples. Defaults to 1000.
        num_threads: Accepted for compatibility; unused. Defaults to 1.

    Returns:
        `input_fn(input_context=None)` returning this input pipeline's dataset of
        `(features, labels)` batches (or of features, without `y`), sharded by pipeline.

    Raises:
        ValueError: `shuffle` not a bool, empty data, lengths that differ, keys in both `x` and
            `y`, or a non-positive count.
        TypeError: `x` or `y` of another type, or arrays of a dtype tf.data cannot hold.

    Example:

    ```python
    train_input_fn = tfdist.estimator.inputs.numpy_input_fn(
        x={"x": train_images}, y=train_labels, batch_size=100, num_epochs=None, shuffle=True)
    estimator.train(train_input_fn, steps=1000)
    ```
    """
    shuffle = _check_shuffle(shuffle, "numpy_input_fn")
    features = _as_arrays(x, "x")
    labels = None if y is None else _as_arrays(y, "y")
    if isinstance(features, dict) and isinstance(labels, dict):
        both = sorted(set(features) & set(labels))
        if both:
            raise ValueError(
                f"Invalid value for argument `y`: its keys {both} are also keys of `x`. Give "
                "features and labels distinct keys."
            )
    _check_counts(batch_size, num_epochs, queue_capacity, num_threads)
    return arrays_input_fn(features, labels, batch_size=batch_size, num_epochs=num_epochs,
                           shuffle=shuffle, shuffle_buffer=queue_capacity)


def _check_counts(batch_size: Any, num_epochs: Any, queue_capacity: Any, num_threads: Any) -> None:
    _check_count("batch_size", batch_size)
    _check_count("num_epochs", num_epochs, none_ok=True)
    _check_count("queue_capacity", queue_capacity)
    _check_count("num_threads", num_threads)


def _import_pandas() -> Any:
    try:
        import pandas  # noqa: PLC0415  (optional dependency)
    except ImportError:
        raise ImportError(
            "pandas_input_fn needs pandas, which is not installed. Install it (`pip install "
            "pandas`), or pass the columns as arrays to numpy_input_fn."
        ) from None
    return pandas


def _columns(frame: Any, argument: str) -> dict[str, np.ndarray]:
    for column in frame.columns:
        if not isinstance(column, str):
            raise TypeError(
                f"Invalid value for argument `{argument}`: column names become feature keys and "
                f"must be strings. Received: column {column!r} ({type(column).__name__}). "
                f"Rename it, e.g. {argument}.columns = {argument}.columns.astype(str)."
            )
    return {c: _array(frame[c].to_numpy(), f"`{argument}[{c!r}]`") for c in frame.columns}


def pandas_input_fn(
    x: Any,
    y: Any = None,
    batch_size: int = 128,
    num_epochs: int | None = 1,
    shuffle: bool | None = None,
    queue_capacity: int | None = 1000,
    num_threads: int = 1,
    target_column: str = _DEFAULT_TARGET_COLUMN,
) -> Callable[..., tf.data.Dataset]:
    """An `input_fn` feeding a pandas DataFrame, as `tf.compat.v1.estimator.inputs.pandas_input_fn` did.

    The features are a dict of column name -> column; the labels are `y` (a Series), or a dict
    of its columns when `y` is a DataFrame.

    Args:
        x: A `pandas.DataFrame` (string column names).
        y: A `pandas.Series` or `DataFrame` whose index equals `x`'s, or `None` for features
            only (prediction). Defaults to `None`.
        batch_size: Examples per step across all replicas and workers. Defaults to 128.
        num_epochs: Passes over the data; `None` repeats forever. Defaults to 1.
        shuffle: Whether to shuffle. Required (tf.estimator required it too).
        queue_capacity: The shuffle buffer, in examples; `None` means `4 * len(x)` when
            shuffling. Defaults to 1000.
        num_threads: Accepted for compatibility; unused. Defaults to 1.
        target_column: tf.estimator's name for `y` (a Series) among the columns; it must not
            be a column of `x`. Not used, and must be left at its default, when `y` is a
            DataFrame. Defaults to `"target"`.

    Returns:
        `input_fn(input_context=None)` returning this input pipeline's dataset of
        `(features, labels)` batches (or of features, without `y`), sharded by pipeline.

    Raises:
        ImportError: pandas is not installed.
        ValueError: `shuffle` not a bool, indexes that differ, `target_column` clashing with a
            column of `x` or set with a DataFrame `y`, or a non-positive count.
        TypeError: `x` or `y` of another type, non-string column names, or unsupported dtypes.
    """
    pd = _import_pandas()
    shuffle = _check_shuffle(shuffle, "pandas_input_fn")
    if not isinstance(x, pd.DataFrame):
        raise TypeError(
            f"Invalid value for argument `x`. Received: {type(x).__name__}. Pass a "
            "pandas.DataFrame (or use numpy_input_fn for arrays)."
        )
    if len(x) == 0 or len(x.columns) == 0:
        raise ValueError(
            f"Invalid value for argument `x`. Received: a DataFrame of shape {x.shape}. Pass at "
            "least one column and one row."
        )
    if not isinstance(target_column, str):
        raise TypeError(
            "Invalid value for argument `target_column`. Received: "
            f"target_column={target_column!r}. Pass a string."
        )
    labels: np.ndarray | dict[str, np.ndarray] | None = None
    if y is not None:
        if not isinstance(y, (pd.Series, pd.DataFrame)):
            raise TypeError(
                f"Invalid value for argument `y`. Received: {type(y).__name__}. Pass a "
                "pandas.Series or DataFrame (with x's index), or None."
            )
        if isinstance(y, pd.DataFrame) and target_column != _DEFAULT_TARGET_COLUMN:
            raise ValueError(
                f"Invalid value for argument `target_column`. Received: "
                f"target_column={target_column!r} with a DataFrame `y`, whose own column "
                "names are the label keys. Drop target_column, or pass y as a Series."
            )
        if isinstance(y, pd.Series) and target_column in x.columns:
            raise ValueError(
                f"Invalid value for argument `target_column`. Received: "
                f"target_column={target_column!r}, which is already a column of `x`. Pass "
                "another name, or drop that column from x."
            )
        if not np.array_equal(x.index, y.index):
            raise ValueError(
                "Invalid value for argument `y`: its index differs from x's (lengths "
                f"{len(y)} and {len(x)}). Pass rows of the same examples, e.g. "
                "y.reindex(x.index), or reset both indexes."
            )
        labels = _columns(y, "y") if isinstance(y, pd.DataFrame) else _array(
            y.to_numpy(), "argument `y`")
    features = _columns(x, "x")
    if queue_capacity is None:
        queue_capacity = 4 * len(x) if shuffle else len(x)
    _check_counts(batch_size, num_epochs, queue_capacity, num_threads)
    return arrays_input_fn(features, labels, batch_size=batch_size, num_epochs=num_epochs,
                           shuffle=shuffle, shuffle_buffer=queue_capacity)
