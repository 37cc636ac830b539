"""What `model_fn` returns and `train_and_evaluate` takes: ModeKeys, EstimatorSpec, Train/EvalSpec.

The names, fields and argument order follow `tf.estimator`, so ported code keeps its keyword and
positional calls. One field is new: `EstimatorSpec.optimizer`, the TF2 replacement for `train_op`
(tfdist takes the gradients of `loss` and applies them with it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from tfdist import checks
from tfdist.estimator import exporters as exporters_lib

class ModeKeys:
    """The three modes `model_fn` is called in (same values as `tf.estimator.ModeKeys`)."""

    TRAIN = "train"
    EVAL = "eval"
    PREDICT = "infer"


MODES = (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.PREDICT)


def _as_tuple(value: Any, field: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise TypeError(
        f"Invalid value for argument `{field}`. Received: {type(value).__name__}. "
        "Pass a list of hooks (or None)."
    )


@dataclasses.dataclass(frozen=True)
class EstimatorSpec:
    """What `model_fn` returns: the ops of one mode.

    Args:
        mode: A `ModeKeys` value. Defaults to `None`: tfdist fills in the mode it called
            `model_fn` with (tf.estimator required it; the ported code may keep passing it).
        predictions: A tensor or a dict of tensors (required in PREDICT).
        loss: A scalar tensor: the mean loss over this replica's batch (required in TRAIN and
            EVAL). tfdist divides it by the number of replicas before differentiating, so the
            summed gradients are those of the global mean.
        train_op: Not supported (TF1 graph op). Return `optimizer` instead.
        eval_metric_ops: Dict of name -> `keras.metrics.Metric`, updated by `model_fn` (call
            `metric.update_state(...)` before returning). A metric whose `result()` is a dict
            contributes each of its entries instead (as in Keras). Defaults to none.
        export_outputs: Dict of signature name -> `tfdist.estimator.export.PredictOutput`
            (or `ClassificationOutput`, `RegressionOutput`). Defaults to a `serving_default`
            signature returning `predictions`.
        training_chief_hooks: Hooks run on the chief only during training.
        training_hooks: Hooks run on every worker during training. A `LoggingTensorHook` here
            may log tensors computed in `model_fn`.
        scaffold: Not supported (TF1 sessions).
        evaluation_hooks: Not supported; pass `hooks=` to `evaluate` instead.
        prediction_hooks: Not supported; pass `hooks=` to `predict` instead.
        optimizer: The Keras optimizer (or its name, e.g. `"adam"`) that applies the
            gradients of `loss` in TRAIN mode. Create it inside `model_fn` or pass one that has
            not been used yet. A dict of variable-path prefix -> optimizer trains each
            variable with the optimizer of its longest matching prefix (e.g.
            `{"dnn/": adagrad, "linear/": ftrl}`, as canned wide-and-deep models do); the
            optimizers need distinct names.

    Raises:
        ValueError: `train_op`, `scaffold`, `evaluation_hooks` or `prediction_hooks` was given,
            or `mode` is not a `ModeKeys` value.
        TypeError: `eval_metric_ops` is not a dict of Keras metrics.

    Example:

    ```python
    def model_fn(features, labels, mode):
        logits = keras.Sequential([keras.layers.Dense(10)])(features)
        if mode == ModeKeys.PREDICT:
            return EstimatorSpec(mode, predictions={"logits": logits})
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
        return EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.SGD(0.1))
    ```
    """

    mode: str | None = None
    predictions: Any = None
    loss: Any = None
    train_op: Any = None
    eval_metric_ops: Mapping[str, keras.metrics.Metric] | None = None
    export_outputs: Mapping[str, Any] | None = None
    training_chief_hooks: Sequence[Any] | None = None
    training_hooks: Sequence[Any] | None = None
    scaffold: Any = None
    evaluation_hooks: Sequence[Any] | None = None
    prediction_hooks: Sequence[Any] | None = None
    optimizer: keras.optimizers.Optimizer | str | Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(
                f"Invalid value for argument `mode`. Received: mode={self.mode!r}. "
                "Pass a tfdist.estimator.ModeKeys value (TRAIN, EVAL or PREDICT)."
            )
        if self.train_op is not None:
            raise ValueError(
                "EstimatorSpec(train_op=...) is not supported: TF2 has no train ops. Return the "
                "optimizer instead, e.g. EstimatorSpec(mode, loss=loss, "
                "optimizer=keras.optimizers.SGD(learning_rate)); tfdist takes the gradients of "
                "`loss` and applies them."
            )
        if self.scaffold is not None:
            raise ValueError(
                "EstimatorSpec(scaffold=...) is not supported: TF2 has no sessions or savers. "
                "Remove it; tfdist.estimator initialises, checkpoints and restores variables."
            )
        for field, fix in (("evaluation_hooks", "evaluate"), ("prediction_hooks", "predict")):
            if getattr(self, field):
                raise ValueError(
                    f"EstimatorSpec({field}=...) is not supported. Pass the hooks to "
                    f"Estimator.{fix}(hooks=...) (or EvalSpec(hooks=...)) instead."
                )
        if self.eval_metric_ops is not None:
            if not isinstance(self.eval_metric_ops, Mapping):
                raise TypeError(
                    "Invalid value for argument `eval_metric_ops`. Received: "
                    f"{type(self.eval_metric_ops).__name__}. Pass a dict of name -> "
                    "keras.metrics.Metric."
                )
            for name, metric in self.eval_metric_ops.items():
                if not isinstance(metric, keras.metrics.Metric):
                    raise TypeError(
                        f"eval_metric_ops[{name!r}] must be a keras.metrics.Metric that "
                        f"model_fn updates; received {type(metric).__name__}. TF1 "
                        "(value, update_op) pairs are not supported: create e.g. "
                        "keras.metrics.Accuracy(), call update_state(labels, predictions) in "
                        "model_fn, and return the metric."
                    )
        object.__setattr__(self, "training_hooks", _as_tuple(self.training_hooks, "training_hooks"))
        object.__setattr__(
            self, "training_chief_hooks", _as_tuple(self.training_chief_hooks, "training_chief_hooks")
        )

    def _replace(self, **changes: Any) -> EstimatorSpec:
        """A copy with some fields changed (as with tf.estimator's namedtuple spec)."""
        return dataclasses.replace(self, **changes)


def _check_input_fn(input_fn: Any, owner: str) -> None:
    if not callable(input_fn):
        raise TypeError(
            f"Invalid value for argument `input_fn` of {owner}. Received: "
            f"{type(input_fn).__name__}. Pass a function returning a tf.data.Dataset of "
            "(features, labels) or a (features, labels) tuple."
        )


def _check_optional_positive(name: str, value: Any, owner: str) -> None:
    checks.positive_int(name, value, allow_none=True, owner=owner)


def _check_non_negative(name: str, value: Any, owner: str) -> None:
    checks.seconds(name, value, allow_zero=True, owner=owner)


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """The training half of `train_and_evaluate`.

    Args:
        input_fn: The training input function.
        max_steps: Train until the global step reaches this. Defaults to `None`: until the
            input ends (train forever on repeating data).
        hooks: Hooks run on every worker. Defaults to none.
        saving_listeners: `CheckpointSaverListener`s called around checkpoint saves.
            Defaults to none.

    Raises:
        TypeError: `input_fn` is not callable.
        ValueError: `max_steps` is not a positive integer.
    """

    input_fn: Callable[..., Any]
    max_steps: int | None = None
    hooks: Sequence[Any] = ()
    saving_listeners: Sequence[Any] = ()

    def __post_init__(self) -> None:
        _check_input_fn(self.input_fn, "TrainSpec")
        _check_optional_positive("max_steps", self.max_steps, "TrainSpec")
        object.__setattr__(self, "hooks", _as_tuple(self.hooks, "hooks"))
        object.__setattr__(
            self, "saving_listeners", _as_tuple(self.saving_listeners, "saving_listeners")
        )


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """The evaluation half of `train_and_evaluate`.

    Args:
        input_fn: The evaluation input function.
        steps: Batches per evaluation; `None` evaluates until the input ends. Defaults to 100.
        name: Evaluation name: summaries go to `model_dir/eval_<name>`. Defaults to `None`
            (`model_dir/eval`).
        hooks: Hooks run around each evaluation. Defaults to none.
        exporters: An `Exporter` or a list of them, run after each evaluation.
            Defaults to none.
        start_delay_secs: An evaluator task waits this long before its first evaluation.
            Defaults to 120.
        throttle_secs: Evaluate again only after this many seconds. Defaults to 600.

    Raises:
        TypeError: `input_fn` is not callable or an exporter is not an `Exporter`.
        ValueError: Invalid `steps`, delays, or two exporters with one name.
    """

    input_fn: Callable[..., Any]
    steps: int | None = 100
    name: str | None = None
    hooks: Sequence[Any] = ()
    exporters: Any = ()
    start_delay_secs: float = 120
    throttle_secs: float = 600

    def __post_init__(self) -> None:
        _check_input_fn(self.input_fn, "EvalSpec")
        _check_optional_positive("steps", self.steps, "EvalSpec")
        _check_non_negative("start_delay_secs", self.start_delay_secs, "EvalSpec")
        _check_non_negative("throttle_secs", self.throttle_secs, "EvalSpec")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(
                f"Invalid value for argument `name` of EvalSpec. Received: {self.name!r}. "
                "Pass a string or None."
            )
        exporters = self.exporters
        if exporters is None:
            exporters = ()
        elif isinstance(exporters, exporters_lib.Exporter):
            exporters = (exporters,)
        exporters = tuple(exporters)
        names = set()
        for exporter in exporters:
            if not isinstance(exporter, exporters_lib.Exporter):
                raise TypeError(
                    "EvalSpec(exporters=...) takes tfdist.estimator Exporters (LatestExporter, "
                    f"BestExporter, FinalExporter); received {type(exporter).__name__}."
                )
            if exporter.name in names:
                raise ValueError(
                    f"Two exporters are named {exporter.name!r}; each exports into "
                    "model_dir/export/<name>, so give them distinct names."
                )
            names.add(exporter.name)
        object.__setattr__(self, "exporters", exporters)
        object.__setattr__(self, "hooks", _as_tuple(self.hooks, "hooks"))
