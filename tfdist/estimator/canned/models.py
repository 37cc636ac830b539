"""The Keras 3 models inside canned estimators: the DNN tower and the linear model.

They are created inside the generated `model_fn`, so their variables are the Estimator's
(created once, checkpointed by path: "dnn/hiddenlayer_0/kernel", "linear/age/weights", ...).
The preprocessing of the translated feature columns (lookup tables) is created once outside.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class DenseInput(keras.layers.Layer):
    """The DNN's input: the dense columns' outputs concatenated (embedding tables inside)."""

    def __init__(self, columns: list[Any], name: str = "input_from_feature_columns") -> None:
        super().__init__(name=name)
        self.columns = columns
        self.tables: dict[str, keras.layers.Embedding] = {}
        for column in columns:
            if hasattr(column, "table") and column.table not in self.tables:
                self.tables[column.table] = keras.layers.Embedding(
                    column.inner.num_buckets, column.dimension,
                    embeddings_initializer=column.initializer, trainable=column.trainable,
                    name=_safe(column.table))

    def build(self, input_shape: Any) -> None:
        # Sublayers build on first call, inside this layer's name scope (so their paths are
        # "<name>/<sublayer>/kernel"); Keras's default build would trace `call` symbolically.
        self.built = True

    def call(self, features: Any) -> tf.Tensor:
        outputs = []
        for column in self.columns:
            if hasattr(column, "table"):
                ids, weights = column.inner.ids_weights(features)
                embeddings = self.tables[column.table](ids)
                outputs.append(column.combine(tf.cast(embeddings, tf.float32), weights))
            else:
                outputs.append(column.dense(features))
        return tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]


def _safe(name: str) -> str:
    return name.replace("/", "_")


class DNN(keras.layers.Layer):
    """Hidden layers (Dense with activation, then dropout, then batch norm) and a logits layer.

    The layer order, `glorot_uniform` kernels and batch-norm momentum 0.999 follow
    tf.estimator's `_DNNModelV2`.
    """

    def __init__(self, units: int, hidden_units: list[int], columns: list[Any],
                 activation_fn: Any, dropout: float | None, batch_norm: bool,
                 name: str = "dnn") -> None:
        super().__init__(name=name)
        self.inputs_layer = DenseInput(columns)
        self.hidden = []
        for i, n in enumerate(hidden_units):
            block = [keras.layers.Dense(n, activation=activation_fn,
                                        kernel_initializer="glorot_uniform",
                                        name=f"hiddenlayer_{i}")]
            if dropout is not None:
                block.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
            if batch_norm:
                block.append(keras.layers.BatchNormalization(momentum=0.999,
                                                             name=f"batchnorm_{i}"))
            self.hidden.append(block)
        self.logits_layer = keras.layers.Dense(units, kernel_initializer="glorot_uniform",
                                               name="logits")

    def build(self, input_shape: Any) -> None:
        # Sublayers build on first call, inside this layer's name scope (so their paths are
        # "<name>/<sublayer>/kernel"); Keras's default build would trace `call` symbolically.
        self.built = True

    def call(self, features: Any, training: bool = False) -> tf.Tensor:
        net = self.inputs_layer(features)
        for block in self.hidden:
            for layer in block:
                if isinstance(layer, (keras.layers.Dropout, keras.layers.BatchNormalization)):
                    net = layer(net, training=training)
                else:
                    net = layer(net)
        return self.logits_layer(net)


class Linear(keras.layers.Layer):
    """A linear model: one weight row per bucket of each categorical column, weights for dense
    columns, and a bias (all zeros at start, as tf.estimator's `LinearModel`).

    Args:
        units: Logits dimension.
        columns: Translated columns (categorical or dense; embeddings are not allowed).
        sparse_combiner: How multivalent categorical weights combine: "sum" (default),
            "mean" or "sqrtn".
    """

    def __init__(self, units: int, columns: list[Any], sparse_combiner: str = "sum",
                 name: str = "linear") -> None:
        super().__init__(name=name)
        self.units = units
        self.columns = columns
        self.sparse_combiner = sparse_combiner
        self.column_weights = {}
        for column in columns:
            rows = column.dimension if column.is_dense else column.num_buckets
            self.column_weights[column.name] = self.add_weight(
                shape=(rows, units), initializer="zeros", name=_safe(column.name))
        self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias_weights")

    def build(self, input_shape: Any) -> None:
        # Sublayers build on first call, inside this layer's name scope (so their paths are
        # "<name>/<sublayer>/kernel"); Keras's default build would trace `call` symbolically.
        self.built = True

    def call(self, features: Any) -> tf.Tensor:
        total = None
        for column in self.columns:
            weights = self.column_weights[column.name]
            if column.is_dense:
                part = tf.matmul(column.dense(features), weights)
            else:
                ids, w = column.ids_weights(features)
                rows = tf.gather(weights, ids) * w[..., tf.newaxis]
                part = tf.reduce_sum(rows, axis=1)
                if self.sparse_combiner == "mean":
                    part = tf.math.divide_no_nan(part, tf.reduce_sum(w, axis=1, keepdims=True))
                elif self.sparse_combiner == "sqrtn":
                    part = tf.math.divide_no_nan(
                        part, tf.sqrt(tf.reduce_sum(w * w, axis=1, keepdims=True)))
            total = part if total is None else total + part
        return total + self.bias
