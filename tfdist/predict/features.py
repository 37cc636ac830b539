"""Which input columns feed which model input, checked against the serving signature.

Rules, per model input: the column `--features` maps to it (`input=column`); else a column of
the same name; else, for a model with one input, the one column left (besides the id column),
or -- a vector input such as `(None, 4)` fed from a table of scalar columns -- those columns
stacked in order (all of them, or the ones `--features` lists). Values are cast to the input's
dtype when that loses nothing a model expects (integers or floats to a float input, integers to
an integer input); anything else, and any shape that differs, is an error naming the feature,
what the signature expects and what the input has.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfdist.predict.errors import PredictError
from tfdist.predict.readers import Column

ID_FEATURE = "__id__"  # carried past the model into the outputs


@dataclasses.dataclass(frozen=True)
class Feed:
    """One model input: the columns it is made of (stacked when several) and its spec."""

    input: str
    columns: tuple[str, ...]
    spec: tf.TensorSpec

    @property
    def stacked(self) -> bool:
        return len(self.columns) > 1


def _spec_text(spec: tf.TensorSpec) -> str:
    return f"{spec.dtype.name} {[d for d in spec.shape.as_list()[1:]]}"


def _castable(source: tf.DType, target: tf.DType) -> bool:
    if source == target:
        return True
    if target.is_floating:
        return source.is_floating or source.is_integer or source == tf.bool
    if target.is_integer:
        return source.is_integer or source == tf.bool
    return False


def _shape_ok(shape: Sequence[int], spec: tf.TensorSpec) -> bool:
    expected = spec.shape.as_list()[1:]
    return len(expected) == len(shape) and all(e is None or e == s for e, s in zip(expected, shape))


def parse_features(text: str | Sequence[str] | None) -> tuple[dict[str, str], tuple[str, ...]]:
    """`--features`: `input=column` pairs and bare column names (to stack into the one input)."""
    if not text:
        return {}, ()
    items = text.split(",") if isinstance(text, str) else list(text)
    mapping, bare = {}, []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if "=" in item:
            name, _, column = item.partition("=")
            mapping[name.strip()] = column.strip()
        else:
            bare.append(item)
    if mapping and bare:
        raise PredictError(f"Invalid value for argument `features`. Received: features={text!r}. "
                           "Use input=column pairs or a list of columns to stack, not both.")
    return mapping, tuple(bare)


def plan_feeds(
    inputs: Mapping[str, tf.TensorSpec],
    columns: Mapping[str, Column],
    *,
    features: str | Sequence[str] | None = None,
    id_column: str | None = None,
) -> list[Feed]:
    """Matches columns to the model's inputs and checks dtypes and shapes.

    Args:
        inputs: The model's inputs (name -> spec with a `None` batch dimension).
        columns: The input's columns.
        features: `--features` (see the module docstring). Defaults to none.
        id_column: A column holding record ids (not a feature). Defaults to none.

    Returns:
        One `Feed` per model input.

    Raises:
        PredictError: A feature is missing, or its dtype or shape does not fit (one line).
    """
    if id_column is not None and id_column not in columns:
        raise PredictError(f"Invalid value for argument `id_column`. Received: id_column="
                           f"{id_column!r}, not a column of the input (columns: {list(columns)}).")
    mapping, bare = parse_features(features)
    for name in mapping:
        if name not in inputs:
            raise PredictError(f"Invalid value for argument `features`: {name!r} is not an input of "
                               f"the model (inputs: {list(inputs)}).")
    for column in (*mapping.values(), *bare):
        if column not in columns:
            raise PredictError(f"Invalid value for argument `features`: {column!r} is not a column "
                               f"of the input (columns: {list(columns)}).")
    candidates = [c for c in columns if c != id_column]
    feeds = []
    for name, spec in inputs.items():
        if name in mapping:
            chosen: tuple[str, ...] = (mapping[name],)
        elif bare and len(inputs) == 1:
            chosen = bare
        elif name in columns and name != id_column:
            chosen = (name,)
        elif len(inputs) == 1 and len(candidates) == 1:
            chosen = (candidates[0],)
        elif len(inputs) == 1 and candidates and spec.shape.rank == 2 and all(
                columns[c].shape == () for c in candidates):
            chosen = tuple(candidates)
        else:
            raise PredictError(f"Feature {name!r} (expected {_spec_text(spec)}) is not in the input "
                               f"(columns: {list(columns)}). Name a column after it, or pass "
                               f"--features={name}=COLUMN.")
        feeds.append(_check(name, spec, chosen, columns))
    return feeds


def _check(name: str, spec: tf.TensorSpec, chosen: tuple[str, ...],
           columns: Mapping[str, Column]) -> Feed:
    dtypes = {columns[c].dtype for c in chosen}
    if len(chosen) > 1:
        bad = [c for c in chosen if columns[c].shape != ()]
        if bad:
            raise PredictError(f"Feature {name!r}: column {bad[0]!r} has shape "
                               f"{list(columns[bad[0]].shape)}; only scalar columns stack into one "
                               "vector feature.")
        shape: tuple[int, ...] = (len(chosen),)
    else:
        shape = columns[chosen[0]].shape
    received = f"{'/'.join(sorted(d.name for d in dtypes))} {list(shape)}"
    source = f"column {chosen[0]!r}" if len(chosen) == 1 else f"{len(chosen)} stacked columns"
    if not all(_castable(d, spec.dtype) for d in dtypes) or not _shape_ok(shape, spec):
        raise PredictError(f"Feature {name!r} does not match the model's serving signature: "
                           f"expected {_spec_text(spec)}, received {received} ({source}).")
    return Feed(name, chosen, spec)


def assemble_numpy(feeds: Sequence[Feed], arrays: Mapping[str, np.ndarray],
                   id_column: str | None) -> dict[str, np.ndarray]:
    """The model inputs (and ids) as arrays, cast to the signature's dtypes (views when possible)."""
    out = {}
    for feed in feeds:
        dtype = feed.spec.dtype.as_numpy_dtype
        if feed.stacked:
            out[feed.input] = np.stack([np.asarray(arrays[c], dtype) for c in feed.columns], axis=1)
        else:
            array = arrays[feed.columns[0]]
            out[feed.input] = array if array.dtype == dtype else np.asarray(array, dtype)
    if id_column is not None:
        out[ID_FEATURE] = arrays[id_column]
    return out


def assemble_tf(feeds: Sequence[Feed], values: Mapping[str, tf.Tensor],
                id_column: str | None) -> dict[str, tf.Tensor]:
    """The same for tensors (parsed TFRecord batches)."""
    out = {}
    for feed in feeds:
        parts = [tf.cast(values[c], feed.spec.dtype) for c in feed.columns]
        out[feed.input] = tf.stack(parts, axis=1) if feed.stacked else parts[0]
    if id_column is not None:
        out[ID_FEATURE] = values[id_column]
    return out
