"""`tf.feature_column` columns read as configuration, run as Keras 3 preprocessing.

`tf.feature_column` still exists in TF 2.21 (deprecated) and its columns are namedtuples whose
fields say everything (`key`, `vocabulary_list`, `boundaries`, ...). `translate` reads them and
builds the equivalent Keras preprocessing layers, once, eagerly (lookup tables live outside any
`model_fn` trace); no `tf.feature_column` code runs in the graph. What each column becomes:

- numeric_column -> the float feature (`normalizer_fn` applied), reshaped to `[batch, n]`
- bucketized_column -> `keras.layers.Discretization(bin_boundaries=...)`
- categorical_column_with_vocabulary_list / _file -> `StringLookup` / `IntegerLookup`
- categorical_column_with_identity -> the ids themselves (range-checked)
- categorical_column_with_hash_bucket -> `keras.layers.Hashing`
- crossed_column -> `keras.layers.HashedCrossing`
- indicator_column -> `keras.layers.CategoryEncoding(output_mode="count")`
- embedding_column, shared embeddings -> `keras.layers.Embedding` (created in `model_fn`)
- weighted_categorical_column -> the ids, weighted by the weight feature

Categorical values flow as `(ids, weights)`: `[batch, k]` int64 ids and float weights, weight 0
marking a missing value ("" or -1, padding of sparse input, an out-of-vocabulary value without
OOV buckets) — the same values tf.feature_column dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfdist.compat import shared_embedding_config

_NO_EQUIVALENT = {
    "SequenceNumericColumn": "sequence features need a sequence model",
    "SequenceCategoricalColumn": "sequence features need a sequence model",
    "SequenceCategoricalColumnWithIdentity": "sequence features need a sequence model",
}


def _kind(column: Any) -> str:
    return type(column).__name__


def _column_error(column: Any, why: str) -> ValueError:
    name = getattr(column, "name", repr(column))
    return ValueError(
        f"Invalid value in argument `feature_columns`. Received: {_kind(column)} {name!r}: {why}."
    )


def _feature(features: Any, key: str, column: str) -> Any:
    if not isinstance(features, Mapping) or key not in features:
        have = sorted(features) if isinstance(features, Mapping) else type(features).__name__
        raise ValueError(
            f"Feature column {column!r} reads the feature {key!r}, which input_fn does not "
            f"return (features: {have}). Return it from input_fn, or drop the column."
        )
    return features[key]


def _dense_2d(value: Any, pad: Any) -> tf.Tensor:
    """A feature as a dense `[batch, k]` tensor (sparse/ragged padded with `pad`)."""
    if isinstance(value, tf.SparseTensor):
        value = tf.sparse.to_dense(value, default_value=pad)
    elif isinstance(value, tf.RaggedTensor):
        value = value.to_tensor(default_value=pad)
    value = tf.convert_to_tensor(value)
    if value.shape.rank == 0:
        value = tf.reshape(value, [1, 1])
    elif value.shape.rank == 1:
        value = value[:, tf.newaxis]
    elif value.shape.rank > 2:
        value = tf.reshape(value, [tf.shape(value)[0], -1])
    return value


class _Lazy:
    """Keras preprocessing layers made on first use, not at construction.

    Construction only reads the columns: creating a lookup table would start TensorFlow's
    runtime, after which `MultiWorkerMirroredStrategy` can no longer be created ("Collective ops
    must be configured at program startup") — and canned estimators are usually constructed
    before their strategy. Layers are made outside any trace (`tf.init_scope`).
    """

    _factories: dict[str, Any]

    def _lazy(self, attr: str, factory: Callable[[], Any]) -> None:
        self.__dict__.setdefault("_factories", {})[attr] = factory

    def __getattr__(self, attr: str) -> Any:
        factories = self.__dict__.get("_factories", {})
        if attr not in factories:
            raise AttributeError(attr)
        with tf.init_scope():
            layer = factories.pop(attr)()
        setattr(self, attr, layer)
        return layer

    def made_layers(self) -> list[Any]:
        """The layers made so far (their lookup tables are what an export must save)."""
        return [v for k, v in vars(self).items() if isinstance(v, keras.layers.Layer)]


def _missing(values: tf.Tensor) -> tf.Tensor:
    if values.dtype == tf.string:
        return tf.equal(values, "")
    return tf.equal(values, tf.cast(-1, values.dtype))


class Numeric:
    """numeric_column: `[batch, n]` float32."""

    is_dense = True

    def __init__(self, column: Any) -> None:
        self.name = column.name
        self.key = column.key
        self.normalizer_fn = column.normalizer_fn
        self.dimension = int(np.prod(column.shape))

    def dense(self, features: Any) -> tf.Tensor:
        value = _feature(features, self.key, self.name)
        if isinstance(value, tf.SparseTensor):
            value = tf.sparse.to_dense(value)
        value = tf.cast(tf.convert_to_tensor(value), tf.float32)
        if self.normalizer_fn is not None:
            value = self.normalizer_fn(value)
        return tf.reshape(value, [-1, self.dimension])


class Categorical(_Lazy):
    """A categorical column: `ids_weights(features)` -> `([batch, k]` ids, weights`)`."""

    is_dense = False
    name: str
    num_buckets: int

    def ids_weights(self, features: Any) -> tuple[tf.Tensor, tf.Tensor]:
        raise NotImplementedError

    def raw(self, features: Any) -> tf.Tensor:
        """The values crossed by `crossed_column` (its ids)."""
        ids, _ = self.ids_weights(features)
        return ids


def _finish(ids: tf.Tensor, valid: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    ids = tf.cast(ids, tf.int64)
    return tf.where(valid, ids, tf.zeros_like(ids)), tf.cast(valid, tf.float32)


class Vocabulary(Categorical):
    """categorical_column_with_vocabulary_list/_file -> StringLookup/IntegerLookup."""

    def __init__(self, column: Any, vocabulary: list[Any]) -> None:
        self.name, self.key = column.name, column.key
        self.oov = column.num_oov_buckets
        self.default = column.default_value
        self.is_string = column.dtype == tf.string
        self.num_buckets = len(vocabulary) + self.oov
        layer = keras.layers.StringLookup if self.is_string else keras.layers.IntegerLookup
        self._lazy("lookup", lambda: layer(vocabulary=vocabulary,
                                           num_oov_indices=max(self.oov, 1), mask_token=None))

    def ids_weights(self, features):
        values = _dense_2d(_feature(features, self.key, self.name),
                           "" if self.is_string else -1)
        if not self.is_string:
            values = tf.cast(values, tf.int64)
        present = tf.logical_not(_missing(values))
        ids = tf.cast(self.lookup(values), tf.int64)
        if self.oov:  # Keras: OOV buckets first, then the vocabulary; all valid
            return _finish(ids, present)
        ids = ids - 1  # Keras's single OOV index 0 -> -1
        if self.default is not None and self.default >= 0:
            ids = tf.where(ids < 0, tf.constant(self.default, tf.int64), ids)
        return _finish(ids, present & (ids >= 0))


class Identity(Categorical):
    """categorical_column_with_identity: the ids, out-of-range ones dropped (or defaulted)."""

    def __init__(self, column: Any) -> None:
        self.name, self.key = column.name, column.key
        self.num_buckets = column.number_buckets
        self.default = column.default_value

    def ids_weights(self, features):
        ids = tf.cast(_dense_2d(_feature(features, self.key, self.name), -1), tf.int64)
        in_range = (ids >= 0) & (ids < self.num_buckets)
        if self.default is not None:
            ids = tf.where(in_range, ids, tf.constant(self.default, tf.int64))
            return _finish(ids, ids >= 0)
        return _finish(ids, in_range)


class Hashed(Categorical):
    """categorical_column_with_hash_bucket -> Hashing (the same FarmHash64 buckets as tf's)."""

    def __init__(self, column: Any) -> None:
        self.name, self.key = column.name, column.key
        self.num_buckets = column.hash_bucket_size
        self.is_string = column.dtype == tf.string
        self._lazy("hashing", lambda: keras.layers.Hashing(num_bins=self.num_buckets))

    def ids_weights(self, features):
        values = _dense_2d(_feature(features, self.key, self.name),
                           "" if self.is_string else -1)
        return _finish(self.hashing(values), tf.logical_not(_missing(values)))


class Bucketized(Categorical):
    """bucketized_column -> Discretization; dimension i of the source uses its own buckets."""

    def __init__(self, column: Any) -> None:
        self.name = column.name
        self.source = Numeric(column.source_column)
        self.per_dimension = len(column.boundaries) + 1
        self.num_buckets = self.source.dimension * self.per_dimension
        boundaries = list(column.boundaries)
        self._lazy("discretization", lambda: keras.layers.Discretization(
            bin_boundaries=boundaries, output_mode="int"))

    def ids_weights(self, features):
        values = self.source.dense(features)
        ids = tf.cast(self.discretization(values), tf.int64)
        ids += tf.range(self.source.dimension, dtype=tf.int64) * self.per_dimension
        return _finish(ids, tf.ones_like(ids, tf.bool))

    def raw(self, features):
        return tf.cast(self.discretization(self.source.dense(features)), tf.int64)

    # A bucketized column is also a dense column (one-hot) in tf.feature_column.
    def dense(self, features):
        ids, weights = self.ids_weights(features)
        return _encode(ids, weights, self.num_buckets)


class Weighted(Categorical):
    """weighted_categorical_column: the wrapped ids, weighted by the weight feature."""

    def __init__(self, column: Any, inner: Categorical) -> None:
        self.name = column.name
        self.inner = inner
        self.weight_key = column.weight_feature_key
        self.num_buckets = inner.num_buckets

    def ids_weights(self, features):
        ids, weights = self.inner.ids_weights(features)
        extra = tf.cast(_dense_2d(_feature(features, self.weight_key, self.name), 0.0),
                        tf.float32)
        return ids, weights * extra


class Crossed(Categorical):
    """crossed_column -> HashedCrossing (tf.sparse.cross_hashed, as tf.feature_column's)."""

    def __init__(self, column: Any, sources: list[Any]) -> None:
        self.name = column.name
        self.num_buckets = column.hash_bucket_size
        if column.hash_key is not None:
            raise _column_error(column, "a custom hash_key has no Keras HashedCrossing "
                                "equivalent; leave hash_key unset")
        self.sources = sources  # str keys or Categorical
        self._lazy("crossing", lambda: keras.layers.HashedCrossing(num_bins=self.num_buckets))

    def ids_weights(self, features):
        parts, present = [], None
        for source in self.sources:
            if isinstance(source, str):
                value = _dense_2d(_feature(features, source, self.name), "")
                valid = tf.logical_not(_missing(value))
            else:
                value = source.raw(features)
                _, weights = source.ids_weights(features)
                valid = weights > 0
            if value.shape[-1] is not None and value.shape[-1] != 1:
                raise ValueError(
                    f"crossed_column {self.name!r}: HashedCrossing crosses one value per "
                    f"example, but {getattr(source, 'name', source)!r} has shape "
                    f"{value.shape}. Cross single-valued features."
                )
            if value.dtype != tf.string:
                value = tf.cast(value, tf.int64)
            # Parsed (sparse) features have an unknown width; one value is checked at run time.
            parts.append(tf.ensure_shape(value, [None, 1]))
            present = valid if present is None else present & valid
        return _finish(self.crossing(tuple(parts)), present)


def _encode(ids: tf.Tensor, weights: tf.Tensor, num_buckets: int) -> tf.Tensor:
    """Count encoding of weighted ids (multi-hot for unit weights), as indicator_column's."""
    hot = tf.one_hot(ids, num_buckets) * weights[..., tf.newaxis]
    return tf.reduce_sum(hot, axis=1)


class Indicator(_Lazy):
    """indicator_column -> CategoryEncoding(output_mode="count") over the weighted ids."""

    is_dense = True

    def __init__(self, column: Any, inner: Categorical) -> None:
        self.name = column.name
        self.inner = inner
        self.dimension = inner.num_buckets
        self._lazy("encoding", lambda: keras.layers.CategoryEncoding(
            num_tokens=inner.num_buckets, output_mode="count"))

    def dense(self, features):
        ids, weights = self.inner.ids_weights(features)
        return tf.cast(self.encoding(ids, count_weights=weights), tf.float32)


class Embedding:
    """embedding_column / shared embeddings: a Keras `Embedding` combined over the ids.

    The `keras.layers.Embedding` itself is created inside `model_fn` (see `models.py`), so its
    variable is one of the Estimator's; `table` names it (shared columns share a table).
    """

    is_dense = True

    def __init__(self, column: Any, inner: Categorical, *, dimension: int, combiner: str,
                 initializer: Any, trainable: bool, table: str) -> None:
        self.name = column.name
        self.inner = inner
        self.dimension = dimension
        self.combiner = combiner
        self.initializer = initializer or keras.initializers.TruncatedNormal(
            stddev=1.0 / math.sqrt(dimension))  # tf.feature_column's default
        self.trainable = trainable
        self.table = table
        if combiner not in ("sum", "mean", "sqrtn"):
            raise _column_error(column, f"combiner={combiner!r}; use 'sum', 'mean' or 'sqrtn'")

    def combine(self, embeddings: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        weighted = tf.reduce_sum(embeddings * weights[..., tf.newaxis], axis=1)
        if self.combiner == "sum":
            return weighted
        norm = tf.reduce_sum(weights, axis=1, keepdims=True) if self.combiner == "mean" else (
            tf.sqrt(tf.reduce_sum(weights * weights, axis=1, keepdims=True)))
        return tf.math.divide_no_nan(weighted, norm)


class KerasLayer:
    """A Keras preprocessing layer (or any layer) applied to one feature, output dense."""

    is_dense = True

    def __init__(self, key: str, layer: Any, dimension: int) -> None:
        self.name = key
        self.key = key
        self.layer = layer
        self.dimension = dimension

    def dense(self, features):
        out = self.layer(_feature(features, self.key, self.name))
        return tf.reshape(tf.cast(out, tf.float32), [-1, self.dimension])


class FeatureSpaceColumn:
    """A `keras.utils.FeatureSpace` (adapted, `output_mode="concat"`): its output, dense."""

    is_dense = True

    def __init__(self, space: Any) -> None:
        self.name = "feature_space"
        self.space = space
        self.dimension = int(space.get_encoded_features().shape[-1])

    def dense(self, features):
        return tf.cast(self.space(dict(features)), tf.float32)


def _read_vocabulary_file(column: Any) -> list[Any]:
    path = column.vocabulary_file
    if not tf.io.gfile.exists(path):
        raise _column_error(column, f"vocabulary_file {path!r} does not exist")
    with tf.io.gfile.GFile(path) as f:
        lines = [line.rstrip("\n") for line in f]
    if column.vocabulary_size is not None:
        lines = lines[: column.vocabulary_size]
    if column.dtype != tf.string:
        return [int(line) for line in lines]
    return lines


def _categorical(column: Any, shared: dict[str, Any]) -> Categorical:
    kind = _kind(column)
    if kind == "VocabularyListCategoricalColumn":
        return Vocabulary(column, list(column.vocabulary_list))
    if kind == "VocabularyFileCategoricalColumn":
        return Vocabulary(column, _read_vocabulary_file(column))
    if kind == "IdentityCategoricalColumn":
        return Identity(column)
    if kind == "HashedCategoricalColumn":
        return Hashed(column)
    if kind == "BucketizedColumn":
        return Bucketized(column)
    if kind == "WeightedCategoricalColumn":
        return Weighted(column, _categorical(column.categorical_column, shared))
    if kind == "CrossedColumn":
        sources = [k if isinstance(k, str) else _categorical(k, shared) for k in column.keys]
        return Crossed(column, sources)
    raise _not_translatable(column, "a categorical column")


def _not_translatable(column: Any, wanted: str) -> ValueError:
    why = _NO_EQUIVALENT.get(_kind(column))
    if why:
        return _column_error(column, f"it has no Keras equivalent in canned estimators ({why}); "
                             "write a model_fn with a Keras model")
    return _column_error(column, f"expected {wanted}")


def _dense(column: Any) -> Any:
    kind = _kind(column)
    if kind == "NumericColumn":
        return Numeric(column)
    if kind == "BucketizedColumn":
        return Bucketized(column)
    if kind == "IndicatorColumn":
        return Indicator(column, _categorical(column.categorical_column, {}))
    if kind == "EmbeddingColumn":
        if column.ckpt_to_load_from is not None:
            raise _column_error(column, "ckpt_to_load_from is not supported; use the "
                                "estimator's warm_start_from")
        if column.max_norm is not None:
            raise _column_error(column, "max_norm has no Keras Embedding equivalent; drop it")
        return Embedding(column, _categorical(column.categorical_column, {}),
                         dimension=column.dimension, combiner=column.combiner,
                         initializer=column.initializer, trainable=column.trainable,
                         table=column.name)
    if kind == "SharedEmbeddingColumn":
        shared = shared_embedding_config.read(column)
        if shared.ckpt_to_load_from is not None or column.max_norm is not None:
            raise _column_error(column, "ckpt_to_load_from and max_norm are not supported")
        return Embedding(column, _categorical(column.categorical_column, {}),
                         dimension=shared.dimension, combiner=column.combiner,
                         initializer=shared.initializer, trainable=shared.trainable,
                         table=shared.name)
    if kind in ("VocabularyListCategoricalColumn", "VocabularyFileCategoricalColumn",
                "IdentityCategoricalColumn", "HashedCategoricalColumn", "CrossedColumn",
                "WeightedCategoricalColumn"):
        raise _column_error(column, "a DNN needs dense columns; wrap it in "
                            "tf.feature_column.indicator_column(...) or embedding_column(...)")
    raise _not_translatable(column, "a dense column (numeric, bucketized, indicator, embedding)")


def _is_keras_layer(value: Any) -> bool:
    return isinstance(value, keras.layers.Layer)


def _keras_entries(columns: Mapping[str, Any]) -> list[Any]:
    out = []
    for key, layer in sorted(columns.items()):
        if not isinstance(key, str) or not (_is_keras_layer(layer) or callable(layer)):
            raise ValueError(
                "Invalid value for argument `feature_columns`. Received: a dict entry "
                f"{key!r}: {type(layer).__name__}. Pass {{feature key: Keras preprocessing "
                "layer}} (e.g. keras.layers.StringLookup(..., output_mode='one_hot'))."
            )
        out.append((key, layer))
    return out


def translate(columns: Any, *, dense_only: bool, argument: str = "feature_columns") -> list[Any]:
    """Reads feature columns (or Keras layers / a FeatureSpace) into translated columns.

    Args:
        columns: A list of `tf.feature_column` columns, a dict of feature key -> Keras
            preprocessing layer (its output, flattened, is used as dense input), or an
            adapted `keras.utils.FeatureSpace`.
        dense_only: Whether only dense columns are allowed (a DNN's input).
        argument: The argument name for errors.

    Returns:
        The translated columns, sorted by name (tf.feature_column's order).

    Raises:
        ValueError: An empty list, duplicate names, or a column with no Keras equivalent.
        TypeError: Something that is not a feature column.
    """
    if isinstance(columns, keras.utils.FeatureSpace):
        return [FeatureSpaceColumn(columns)]
    if isinstance(columns, Mapping):
        entries = []
        for key, layer in _keras_entries(columns):
            shape = layer.compute_output_shape((None, 1))
            if any(d is None for d in shape[1:]):
                raise ValueError(
                    f"Invalid value in argument `feature_columns`: the layer for {key!r} "
                    f"({type(layer).__name__}) has output shape {shape} for one value per "
                    "example; canned estimators need a fixed width (e.g. output_mode='one_hot')."
                )
            entries.append(KerasLayer(key, layer, int(np.prod(shape[1:]))))
        return entries
    if not isinstance(columns, (list, tuple, set)) or not columns:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Received: {argument}={columns!r}. Pass "
            "a non-empty list of tf.feature_column columns, a dict of Keras preprocessing "
            "layers, or a keras.utils.FeatureSpace."
        )
    out: list[Any] = []
    names = set()
    for column in columns:
        if not type(column).__module__.startswith("tensorflow.python.feature_column"):
            raise TypeError(
                f"Invalid value in argument `{argument}`. Received: {type(column).__name__} "
                f"{column!r}. Pass tf.feature_column columns (or a dict of Keras preprocessing "
                "layers, or a keras.utils.FeatureSpace)."
            )
        if column.name in names:
            raise ValueError(
                f"Invalid value for argument `{argument}`: the column {column.name!r} appears "
                "twice. Pass each column once."
            )
        names.add(column.name)
        if dense_only:
            out.append(_dense(column))
        else:
            try:
                out.append(_dense(column))
            except ValueError:
                out.append(_categorical(column, {}))
    return sorted(out, key=lambda c: c.name)


def resources(translated: list[Any]) -> list[Any]:
    """The Keras preprocessing objects (lookup tables inside) the columns use, for export.

    Call it after the model was built (at export): layers are made on first use.
    """
    found: list[Any] = []

    def visit(column: Any) -> None:
        if isinstance(column, _Lazy):
            found.extend(column.made_layers())
        for attr in ("layer", "space"):  # given by the user, made already
            if attr in vars(column):
                found.append(vars(column)[attr])
        for attr in ("inner", "source"):
            if hasattr(column, attr):
                visit(getattr(column, attr))
        for source in getattr(column, "sources", ()):
            if not isinstance(source, str):
                visit(source)

    for column in translated:
        visit(column)
    return found


def make_parse_example_spec(feature_columns: Any) -> dict[str, Any]:
    """`tf.feature_column.make_parse_example_spec`, for parsing `tf.Example`s for these columns.

    Args:
        feature_columns: `tf.feature_column` columns (any nesting tf accepts).

    Returns:
        Feature key -> `tf.io.FixedLenFeature` / `VarLenFeature`.
    """
    return tf.feature_column.make_parse_example_spec(list(feature_columns))
