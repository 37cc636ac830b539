"""Premade estimators: `Estimator`s whose `model_fn` is generated from a head and columns.

Each class takes tf.estimator's constructor arguments (same names, order and defaults) and is
an ordinary `tfdist.estimator.Estimator`: strategies, multi-worker training, evaluator tasks,
hooks, exporters and `export_saved_model` work unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfdist.estimator.canned import feature_columns as fc_lib
from tfdist.estimator.canned import heads as heads_lib
from tfdist.estimator.canned import models
from tfdist.estimator.canned import optimizers as opt_lib
from tfdist.estimator.estimator import Estimator
from tfdist.estimator.run_config import RunConfig
from tfdist.estimator.spec import ModeKeys

# tf.estimator's default learning rates (canned/dnn.py, linear.py, dnn_linear_combined.py,
# baseline.py).
DNN_LEARNING_RATE = 0.05
LINEAR_LEARNING_RATE = 0.2
COMBINED_DNN_LEARNING_RATE = 0.001
COMBINED_LINEAR_LEARNING_RATE = 0.005
BASELINE_LEARNING_RATE = 0.3


def _linear_default_rate(num_columns: int, cap: float) -> float:
    return min(cap, 1.0 / math.sqrt(num_columns))


def _check_hidden_units(hidden_units: Any) -> list[int]:
    if (not isinstance(hidden_units, (list, tuple)) or not hidden_units or not all(
            isinstance(u, int) and not isinstance(u, bool) and u > 0 for u in hidden_units)):
        raise ValueError(
            f"Invalid value for argument `hidden_units`. Received: hidden_units="
            f"{hidden_units!r}. Pass a non-empty list of positive integers, e.g. [30, 10]."
        )
    return list(hidden_units)


def _check_dropout(dropout: Any) -> float | None:
    if dropout is None:
        return None
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise ValueError(
            f"Invalid value for argument `dropout`. Received: dropout={dropout!r}. Pass a "
            "probability in [0, 1) or None."
        )
    return float(dropout)


def _check_combiner(sparse_combiner: Any, argument: str) -> str:
    if sparse_combiner not in ("sum", "mean", "sqrtn"):
        raise ValueError(
            f"Invalid value for argument `{argument}`. Received: {argument}="
            f"{sparse_combiner!r}. Pass 'sum', 'mean' or 'sqrtn'."
        )
    return sparse_combiner


def _check_head(head: Any) -> heads_lib.Head:
    if not isinstance(head, heads_lib.Head):
        raise TypeError(
            f"Invalid value for argument `head`. Received: {type(head).__name__}. Pass a "
            "tfdist.estimator head (BinaryClassHead, MultiClassHead, MultiLabelHead, "
            "RegressionHead)."
        )
    return head


def _linear_columns(columns: Any) -> list[Any]:
    translated = fc_lib.translate(columns, dense_only=False)
    for column in translated:
        if isinstance(column, fc_lib.Embedding):
            raise ValueError(
                f"Invalid value in argument `feature_columns`. Received: embedding column "
                f"{column.name!r} in a linear model. Use the categorical column itself (or "
                "put the embedding in the DNN part)."
            )
    return translated


def _num_columns(columns: Any) -> int:
    return len(columns) if isinstance(columns, (list, tuple, set, dict)) else 1


class _Canned(Estimator):
    """An `Estimator` whose `model_fn` computes logits with Keras models and hands them to a head."""

    def __init__(self, head: heads_lib.Head, logit_fns: dict[str, Callable[..., Any]],
                 optimizers: dict[str, Callable[[], Any]], columns: list[Any],
                 model_dir: str | None, config: RunConfig | None, warm_start_from: Any) -> None:
        self._head = head
        self._columns = columns

        def model_fn(features, labels, mode):
            training = mode == ModeKeys.TRAIN
            logits = None
            for name in sorted(logit_fns):
                part = logit_fns[name](features, training)
                logits = part if logits is None else logits + part
            optimizer = None
            if training:
                made = {prefix: make() for prefix, make in optimizers.items()}
                optimizer = made[""] if list(made) == [""] else made
            return head.create_estimator_spec(features, mode, logits, labels, optimizer)

        super().__init__(model_fn=model_fn, model_dir=model_dir, config=config,
                         warm_start_from=warm_start_from)

    @property
    def head(self) -> heads_lib.Head:
        return self._head

    def _export_resources(self) -> list[Any]:
        return fc_lib.resources(self._columns) + list(self._head.resources())


def _dnn_part(head, hidden_units, feature_columns, activation_fn, dropout, batch_norm):
    hidden_units = _check_hidden_units(hidden_units)
    dropout = _check_dropout(dropout)
    columns = fc_lib.translate(feature_columns, dense_only=True)

    def logit_fn(features, training):
        model = models.DNN(head.logits_dimension, hidden_units, columns, activation_fn,
                           dropout, batch_norm)
        return model(features, training=training)

    return logit_fn, columns


def _linear_part(head, feature_columns, sparse_combiner):
    columns = _linear_columns(feature_columns)

    def logit_fn(features, training):
        return models.Linear(head.logits_dimension, columns, sparse_combiner)(features)

    return logit_fn, columns


class DNNEstimator(_Canned):
    """A feed-forward network with a given head (`tf.estimator.DNNEstimator`).

    Args:
        head: A head (`BinaryClassHead`, `MultiClassHead`, `MultiLabelHead`,
            `RegressionHead`).
        hidden_units: Units per hidden layer, e.g. `[30, 10]`.
        feature_columns: Dense `tf.feature_column` columns (numeric, bucketized, indicator,
            embedding), a dict of feature key -> Keras preprocessing layer, or an adapted
            `keras.utils.FeatureSpace`.
        model_dir: Checkpoint directory. Defaults to `config.model_dir` or a temporary one.
        optimizer: `'Adagrad'` (default, learning rate 0.05), `'Adam'`, `'Ftrl'`, `'RMSProp'`,
            `'SGD'`, a Keras optimizer, or a callable returning one.
        activation_fn: Hidden-layer activation. Defaults to `tf.nn.relu`.
        dropout: Drop probability in training. Defaults to `None`.
        config: A `RunConfig`. Defaults to `RunConfig()`.
        warm_start_from: A checkpoint/directory or `WarmStartSettings`. Defaults to `None`.
        batch_norm: Batch normalization after each hidden layer. Defaults to `False`.

    Raises:
        ValueError: Bad `hidden_units`, `dropout`, `optimizer` or columns.

    Example:

    ```python
    estimator = tfdist.estimator.DNNEstimator(
        head=tfdist.estimator.MultiLabelHead(n_classes=3), hidden_units=[16],
        feature_columns=[tf.feature_column.numeric_column("x", shape=[4])])
    ```
    """

    def __init__(self, head, hidden_units, feature_columns, model_dir=None, optimizer="Adagrad",
                 activation_fn=tf.nn.relu, dropout=None, config=None, warm_start_from=None,
                 batch_norm=False) -> None:
        head = _check_head(head)
        opt_lib.check(optimizer, "optimizer")
        logit_fn, columns = _dnn_part(head, hidden_units, feature_columns, activation_fn,
                                      dropout, batch_norm)
        super().__init__(head, {"dnn": logit_fn},
                         {"": lambda: opt_lib.get(optimizer, DNN_LEARNING_RATE)},
                         columns, model_dir, config, warm_start_from)


class DNNClassifier(DNNEstimator):
    """A feed-forward classifier (`tf.estimator.DNNClassifier`).

    Args:
        hidden_units: Units per hidden layer, e.g. `[30, 10]`.
        feature_columns: Dense feature columns (see `DNNEstimator`).
        model_dir: Checkpoint directory.
        n_classes: Number of classes, >= 2. Defaults to 2.
        weight_column: Feature key of example weights. Defaults to `None`.
        label_vocabulary: The label strings, if labels are strings. Defaults to `None`.
        optimizer: Defaults to `'Adagrad'` (learning rate 0.05).
        activation_fn: Defaults to `tf.nn.relu`.
        dropout: Defaults to `None`.
        config: A `RunConfig`.
        warm_start_from: Defaults to `None`.
        loss_reduction: `"sum_over_batch_size"` (default) or `"sum"`.
        batch_norm: Defaults to `False`.

    Example:

    ```python
    classifier = tfdist.estimator.DNNClassifier(
        feature_columns=[tf.feature_column.numeric_column(k) for k in keys],
        hidden_units=[30, 10], n_classes=3)
    classifier.train(input_fn=lambda: input_fn(train, train_y), steps=5000)
    ```
    """

    def __init__(self, hidden_units, feature_columns, model_dir=None, n_classes=2,
                 weight_column=None, label_vocabulary=None, optimizer="Adagrad",
                 activation_fn=tf.nn.relu, dropout=None, config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", batch_norm=False) -> None:
        head = heads_lib.classification_head(n_classes, weight_column, label_vocabulary,
                                             loss_reduction)
        super().__init__(head, hidden_units, feature_columns, model_dir, optimizer,
                         activation_fn, dropout, config, warm_start_from, batch_norm)


class DNNRegressor(DNNEstimator):
    """A feed-forward regressor (`tf.estimator.DNNRegressor`).

    Args:
        hidden_units: Units per hidden layer.
        feature_columns: Dense feature columns.
        model_dir: Checkpoint directory.
        label_dimension: Targets per example. Defaults to 1.
        weight_column: Feature key of example weights. Defaults to `None`.
        optimizer: Defaults to `'Adagrad'` (learning rate 0.05).
        activation_fn: Defaults to `tf.nn.relu`.
        dropout: Defaults to `None`.
        config: A `RunConfig`.
        warm_start_from: Defaults to `None`.
        loss_reduction: `"sum_over_batch_size"` (default) or `"sum"`.
        batch_norm: Defaults to `False`.
    """

    def __init__(self, hidden_units, feature_columns, model_dir=None, label_dimension=1,
                 weight_column=None, optimizer="Adagrad", activation_fn=tf.nn.relu,
                 dropout=None, config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", batch_norm=False) -> None:
        head = heads_lib.RegressionHead(label_dimension, weight_column, loss_reduction)
        super().__init__(head, hidden_units, feature_columns, model_dir, optimizer,
                         activation_fn, dropout, config, warm_start_from, batch_norm)


class LinearEstimator(_Canned):
    """A linear model with a given head (`tf.estimator.LinearEstimator`).

    Args:
        head: A head.
        feature_columns: Feature columns: categorical ones (vocabulary, identity, hash,
            bucketized, crossed, weighted) get one weight per bucket; dense ones a weight
            vector.
        model_dir: Checkpoint directory.
        optimizer: Defaults to `'Ftrl'`. A name gets learning rate 0.2; `None` means FTRL at
            min(0.2, 1/sqrt(number of columns)) (both as tf.estimator).
        config: A `RunConfig`.
        sparse_combiner: "sum" (default), "mean" or "sqrtn" for multivalent columns.
        warm_start_from: Defaults to `None`.

    Raises:
        ValueError: Bad columns, optimizer or combiner.
    """

    def __init__(self, head, feature_columns, model_dir=None, optimizer="Ftrl", config=None,
                 sparse_combiner="sum", warm_start_from=None) -> None:
        head = _check_head(head)
        if optimizer is None:
            # tf.estimator: no optimizer -> FTRL at min(0.2, 1/sqrt(#columns)); any name
            # (including the default 'Ftrl') -> learning rate 0.2.
            optimizer, rate = "Ftrl", _linear_default_rate(_num_columns(feature_columns),
                                                           LINEAR_LEARNING_RATE)
        else:
            rate = LINEAR_LEARNING_RATE
        opt_lib.check(optimizer, "optimizer")
        _check_combiner(sparse_combiner, "sparse_combiner")
        logit_fn, columns = _linear_part(head, feature_columns, sparse_combiner)
        super().__init__(head, {"linear": logit_fn},
                         {"": lambda: opt_lib.get(optimizer, rate)},
                         columns, model_dir, config, warm_start_from)


class LinearClassifier(LinearEstimator):
    """A linear classifier (`tf.estimator.LinearClassifier`): logistic/softmax regression.

    Args:
        feature_columns: Feature columns (see `LinearEstimator`).
        model_dir: Checkpoint directory.
        n_classes: Defaults to 2.
        weight_column: Defaults to `None`.
        label_vocabulary: Defaults to `None`.
        optimizer: Defaults to `'Ftrl'` (learning rate 0.2; `None`: min(0.2, 1/sqrt(#columns))).
        config: A `RunConfig`.
        warm_start_from: Defaults to `None`.
        loss_reduction: Defaults to `"sum_over_batch_size"`.
        sparse_combiner: Defaults to `"sum"`.
    """

    def __init__(self, feature_columns, model_dir=None, n_classes=2, weight_column=None,
                 label_vocabulary=None, optimizer="Ftrl", config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", sparse_combiner="sum") -> None:
        head = heads_lib.classification_head(n_classes, weight_column, label_vocabulary,
                                             loss_reduction)
        super().__init__(head, feature_columns, model_dir, optimizer, config, sparse_combiner,
                         warm_start_from)


class LinearRegressor(LinearEstimator):
    """A linear regressor (`tf.estimator.LinearRegressor`).

    Args:
        feature_columns: Feature columns (see `LinearEstimator`).
        model_dir: Checkpoint directory.
        label_dimension: Defaults to 1.
        weight_column: Defaults to `None`.
        optimizer: Defaults to `'Ftrl'`.
        config: A `RunConfig`.
        warm_start_from: Defaults to `None`.
        loss_reduction: Defaults to `"sum_over_batch_size"`.
        sparse_combiner: Defaults to `"sum"`.
    """

    def __init__(self, feature_columns, model_dir=None, label_dimension=1, weight_column=None,
                 optimizer="Ftrl", config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", sparse_combiner="sum") -> None:
        head = heads_lib.RegressionHead(label_dimension, weight_column, loss_reduction)
        super().__init__(head, feature_columns, model_dir, optimizer, config, sparse_combiner,
                         warm_start_from)


def _combined_parts(head, linear_feature_columns, linear_optimizer, dnn_feature_columns,
                    dnn_optimizer, dnn_hidden_units, dnn_activation_fn, dnn_dropout,
                    batch_norm, linear_sparse_combiner):
    if not linear_feature_columns and not dnn_feature_columns:
        raise ValueError(
            "Either linear_feature_columns or dnn_feature_columns must be given. Received "
            "neither."
        )
    opt_lib.check(linear_optimizer, "linear_optimizer")
    opt_lib.check(dnn_optimizer, "dnn_optimizer")
    _check_combiner(linear_sparse_combiner, "linear_sparse_combiner")
    logit_fns, optimizers, preprocessing = {}, {}, []
    if linear_feature_columns:
        fn, columns = _linear_part(head, linear_feature_columns, linear_sparse_combiner)
        rate = _linear_default_rate(_num_columns(linear_feature_columns),
                                    COMBINED_LINEAR_LEARNING_RATE)
        logit_fns["linear"] = fn
        optimizers["linear/"] = lambda: opt_lib.get(linear_optimizer, rate, "linear_optimizer",
                                                    name="linear_optimizer")
        preprocessing += columns
    if dnn_feature_columns:
        if dnn_hidden_units is None:
            raise ValueError(
                "dnn_feature_columns are given, so dnn_hidden_units must be too. Received: "
                "dnn_hidden_units=None."
            )
        fn, columns = _dnn_part(head, dnn_hidden_units, dnn_feature_columns, dnn_activation_fn,
                                dnn_dropout, batch_norm)
        logit_fns["dnn"] = fn
        optimizers["dnn/"] = lambda: opt_lib.get(dnn_optimizer, COMBINED_DNN_LEARNING_RATE,
                                                 "dnn_optimizer", name="dnn_optimizer")
        preprocessing += columns
    if len(optimizers) == 1:
        optimizers = {"": next(iter(optimizers.values()))}
    return logit_fns, optimizers, preprocessing


class DNNLinearCombinedEstimator(_Canned):
    """Wide (linear) and deep (DNN) parts summed into one head's logits.

    Args:
        head: A head.
        model_dir: Checkpoint directory.
        linear_feature_columns: Columns of the linear part. Defaults to none.
        linear_optimizer: Defaults to `'Ftrl'` (learning rate min(0.005, 1/sqrt(#columns))).
        dnn_feature_columns: Dense columns of the DNN part. Defaults to none.
        dnn_optimizer: Defaults to `'Adagrad'` (learning rate 0.001).
        dnn_hidden_units: Hidden units of the DNN part (required with DNN columns).
        dnn_activation_fn: Defaults to `tf.nn.relu`.
        dnn_dropout: Defaults to `None`.
        config: A `RunConfig`.
        batch_norm: Defaults to `False`.
        linear_sparse_combiner: Defaults to `"sum"`.
        warm_start_from: Defaults to `None`.
    """

    def __init__(self, head, model_dir=None, linear_feature_columns=None,
                 linear_optimizer="Ftrl", dnn_feature_columns=None, dnn_optimizer="Adagrad",
                 dnn_hidden_units=None, dnn_activation_fn=tf.nn.relu, dnn_dropout=None,
                 config=None, batch_norm=False, linear_sparse_combiner="sum",
                 warm_start_from=None) -> None:
        head = _check_head(head)
        logit_fns, optimizers, preprocessing = _combined_parts(
            head, linear_feature_columns, linear_optimizer, dnn_feature_columns, dnn_optimizer,
            dnn_hidden_units, dnn_activation_fn, dnn_dropout, batch_norm,
            linear_sparse_combiner)
        super().__init__(head, logit_fns, optimizers, preprocessing, model_dir, config,
                         warm_start_from)


class DNNLinearCombinedClassifier(DNNLinearCombinedEstimator):
    """`tf.estimator.DNNLinearCombinedClassifier`: wide-and-deep classification.

    Args: as `DNNLinearCombinedEstimator`, plus `n_classes` (default 2), `weight_column`,
    `label_vocabulary` and `loss_reduction`, in tf.estimator's order.
    """

    def __init__(self, model_dir=None, linear_feature_columns=None, linear_optimizer="Ftrl",
                 dnn_feature_columns=None, dnn_optimizer="Adagrad", dnn_hidden_units=None,
                 dnn_activation_fn=tf.nn.relu, dnn_dropout=None, n_classes=2,
                 weight_column=None, label_vocabulary=None, config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", batch_norm=False,
                 linear_sparse_combiner="sum") -> None:
        head = heads_lib.classification_head(n_classes, weight_column, label_vocabulary,
                                             loss_reduction)
        super().__init__(head, model_dir, linear_feature_columns, linear_optimizer,
                         dnn_feature_columns, dnn_optimizer, dnn_hidden_units,
                         dnn_activation_fn, dnn_dropout, config, batch_norm,
                         linear_sparse_combiner, warm_start_from)


class DNNLinearCombinedRegressor(DNNLinearCombinedEstimator):
    """`tf.estimator.DNNLinearCombinedRegressor`: wide-and-deep regression.

    Args: as `DNNLinearCombinedEstimator`, plus `label_dimension` (default 1),
    `weight_column` and `loss_reduction`, in tf.estimator's order.
    """

    def __init__(self, model_dir=None, linear_feature_columns=None, linear_optimizer="Ftrl",
                 dnn_feature_columns=None, dnn_optimizer="Adagrad", dnn_hidden_units=None,
                 dnn_activation_fn=tf.nn.relu, dnn_dropout=None, label_dimension=1,
                 weight_column=None, config=None, warm_start_from=None,
                 loss_reduction="sum_over_batch_size", batch_norm=False,
                 linear_sparse_combiner="sum") -> None:
        head = heads_lib.RegressionHead(label_dimension, weight_column, loss_reduction)
        super().__init__(head, model_dir, linear_feature_columns, linear_optimizer,
                         dnn_feature_columns, dnn_optimizer, dnn_hidden_units,
                         dnn_activation_fn, dnn_dropout, config, batch_norm,
                         linear_sparse_combiner, warm_start_from)


class _Bias(keras.layers.Layer):
    """The baseline's only variable: one bias per logit, broadcast over the batch."""

    def __init__(self, units: int, name: str = "baseline") -> None:
        super().__init__(name=name)
        self.bias = self.add_weight(shape=(units,), initializer="zeros", name="bias")

    def build(self, input_shape: Any) -> None:
        self.built = True

    def call(self, batch_like: tf.Tensor) -> tf.Tensor:
        return tf.zeros([tf.shape(batch_like)[0], 1]) + self.bias


def _batch_like(features: Any) -> tf.Tensor:
    for value in tf.nest.flatten(features, expand_composites=False):
        if isinstance(value, tf.SparseTensor):
            return tf.zeros([value.dense_shape[0], 1])
        value = tf.convert_to_tensor(value)
        if value.shape.rank:
            return value
    raise ValueError("Baseline estimators need at least one batched feature to size the batch.")


class BaselineEstimator(_Canned):
    """Predicts the (learned) label prior, ignoring features (`tf.estimator.BaselineEstimator`).

    Args:
        head: A head.
        model_dir: Checkpoint directory.
        optimizer: Defaults to `'Ftrl'` (learning rate 0.3).
        config: A `RunConfig`.
    """

    def __init__(self, head, model_dir=None, optimizer="Ftrl", config=None) -> None:
        head = _check_head(head)
        opt_lib.check(optimizer, "optimizer")

        def logit_fn(features, training):
            return _Bias(head.logits_dimension)(_batch_like(features))

        super().__init__(head, {"baseline": logit_fn},
                         {"": lambda: opt_lib.get(optimizer, BASELINE_LEARNING_RATE)}, [],
                         model_dir, config, None)


class BaselineClassifier(BaselineEstimator):
    """`tf.estimator.BaselineClassifier`: predicts the class distribution of the labels."""

    def __init__(self, model_dir=None, n_classes=2, weight_column=None, label_vocabulary=None,
                 optimizer="Ftrl", config=None, loss_reduction="sum_over_batch_size") -> None:
        head = heads_lib.classification_head(n_classes, weight_column, label_vocabulary,
                                             loss_reduction)
        super().__init__(head, model_dir, optimizer, config)


class BaselineRegressor(BaselineEstimator):
    """`tf.estimator.BaselineRegressor`: predicts the mean label."""

    def __init__(self, model_dir=None, label_dimension=1, weight_column=None, optimizer="Ftrl",
                 config=None, loss_reduction="sum_over_batch_size") -> None:
        head = heads_lib.RegressionHead(label_dimension, weight_column, loss_reduction)
        super().__init__(head, model_dir, optimizer, config)


_TFDF = (
    "{name} is not provided: tf.estimator's boosted trees have no TF2/Keras 3 successor in "
    "tfdist. Use TensorFlow Decision Forests (pip install tensorflow_decision_forests; "
    "tfdf.keras.GradientBoostedTreesModel), which trains gradient-boosted trees on the same "
    "features."
)


class BoostedTreesClassifier:
    """Not provided: raises, pointing to TensorFlow Decision Forests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_TFDF.format(name="BoostedTreesClassifier"))


class BoostedTreesRegressor:
    """Not provided: raises, pointing to TensorFlow Decision Forests."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(_TFDF.format(name="BoostedTreesRegressor"))
