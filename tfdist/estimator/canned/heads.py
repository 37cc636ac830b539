"""Heads: from logits to losses, predictions, eval metrics and export outputs, as tf.estimator's.

A head is what a canned estimator's `model_fn` hands its logits to. The prediction keys, metric
names and defaults (loss reduction "sum over batch size", AUC with 200 thresholds, ...) are
those of `tf.estimator.{Binary,MultiClass,MultiLabel,Regression}Head` (tensorflow-estimator
2.15, `head/*.py`); the metrics are Keras 3 metric objects updated in EVAL mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfdist import checks
from tfdist.estimator import export as export_lib
from tfdist.estimator.spec import EstimatorSpec
from tfdist.estimator.spec import ModeKeys

_REDUCTIONS = ("sum_over_batch_size", "sum")


class PredictionKeys:
    """The keys of canned estimators' prediction dicts (as `tf.estimator`'s)."""

    LOGITS = "logits"
    LOGISTIC = "logistic"
    PROBABILITIES = "probabilities"
    CLASS_IDS = "class_ids"
    CLASSES = "classes"
    ALL_CLASS_IDS = "all_class_ids"
    ALL_CLASSES = "all_classes"
    PREDICTIONS = "predictions"


class MetricKeys:
    """The keys of canned estimators' `evaluate` results (as `tf.estimator`'s)."""

    LOSS = "loss"
    LOSS_MEAN = "average_loss"
    ACCURACY = "accuracy"
    PRECISION = "precision"
    RECALL = "recall"
    ACCURACY_BASELINE = "accuracy_baseline"
    AUC = "auc"
    AUC_PR = "auc_precision_recall"
    LABEL_MEAN = "label/mean"
    PREDICTION_MEAN = "prediction/mean"
    ACCURACY_AT_THRESHOLD = "accuracy/positive_threshold_%g"
    PRECISION_AT_THRESHOLD = "precision/positive_threshold_%g"
    RECALL_AT_THRESHOLD = "recall/positive_threshold_%g"


class _AccuracyBaseline(keras.metrics.Metric):
    """max(label mean, 1 - label mean): the accuracy of always predicting one class."""

    def __init__(self, name: str = "accuracy_baseline") -> None:
        super().__init__(name=name)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, labels, sample_weight=None):
        labels = tf.cast(labels, tf.float32)
        weights = tf.ones_like(labels) if sample_weight is None else tf.broadcast_to(
            tf.cast(sample_weight, tf.float32), tf.shape(labels))
        self.total.assign_add(tf.reduce_sum(labels * weights))
        self.count.assign_add(tf.reduce_sum(weights))

    def result(self):
        mean = tf.math.divide_no_nan(self.total, self.count)
        return tf.maximum(mean, 1.0 - mean)


def _check_weight_column(weight_column: Any) -> str | None:
    if weight_column is None:
        return None
    key = getattr(weight_column, "key", weight_column)  # a numeric_column, or its key
    if not isinstance(key, str):
        raise TypeError(
            "Invalid value for argument `weight_column`. Received: "
            f"weight_column={weight_column!r}. Pass a feature key (str) or a "
            "tf.feature_column.numeric_column."
        )
    return key


def _check_reduction(loss_reduction: Any) -> str:
    value = getattr(loss_reduction, "value", loss_reduction)
    if value not in _REDUCTIONS:
        raise ValueError(
            f"Invalid value for argument `loss_reduction`. Received: loss_reduction="
            f"{loss_reduction!r}. Pass one of {list(_REDUCTIONS)}."
        )
    return value


def _check_vocabulary(label_vocabulary: Any, n_classes: int) -> tuple[str, ...] | None:
    if label_vocabulary is None:
        return None
    if not isinstance(label_vocabulary, (list, tuple)) or not all(
            isinstance(v, str) for v in label_vocabulary):
        raise TypeError(
            "Invalid value for argument `label_vocabulary`. Received: "
            f"label_vocabulary={label_vocabulary!r}. Pass a list of strings."
        )
    if len(label_vocabulary) != n_classes or len(set(label_vocabulary)) != n_classes:
        raise ValueError(
            f"Invalid value for argument `label_vocabulary`. Received: {len(label_vocabulary)} "
            f"entries ({list(label_vocabulary)}) for n_classes={n_classes}. Pass n_classes "
            "distinct strings."
        )
    return tuple(label_vocabulary)


def _as_2d(tensor: Any) -> tf.Tensor:
    if isinstance(tensor, tf.SparseTensor):
        tensor = tf.sparse.to_dense(tensor)
    tensor = tf.convert_to_tensor(tensor)
    if tensor.shape.rank == 1:
        tensor = tensor[:, tf.newaxis]
    return tensor


class Head:
    """Base of the heads. Subclasses define losses, predictions, metrics and export outputs.

    Args:
        weight_column: Feature key (or `numeric_column`) of per-example weights. Defaults to
            `None` (weight 1).
        loss_reduction: `"sum_over_batch_size"` (tf.estimator's default: weighted sum over
            the batch divided by the number of elements) or `"sum"`.
        name: Head name (prefixes metric keys, as in tf.estimator). Defaults to `None`.
    """

    logits_dimension: int = 1

    def __init__(self, weight_column: Any = None, loss_reduction: Any = "sum_over_batch_size",
                 name: str | None = None) -> None:
        self._weight_key = _check_weight_column(weight_column)
        self._reduction = _check_reduction(loss_reduction)
        self.name = name

    # --- subclass interface ------------------------------------------------------------------

    def _unweighted_loss(self, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _processed_labels(self, labels: Any, logits: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def predictions(self, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        """The prediction dict (tf.estimator's keys) for `logits`."""
        raise NotImplementedError

    def metrics(self) -> dict[str, keras.metrics.Metric]:
        """New metric objects, keyed as in `evaluate`'s results (call inside `model_fn`)."""
        raise NotImplementedError

    def update_metrics(self, metrics: dict[str, keras.metrics.Metric], features: Any,
                       logits: tf.Tensor, labels: Any) -> None:
        raise NotImplementedError

    def _export_outputs(self, predictions: dict[str, tf.Tensor]) -> dict[str, Any]:
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------

    def resources(self) -> list[Any]:
        """Trackable objects (lookup tables) this head's ops capture, saved with exports."""
        return []

    def _key(self, key: str) -> str:
        return f"{key}/{self.name}" if self.name else key

    def _weights(self, features: Any, like: tf.Tensor) -> tf.Tensor:
        if self._weight_key is None:
            return tf.ones_like(like[:, :1], tf.float32)
        if not isinstance(features, dict) or self._weight_key not in features:
            raise ValueError(
                f"weight_column={self._weight_key!r} is not among the features "
                f"({sorted(features) if isinstance(features, dict) else type(features).__name__})."
                " Return it from input_fn, or drop weight_column."
            )
        return tf.cast(_as_2d(features[self._weight_key]), tf.float32)

    def loss(self, labels: Any, logits: tf.Tensor, features: Any) -> tf.Tensor:
        """The training loss: the weighted per-example losses reduced over the batch."""
        labels = self._processed_labels(labels, logits)
        unweighted = self._unweighted_loss(labels, logits)
        weighted = unweighted * self._weights(features, logits)
        total = tf.reduce_sum(weighted)
        if self._reduction == "sum":
            return total
        return tf.math.divide_no_nan(total, tf.cast(tf.size(weighted), tf.float32))

    def create_estimator_spec(self, features: Any, mode: str, logits: tf.Tensor,
                              labels: Any = None, optimizer: Any = None,
                              regularization_losses: Sequence[tf.Tensor] = ()) -> EstimatorSpec:
        """The `EstimatorSpec` of `mode` for `logits` (what a canned `model_fn` returns).

        Args:
            features: The features (for `weight_column`).
            mode: A `ModeKeys` value.
            logits: `[batch, logits_dimension]` logits.
            labels: The labels (TRAIN and EVAL).
            optimizer: The optimizer (TRAIN): one, or a dict of variable prefix -> optimizer.
            regularization_losses: Added to the training loss. Defaults to none.

        Returns:
            An `EstimatorSpec`.
        """
        logits = tf.cast(logits, tf.float32)
        if logits.shape.rank == 1:
            logits = logits[:, tf.newaxis]
        if logits.shape[-1] is not None and logits.shape[-1] != self.logits_dimension:
            raise ValueError(
                f"{type(self).__name__} expects logits of last dimension "
                f"{self.logits_dimension}; received logits of shape {logits.shape}."
            )
        predictions = self.predictions(logits)
        if mode == ModeKeys.PREDICT:
            return EstimatorSpec(mode, predictions=predictions,
                                 export_outputs=self._export_outputs(predictions))
        loss = self.loss(labels, logits, features)
        if regularization_losses:
            loss = loss + tf.add_n([tf.cast(r, tf.float32) for r in regularization_losses])
        if mode == ModeKeys.EVAL:
            metrics = self.metrics()
            self.update_metrics(metrics, features, logits, labels)
            return EstimatorSpec(mode, predictions=predictions, loss=loss,
                                 eval_metric_ops=metrics)
        return EstimatorSpec(mode, predictions=predictions, loss=loss, optimizer=optimizer)


class _ClassHead(Head):
    """Shared by the classification heads: label ids from ints or a label vocabulary."""

    def __init__(self, n_classes: int, weight_column: Any, label_vocabulary: Any,
                 loss_reduction: Any, name: str | None) -> None:
        super().__init__(weight_column, loss_reduction, name)
        self.n_classes = n_classes
        self._vocabulary = _check_vocabulary(label_vocabulary, n_classes)
        self._table = None

    @property
    def _lookup(self) -> Any:
        """The label-vocabulary lookup, made on first use (see `feature_columns._Lazy`)."""
        if self._vocabulary is None:
            return None
        if self._table is None:
            with tf.init_scope():  # a table made once, outside any model_fn trace
                self._table = keras.layers.StringLookup(
                    vocabulary=list(self._vocabulary), num_oov_indices=1, mask_token=None)
        return self._table

    def resources(self) -> list[Any]:
        """Trackable objects captured by this head's ops (the label lookup, once made)."""
        return [self._table] if self._table is not None else []

    def _class_ids(self, labels: Any) -> tf.Tensor:
        """Labels as int64 class ids `[batch, ...]`, checked to be in range."""
        labels = _as_2d(labels)
        if self._vocabulary is not None:  # then there is a lookup
            if labels.dtype != tf.string:
                raise ValueError(
                    f"label_vocabulary is set, so labels must be strings; received labels of "
                    f"dtype {labels.dtype.name}. Return string labels, or drop label_vocabulary."
                )
            ids = tf.cast(self._lookup(labels), tf.int64) - 1
            check = tf.debugging.assert_non_negative(
                ids, message=f"Labels not in label_vocabulary {list(self._vocabulary)}")
        else:
            if labels.dtype == tf.string:
                raise ValueError(
                    "Labels are strings but label_vocabulary is not set. Pass "
                    "label_vocabulary=[...] (the n_classes label strings) to the estimator."
                )
            ids = tf.cast(labels, tf.int64)
            check = tf.debugging.assert_non_negative(ids, message="Labels must be >= 0")
        with tf.control_dependencies([check]):
            check = tf.debugging.assert_less(
                ids, tf.constant(self.n_classes, tf.int64),
                message=f"Labels must be < n_classes={self.n_classes}")
        with tf.control_dependencies([check]):
            return tf.identity(ids)

    def _class_strings(self, ids: tf.Tensor) -> tf.Tensor:
        if self._vocabulary is None:
            return tf.strings.as_string(ids)
        return tf.gather(tf.constant(self._vocabulary), ids)

    def _all_classes(self, batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        ids = tf.tile(tf.range(self.n_classes, dtype=tf.int64)[tf.newaxis], [batch, 1])
        return ids, self._class_strings(ids)


class BinaryClassHead(_ClassHead):
    """Logistic regression head: sigmoid cross-entropy on one logit.

    Args:
        weight_column: Feature key of example weights. Defaults to `None`.
        thresholds: Extra probability thresholds for accuracy/precision/recall metrics
            (`accuracy/positive_threshold_0.7`, ...). Defaults to none.
        label_vocabulary: The two label strings (negative first). Defaults to `None` (labels
            are 0/1).
        loss_reduction: `"sum_over_batch_size"` or `"sum"`. Defaults to
            `"sum_over_batch_size"`.
        loss_fn: Not supported (error).
        name: Head name. Defaults to `None`.

    Raises:
        ValueError: Bad thresholds, vocabulary or `loss_fn`.

    Example:

    ```python
    head = tfdist.estimator.BinaryClassHead()
    estimator = tfdist.estimator.DNNEstimator(head=head, hidden_units=[8], feature_columns=cols)
    ```
    """

    logits_dimension = 1

    def __init__(self, weight_column: Any = None, thresholds: Sequence[float] | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: Any = "sum_over_batch_size", loss_fn: Callable | None = None,
                 name: str | None = None) -> None:
        _no_loss_fn(loss_fn, "BinaryClassHead")
        super().__init__(2, weight_column, label_vocabulary, loss_reduction, name)
        self._thresholds = tuple(thresholds or ())
        for t in self._thresholds:
            if not 0 < t < 1:
                raise ValueError(
                    f"Invalid value for argument `thresholds`. Received: thresholds="
                    f"{list(self._thresholds)}. Each must be in (0, 1)."
                )

    def _processed_labels(self, labels, logits):
        return tf.cast(self._class_ids(labels), tf.float32)

    def _unweighted_loss(self, labels, logits):
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)

    def predictions(self, logits):
        logistic = tf.sigmoid(logits)
        probabilities = tf.concat([1.0 - logistic, logistic], axis=-1)
        class_ids = tf.argmax(probabilities, axis=-1)[:, tf.newaxis]
        all_ids, all_classes = self._all_classes(tf.shape(logits)[0])
        return {
            PredictionKeys.LOGITS: logits,
            PredictionKeys.LOGISTIC: logistic,
            PredictionKeys.PROBABILITIES: probabilities,
            PredictionKeys.CLASS_IDS: class_ids,
            PredictionKeys.CLASSES: self._class_strings(class_ids),
            PredictionKeys.ALL_CLASS_IDS: all_ids,
            PredictionKeys.ALL_CLASSES: all_classes,
        }

    def metrics(self):
        k = MetricKeys
        metrics = {
            k.LOSS_MEAN: keras.metrics.Mean(name="average_loss"),
            k.ACCURACY: keras.metrics.Accuracy(name="accuracy"),
            k.PRECISION: keras.metrics.Precision(name="precision"),
            k.RECALL: keras.metrics.Recall(name="recall"),
            k.PREDICTION_MEAN: keras.metrics.Mean(name="prediction_mean"),
            k.LABEL_MEAN: keras.metrics.Mean(name="label_mean"),
            k.ACCURACY_BASELINE: _AccuracyBaseline(),
            **_curve_and_threshold_metrics(self._thresholds),
        }
        return {self._key(key): m for key, m in metrics.items()}

    def update_metrics(self, metrics, features, logits, labels):
        k = MetricKeys
        labels = self._processed_labels(labels, logits)
        weights = self._weights(features, logits)
        preds = self.predictions(logits)
        class_ids = tf.cast(preds[PredictionKeys.CLASS_IDS], tf.float32)
        logistic = preds[PredictionKeys.LOGISTIC]
        m = {key: metrics[self._key(key)] for key in (
            k.LOSS_MEAN, k.ACCURACY, k.PRECISION, k.RECALL, k.PREDICTION_MEAN, k.LABEL_MEAN,
            k.ACCURACY_BASELINE, k.AUC, k.AUC_PR)}
        m[k.LOSS_MEAN].update_state(self._unweighted_loss(labels, logits), sample_weight=weights)
        m[k.ACCURACY].update_state(labels, class_ids, sample_weight=weights)
        m[k.PRECISION].update_state(labels, class_ids, sample_weight=weights)
        m[k.RECALL].update_state(labels, class_ids, sample_weight=weights)
        m[k.PREDICTION_MEAN].update_state(logistic, sample_weight=weights)
        m[k.LABEL_MEAN].update_state(labels, sample_weight=weights)
        m[k.ACCURACY_BASELINE].update_state(labels, sample_weight=weights)
        m[k.AUC].update_state(labels, logistic, sample_weight=weights)
        m[k.AUC_PR].update_state(labels, logistic, sample_weight=weights)
        for t in self._thresholds:
            for key in (k.ACCURACY_AT_THRESHOLD, k.PRECISION_AT_THRESHOLD, k.RECALL_AT_THRESHOLD):
                metrics[self._key(key % t)].update_state(labels, logistic, sample_weight=weights)

    def _export_outputs(self, predictions):
        classification = export_lib.ClassificationOutput(
            scores=predictions[PredictionKeys.PROBABILITIES],
            classes=predictions[PredictionKeys.ALL_CLASSES])
        return {
            export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classification,
            "classification": classification,
            "regression": export_lib.RegressionOutput(predictions[PredictionKeys.LOGISTIC]),
            "predict": export_lib.PredictOutput(predictions),
        }


class MultiClassHead(_ClassHead):
    """Softmax cross-entropy head over `n_classes` logits.

    Args:
        n_classes: Number of classes, > 2 (use `BinaryClassHead` for 2).
        weight_column: Feature key of example weights. Defaults to `None`.
        label_vocabulary: The `n_classes` label strings. Defaults to `None` (labels are ids).
        loss_reduction: `"sum_over_batch_size"` or `"sum"`.
        loss_fn: Not supported (error).
        name: Head name. Defaults to `None`.

    Raises:
        ValueError: `n_classes` < 3, bad vocabulary or `loss_fn`.
    """

    def __init__(self, n_classes: int, weight_column: Any = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: Any = "sum_over_batch_size", loss_fn: Callable | None = None,
                 name: str | None = None) -> None:
        _no_loss_fn(loss_fn, "MultiClassHead")
        checks.integer("n_classes", n_classes, minimum=3, owner="MultiClassHead",
                       hint="use BinaryClassHead for 2 classes")
        super().__init__(n_classes, weight_column, label_vocabulary, loss_reduction, name)
        self.logits_dimension = n_classes

    def _processed_labels(self, labels, logits):
        return self._class_ids(labels)

    def _unweighted_loss(self, labels, logits):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels[:, 0], logits=logits)[:, tf.newaxis]

    def predictions(self, logits):
        probabilities = tf.nn.softmax(logits)
        class_ids = tf.argmax(logits, axis=-1)[:, tf.newaxis]
        all_ids, all_classes = self._all_classes(tf.shape(logits)[0])
        return {
            PredictionKeys.LOGITS: logits,
            PredictionKeys.PROBABILITIES: probabilities,
            PredictionKeys.CLASS_IDS: class_ids,
            PredictionKeys.CLASSES: self._class_strings(class_ids),
            PredictionKeys.ALL_CLASS_IDS: all_ids,
            PredictionKeys.ALL_CLASSES: all_classes,
        }

    def metrics(self):
        return {
            self._key(MetricKeys.LOSS_MEAN): keras.metrics.Mean(name="average_loss"),
            self._key(MetricKeys.ACCURACY): keras.metrics.Accuracy(name="accuracy"),
        }

    def update_metrics(self, metrics, features, logits, labels):
        labels = self._processed_labels(labels, logits)
        weights = self._weights(features, logits)
        class_ids = tf.argmax(logits, axis=-1)[:, tf.newaxis]
        metrics[self._key(MetricKeys.LOSS_MEAN)].update_state(
            self._unweighted_loss(labels, logits), sample_weight=weights)
        metrics[self._key(MetricKeys.ACCURACY)].update_state(
            labels, class_ids, sample_weight=weights)

    def _export_outputs(self, predictions):
        classification = export_lib.ClassificationOutput(
            scores=predictions[PredictionKeys.PROBABILITIES],
            classes=predictions[PredictionKeys.ALL_CLASSES])
        return {
            export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classification,
            "classification": classification,
            "predict": export_lib.PredictOutput(predictions),
        }


class MultiLabelHead(_ClassHead):
    """Sigmoid cross-entropy per class: each example may have several labels.

    Labels are multi-hot `[batch, n_classes]` (0/1), or, with `label_vocabulary`, a
    `SparseTensor`/dense tensor of label strings (padded with "").

    Args:
        n_classes: Number of classes, > 1.
        weight_column: Feature key of example weights. Defaults to `None`.
        thresholds: Extra probability thresholds for accuracy/precision/recall. Defaults to none.
        label_vocabulary: The `n_classes` label strings. Defaults to `None`.
        loss_reduction: `"sum_over_batch_size"` or `"sum"`.
        loss_fn: Not supported (error).
        classes_for_class_based_metrics: Not supported (error).
        name: Head name. Defaults to `None`.
    """

    def __init__(self, n_classes: int, weight_column: Any = None,
                 thresholds: Sequence[float] | None = None,
                 label_vocabulary: Sequence[str] | None = None,
                 loss_reduction: Any = "sum_over_batch_size", loss_fn: Callable | None = None,
                 classes_for_class_based_metrics: Any = None, name: str | None = None) -> None:
        _no_loss_fn(loss_fn, "MultiLabelHead")
        if classes_for_class_based_metrics:
            raise ValueError(
                "MultiLabelHead(classes_for_class_based_metrics=...) is not supported. Compute "
                "per-class metrics from predict()'s probabilities instead."
            )
        checks.integer("n_classes", n_classes, minimum=2, owner="MultiLabelHead")
        super().__init__(n_classes, weight_column, label_vocabulary, loss_reduction, name)
        self.logits_dimension = n_classes
        self._thresholds = tuple(thresholds or ())

    def _processed_labels(self, labels, logits):
        if self._lookup is not None:
            labels = _as_2d(labels if not isinstance(labels, tf.SparseTensor)
                            else tf.sparse.to_dense(labels, default_value=""))
            ids = tf.cast(self._lookup(labels), tf.int64) - 1  # "" and unknown -> -1
            hot = tf.one_hot(tf.where(ids < 0, self.n_classes, ids), self.n_classes + 1)
            return tf.reduce_max(hot, axis=1)[:, : self.n_classes]
        labels = tf.cast(_as_2d(labels), tf.float32)
        if labels.shape[-1] is not None and labels.shape[-1] != self.n_classes:
            raise ValueError(
                f"MultiLabelHead(n_classes={self.n_classes}) expects multi-hot labels of shape "
                f"[batch, {self.n_classes}]; received labels of shape {labels.shape}."
            )
        return labels

    def _unweighted_loss(self, labels, logits):
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_mean(losses, axis=-1, keepdims=True)

    def predictions(self, logits):
        all_ids, all_classes = self._all_classes(tf.shape(logits)[0])
        return {
            PredictionKeys.LOGITS: logits,
            PredictionKeys.PROBABILITIES: tf.sigmoid(logits),
            PredictionKeys.ALL_CLASS_IDS: all_ids,
            PredictionKeys.ALL_CLASSES: all_classes,
        }

    def metrics(self):
        k = MetricKeys
        metrics = {
            k.LOSS_MEAN: keras.metrics.Mean(name="average_loss"),
            **_curve_and_threshold_metrics(self._thresholds),
        }
        return {self._key(key): m for key, m in metrics.items()}

    def update_metrics(self, metrics, features, logits, labels):
        k = MetricKeys
        labels = self._processed_labels(labels, logits)
        weights = self._weights(features, logits)
        probabilities = tf.sigmoid(logits)
        per_class = tf.broadcast_to(weights, tf.shape(probabilities))
        metrics[self._key(k.LOSS_MEAN)].update_state(
            self._unweighted_loss(labels, logits), sample_weight=weights)
        for key in (k.AUC, k.AUC_PR):
            metrics[self._key(key)].update_state(labels, probabilities, sample_weight=per_class)
        for t in self._thresholds:
            for key in (k.ACCURACY_AT_THRESHOLD, k.PRECISION_AT_THRESHOLD, k.RECALL_AT_THRESHOLD):
                metrics[self._key(key % t)].update_state(
                    labels, probabilities, sample_weight=per_class)

    def _export_outputs(self, predictions):
        classification = export_lib.ClassificationOutput(
            scores=predictions[PredictionKeys.PROBABILITIES],
            classes=predictions[PredictionKeys.ALL_CLASSES])
        return {
            export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY: classification,
            "classification": classification,
            "predict": export_lib.PredictOutput(predictions),
        }


class RegressionHead(Head):
    """Mean squared error head.

    Args:
        label_dimension: Number of regression targets per example. Defaults to 1.
        weight_column: Feature key of example weights. Defaults to `None`.
        loss_reduction: `"sum_over_batch_size"` (mean over all label elements) or `"sum"`.
        loss_fn: Not supported (error).
        inverse_link_fn: Maps logits to predictions (e.g. `tf.exp`). Defaults to identity.
        name: Head name. Defaults to `None`.

    Raises:
        ValueError: `label_dimension` < 1, or `loss_fn`.
    """

    def __init__(self, label_dimension: int = 1, weight_column: Any = None,
                 loss_reduction: Any = "sum_over_batch_size", loss_fn: Callable | None = None,
                 inverse_link_fn: Callable | None = None, name: str | None = None) -> None:
        _no_loss_fn(loss_fn, "RegressionHead")
        checks.positive_int("label_dimension", label_dimension)
        super().__init__(weight_column, loss_reduction, name)
        self.logits_dimension = label_dimension
        self._inverse_link_fn = inverse_link_fn

    def _processed_labels(self, labels, logits):
        labels = tf.cast(_as_2d(labels), tf.float32)
        if labels.shape[-1] is not None and labels.shape[-1] != self.logits_dimension:
            raise ValueError(
                f"RegressionHead(label_dimension={self.logits_dimension}) expects labels of "
                f"shape [batch, {self.logits_dimension}]; received {labels.shape}."
            )
        return labels

    def _unweighted_loss(self, labels, logits):
        return tf.math.squared_difference(self._values(logits), labels)

    def _values(self, logits):
        return self._inverse_link_fn(logits) if self._inverse_link_fn else logits

    def predictions(self, logits):
        out = {PredictionKeys.PREDICTIONS: self._values(logits)}
        if self._inverse_link_fn:
            out[PredictionKeys.LOGITS] = logits
        return out

    def metrics(self):
        return {
            self._key(MetricKeys.LOSS_MEAN): keras.metrics.Mean(name="average_loss"),
            self._key(MetricKeys.PREDICTION_MEAN): keras.metrics.Mean(name="prediction_mean"),
            self._key(MetricKeys.LABEL_MEAN): keras.metrics.Mean(name="label_mean"),
        }

    def update_metrics(self, metrics, features, logits, labels):
        labels = self._processed_labels(labels, logits)
        weights = tf.broadcast_to(self._weights(features, logits), tf.shape(logits))
        metrics[self._key(MetricKeys.LOSS_MEAN)].update_state(
            self._unweighted_loss(labels, logits), sample_weight=weights)
        metrics[self._key(MetricKeys.PREDICTION_MEAN)].update_state(
            self._values(logits), sample_weight=weights)
        metrics[self._key(MetricKeys.LABEL_MEAN)].update_state(labels, sample_weight=weights)

    def _export_outputs(self, predictions):
        regression = export_lib.RegressionOutput(predictions[PredictionKeys.PREDICTIONS])
        return {
            export_lib.DEFAULT_SERVING_SIGNATURE_DEF_KEY: regression,
            "regression": regression,
            "predict": export_lib.PredictOutput(predictions),
        }


def _no_loss_fn(loss_fn: Any, owner: str) -> None:
    if loss_fn is not None:
        raise ValueError(
            f"{owner}(loss_fn=...) is not supported. Write a model_fn for a custom loss, or "
            "use the head's default loss."
        )


def classification_head(n_classes: int, weight_column: Any, label_vocabulary: Any,
                        loss_reduction: Any) -> Head:
    """`BinaryClassHead` for 2 classes, `MultiClassHead` above (tf.estimator's choice).

    Raises:
        ValueError: `n_classes` < 2.
    """
    checks.integer("n_classes", n_classes, minimum=2)
    if n_classes == 2:
        return BinaryClassHead(weight_column=weight_column, label_vocabulary=label_vocabulary,
                               loss_reduction=loss_reduction)
    return MultiClassHead(n_classes, weight_column=weight_column,
                          label_vocabulary=label_vocabulary, loss_reduction=loss_reduction)


def _curve_and_threshold_metrics(thresholds: tuple[float, ...]) -> dict[str, keras.metrics.Metric]:
    """AUC (ROC and PR) and accuracy/precision/recall at each threshold, tf.estimator's keys."""
    k = MetricKeys
    metrics: dict[str, keras.metrics.Metric] = {
        k.AUC: keras.metrics.AUC(num_thresholds=200, name="auc"),
        k.AUC_PR: keras.metrics.AUC(num_thresholds=200, curve="PR", name="auc_pr"),
    }
    for i, t in enumerate(thresholds):
        metrics[k.ACCURACY_AT_THRESHOLD % t] = keras.metrics.BinaryAccuracy(
            threshold=t, name=f"accuracy_at_{i}")
        metrics[k.PRECISION_AT_THRESHOLD % t] = keras.metrics.Precision(
            thresholds=t, name=f"precision_at_{i}")
        metrics[k.RECALL_AT_THRESHOLD % t] = keras.metrics.Recall(
            thresholds=t, name=f"recall_at_{i}")
    return metrics
