"""`Estimator`: `model_fn` + `input_fn` programs on TF2 and Keras 3, single or multi-worker.

How a TF1 Estimator maps onto TF2 here:

- **Variables.** The first call of `model_fn` in each mode is a *build trace* (traced, never
  run): every variable it creates is made for real, under the strategy's scope, and stored by
  its Keras path. Every later call — the traced training step, evaluation, prediction, export —
  builds new Keras objects that get the stored variables back (`variable_store`). So Keras
  models built inside `model_fn` are created once and shared across calls and modes.
- **Training.** `EstimatorSpec(loss=..., optimizer=...)`: tfdist differentiates
  `loss / num_replicas_in_sync` with respect to the trainable variables `model_fn` created and
  applies the all-reduced gradients with the optimizer (built under the scope before tracing).
  Steps run `steps_per_loop` at a time in one `tf.function` call, driven by the shared outer
  loop (`tfdist.outer_loop.OuterLoop`: checkpoint and summary cadence, preemption, NaN losses);
  hooks and saving listeners run between calls as one of its actions (`hooks.HooksAction`).
- **Checkpoints.** `tf.train.Checkpoint(vars={path: variable}, global_step=...)` through
  `tfdist.checkpoint.CheckpointManager` (the chief writes `model_dir`, other workers a temporary
  directory). `train` resumes from the newest checkpoint; SIGTERM saves and exits (code 143).
- **Roles.** A process runs under one strategy: `train_distribute` (default
  `tfdist.get_strategy()`) on chief, workers and local runs; `eval_distribute` (default: none)
  on an `evaluator` task. With ps tasks in TF_CONFIG that is `ParameterServerStrategy`: worker
  and ps tasks serve inside `get_strategy`, and the chief schedules the loop's steps on the
  workers (`ps_training`), under the same outer loop.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfdist import checkpoint as checkpoint_lib
from tfdist import checks
from tfdist import compat
from tfdist import data as data_lib
from tfdist import outer_loop
from tfdist import parameter_server
from tfdist import peer_failure
from tfdist import strategy as strategy_lib
from tfdist.compat import keras_gradient_reduction
from tfdist.estimator import build as build_lib
from tfdist.estimator import hooks as hooks_lib
from tfdist.estimator import inputs as inputs_lib
from tfdist.estimator import loops
from tfdist.estimator import predictions as predictions_lib
from tfdist.estimator import ps_training
from tfdist.estimator import saved_model as saved_model_lib
from tfdist.estimator import train_target as train_target_lib
from tfdist.estimator import warm_start as warm_start_lib
from tfdist.estimator.model_fn import ModelFnRunner
from tfdist.estimator.run_config import RunConfig
from tfdist.estimator.spec import ModeKeys
from tfdist.estimator.variable_store import CHECKPOINT_ATTRIBUTE
from tfdist.estimator.variable_store import GLOBAL_STEP
from tfdist.estimator.variable_store import VariableStore
from tfdist.estimator.variable_store import checkpoint_names
from tfdist.outer_loop.summaries import SummaryWriters


def _check_steps(name: str, value: Any) -> None:
    checks.positive_int(name, value, allow_none=True)


def require_eager(where: str) -> None:
    """Raises when TensorFlow is in TF1 graph mode, which tfdist.estimator cannot run in.

    tf.estimator programs often start with `tf.compat.v1.disable_eager_execution()`; TF then
    builds symbolic tensors where tfdist needs values (dataset cardinality, checkpoints), and
    would fail deep inside with an unrelated `TypeError`.

    Raises:
        RuntimeError: Eager execution is off (or a `tf.Graph` is the default graph).
    """
    if not tf.compat.v1.executing_eagerly_outside_functions():
        raise RuntimeError(
            f"{where} needs TF2 eager execution, but TensorFlow is in graph mode "
            "(tf.compat.v1.disable_eager_execution() was called, or a tf.Graph is the default). "
            "Remove that call (and any `with tf.Graph().as_default()` around it): "
            "tfdist.estimator traces model_fn into tf.functions itself."
        )


def _to_numpy(value: Any) -> Any:
    value = keras.ops.convert_to_numpy(value) if not isinstance(value, np.ndarray) else value
    return value.item() if np.ndim(value) == 0 else value


class Estimator:
    """Trains, evaluates, predicts with and exports a `model_fn`, as `tf.estimator.Estimator` did.

    Args:
        model_fn: `model_fn(features, labels, mode, params, config)` returning an
            `EstimatorSpec` (`labels`, `mode`, `params`, `config` are optional, detected by
            name). It may build Keras models inside: their variables are created once.
        model_dir: Directory for checkpoints, summaries and exports. Defaults to
            `config.model_dir`, else a new temporary directory.
        config: A `RunConfig`. Defaults to `RunConfig()`.
        params: A dict passed to `model_fn` (and `input_fn`s) as `params`. Defaults to `None`.
        warm_start_from: A checkpoint, model directory, SavedModel directory or
            `WarmStartSettings`: when training starts without a checkpoint in `model_dir`,
            the selected variables are loaded from it. Defaults to `None`.

    Raises:
        RuntimeError: TensorFlow is in graph mode (`tf.compat.v1.disable_eager_execution()`);
            so do `train`, `evaluate`, `predict` and `export_saved_model`.
        TypeError: `model_fn` is not callable, or `config` is not a `RunConfig`.
        ValueError: `model_fn` has the wrong arguments, or `model_dir` differs from
            `config.model_dir`.

    Example:

    ```python
    estimator = tfdist.estimator.Estimator(
        model_fn=model_fn, model_dir="/tmp/run",
        config=tfdist.estimator.RunConfig(save_checkpoints_steps=100))
    estimator.train(train_input_fn, max_steps=1000)
    print(estimator.evaluate(eval_input_fn, steps=None))
    ```
    """

    def __init__(
        self,
        model_fn: Callable[..., Any],
        model_dir: str | None = None,
        config: RunConfig | None = None,
        params: dict | None = None,
        warm_start_from: Any = None,
    ) -> None:
        require_eager("tfdist.estimator.Estimator")
        if config is None:
            config = RunConfig()
        if not isinstance(config, RunConfig):
            raise TypeError(
                f"Invalid value for argument `config`. Received: {type(config).__name__}. "
                "Pass a tfdist.estimator.RunConfig."
            )
        if model_dir is not None:
            model_dir = os.fspath(model_dir)
            if config.model_dir is not None and config.model_dir != model_dir:
                raise ValueError(
                    f"model_dir is set both in the Estimator ({model_dir!r}) and in RunConfig "
                    f"({config.model_dir!r}), with different values. Set one of them."
                )
        model_dir = model_dir or config.model_dir
        if model_dir is None:
            model_dir = tempfile.mkdtemp(prefix="tfdist-estimator-")
            logging.warning("tfdist.estimator: no model_dir given; using %s", model_dir)
        self._config = config.replace(model_dir=model_dir)
        self._params = dict(params) if params is not None else None
        self._store = VariableStore()
        self._runner = ModelFnRunner(model_fn, self._params, self._config, self._store)
        self._model_fn = model_fn
        self._warm_start = warm_start_lib.settings_from(warm_start_from)
        self._strategy: tf.distribute.Strategy | None = None
        self._built: dict[str, Any] = {}  # mode -> the spec of its build trace
        self._global_step: tf.Variable | None = None
        self._checkpoint: tf.train.Checkpoint | None = None
        self._manager: checkpoint_lib.CheckpointManager | None = None
        self._optimizers: list[tuple[keras.optimizers.Optimizer, list[tf.Variable]]] = []
        self._fetch_dtypes: dict[str, tf.DType] = {}
        self._spec_hooks: list[hooks_lib.SessionRunHook] = []
        self._train_loops: dict[bool, Callable[..., Any]] = {}
        self._has_labels = {ModeKeys.TRAIN: True, ModeKeys.EVAL: True}
        self._eval_loop: Callable[..., Any] | None = None
        self._eval_loss: keras.metrics.Mean | None = None
        self._eval_metrics: dict[str, keras.metrics.Metric] = {}
        self._predict_fn: Callable[..., Any] | None = None
        self._summaries = SummaryWriters()
        self._train_target: train_target_lib.EstimatorTrainTarget | None = None
        self._outer_loop: outer_loop.OuterLoop | None = None

    # --- properties ------------------------------------------------------------------------------

    @property
    def model_dir(self) -> str:
        return self._config.model_dir

    @property
    def config(self) -> RunConfig:
        return self._config

    @property
    def params(self) -> dict:
        return dict(self._params or {})

    @property
    def model_fn(self) -> Callable[..., Any]:
        return self._model_fn

    @property
    def steps_by_worker(self) -> dict[int, int]:
        """Under ParameterServerStrategy: training steps each worker ran in this process, by
        worker index (empty under other strategies, and before training)."""
        return dict(getattr(self._train_target, "steps_by_worker", {}))

    def eval_dir(self, name: str | None = None) -> str:
        """Where `evaluate(name=...)` writes summaries: `model_dir/eval` or `model_dir/eval_<name>`."""
        return os.path.join(self.model_dir, "eval" if not name else f"eval_{name}")

    # --- set-up ----------------------------------------------------------------------------------

    @property
    def _is_chief(self) -> bool:
        return self._config.is_chief

    def _get_strategy(self) -> tf.distribute.Strategy:
        if self._strategy is not None:
            return self._strategy
        cluster = self._config.cluster
        if cluster.is_evaluator:
            strategy = self._config.eval_distribute or strategy_lib.get_strategy(
                "auto", cluster=cluster)
        else:
            strategy = self._config.train_distribute or strategy_lib.get_strategy(
                "auto", cluster=cluster)
            if cluster.is_multi_worker and strategy_lib.num_workers(strategy) == 1:
                raise ValueError(
                    f"TF_CONFIG lists {cluster.num_workers} training tasks, but train_distribute "
                    f"is a single-worker {type(strategy).__name__}: the workers would train "
                    "separate models. Pass train_distribute=tfdist.get_strategy() (or "
                    "tf.distribute.MultiWorkerMirroredStrategy()), or unset TF_CONFIG."
                )
        compat.apply(strategy)
        self._strategy = strategy
        with strategy.scope():
            self._global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name=GLOBAL_STEP,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        self._checkpoint = tf.train.Checkpoint(
            **{CHECKPOINT_ATTRIBUTE: {}}, global_step=self._global_step
        )
        self._manager = checkpoint_lib.CheckpointManager(
            self._checkpoint, self.model_dir, cluster=cluster,
            max_to_keep=self._config.keep_checkpoint_max,
        )
        config = self._config
        self._train_target = (
            ps_training.ScheduledTrainTarget(self._global_step, strategy, config.steps_per_function)
            if self._scheduled else train_target_lib.EstimatorTrainTarget(self._global_step))
        step_log = ([train_target_lib.StepCountLog(config.log_step_count_steps, config.is_chief)]
                    if config.log_step_count_steps else [])
        self._outer_loop = outer_loop.OuterLoop(
            trainer=self._train_target, strategy=strategy, checkpoints=self._manager,
            cluster=cluster, steps_per_loop=config.steps_per_loop,
            checkpoint_every=config.save_checkpoints_steps,
            checkpoint_secs=config.save_checkpoints_secs,
            # tf.estimator wrote training scalars into model_dir itself, from the chief.
            summary_dirs={"train": self.model_dir} if config.is_chief and config.save_summary_steps else {},
            summary_every=config.save_summary_steps, train_actions=step_log,
            on_nonfinite=config.on_nonfinite, max_nonfinite_restores=config.max_nonfinite_restores,
        )
        return strategy

    @property
    def _scheduled(self) -> bool:
        """Training runs as functions scheduled on workers (ParameterServerStrategy)."""
        return self._strategy is not None and parameter_server.is_parameter_server(self._strategy)

    def _sync_checkpoint(self) -> None:
        tracked = getattr(self._checkpoint, CHECKPOINT_ATTRIBUTE)
        for key, variable in self._store.checkpointed().items():
            if key not in tracked:
                tracked[key] = variable

    def _call_model_fn(self, claimed: set[str] | None = None) -> Callable[..., Any]:
        def call(features: Any, labels: Any, mode: str) -> Any:
            return self._runner.call(features, labels, mode, build=False, claimed=claimed)

        return call

    def _build(self, mode: str, info: inputs_lib.InputInfo | None, feature_spec: Any = None) -> Any:
        """The build trace of `mode` (once per mode): creates its variables, checks its spec."""
        if mode in self._built:
            return self._built[mode]
        strategy = self._get_strategy()
        spec = build_lib.trace(
            self._runner, strategy, mode,
            info.feature_spec if info is not None else feature_spec,
            info.label_spec if info is not None else None,
            self._config.tf_random_seed,
        )
        for metric in (spec.eval_metric_ops or {}).values():
            self._store.mark_local(metric.variables)  # evaluation state: never checkpointed
        if mode == ModeKeys.TRAIN:
            self._optimizers = build_lib.build_optimizers(strategy, self._store, spec.optimizer)
            for optimizer, _ in self._optimizers:
                keras_gradient_reduction.configure(optimizer, self._config.gradients)
            hooks = list(spec.training_hooks)
            if self._is_chief:
                hooks += list(spec.training_chief_hooks)
            fetches = loops.hook_fetches(spec, self._is_chief)
            self._fetch_dtypes = {k: tf.convert_to_tensor(v).dtype for k, v in fetches.items()}
            for i, hook in enumerate(hooks):
                if isinstance(hook, hooks_lib.LoggingTensorHook):
                    hook.bind_fetched(
                        {name: f"training_hooks/{i}/{name}" for name in hook.tensor_values()})
            self._spec_hooks = hooks
        elif mode == ModeKeys.EVAL:
            self._eval_metrics = dict(spec.eval_metric_ops or {})
            with strategy.scope():
                self._eval_loss = keras.metrics.Mean(name="loss")
        self._sync_checkpoint()
        self._built[mode] = spec
        return spec

    def _restore(self, checkpoint_path: str | None = None) -> str | None:
        assert self._manager is not None, "_get_strategy() creates the manager"
        if checkpoint_path is None:  # the newest readable one (unreadable ones are skipped)
            return self._manager.restore_latest()
        self._manager.restore(checkpoint_path)
        return checkpoint_path

    def _global_step_value(self) -> int:
        assert self._global_step is not None, "_get_strategy() creates the global step"
        return int(self._global_step.numpy())

    # --- training --------------------------------------------------------------------------------

    def train(
        self,
        input_fn: Callable[..., Any],
        hooks: Iterable[hooks_lib.SessionRunHook] | None = None,
        steps: int | None = None,
        max_steps: int | None = None,
        saving_listeners: Iterable[hooks_lib.CheckpointSaverListener] | None = None,
    ) -> Estimator:
        """Trains from the newest checkpoint in `model_dir` (or a warm start, or scratch).

        Args:
            input_fn: The training input function.
            hooks: `SessionRunHook`s run on this worker. Defaults to none.
            steps: Train this many more steps. Defaults to `None`.
            max_steps: Train until the global step reaches this (nothing if it already has).
                Defaults to `None`. With neither, train until the input ends.
            saving_listeners: `CheckpointSaverListener`s. Defaults to none.

        Returns:
            `self`.

        Raises:
            ValueError: Both `steps` and `max_steps`, or a non-positive count.
            NanLossDuringTrainingError: The loss became NaN or infinite.
            tfdist.checkpoint.Preempted: SIGTERM arrived; a checkpoint was saved (exit 143).
            tfdist.peer_failure.PeerUnavailableError: Another task died or stopped responding.
        """
        require_eager("Estimator.train")
        if steps is not None and max_steps is not None:
            raise ValueError(
                f"Pass at most one of `steps` and `max_steps`. Received: steps={steps}, "
                f"max_steps={max_steps}."
            )
        _check_steps("steps", steps)
        _check_steps("max_steps", max_steps)
        if self._config.cluster.is_evaluator:
            raise ValueError(
                "Estimator.train was called on an evaluator task, which only evaluates. Use "
                "train_and_evaluate, or run train on chief/worker tasks."
            )
        user_hooks = list(hooks or [])
        for hook in user_hooks:
            if not isinstance(hook, hooks_lib.SessionRunHook):
                raise TypeError(
                    f"hooks must be tfdist.estimator.SessionRunHook instances; received "
                    f"{type(hook).__name__}."
                )
        # A dead peer ends training with one line naming it (issue 15).
        with peer_failure.translate(self._config.cluster):
            strategy = self._get_strategy()
            source = inputs_lib.InputFn(input_fn, params=self._params, config=self._config)
            if self._scheduled:
                ps_training.check_steps(steps, max_steps)
                distributed, info = ps_training.per_worker_input(source, strategy, ModeKeys.TRAIN)
            else:
                distributed, info = source.distribute(strategy, ModeKeys.TRAIN)
            iterator: Any = None
            try:
                self._build(ModeKeys.TRAIN, info)
                self._has_labels[ModeKeys.TRAIN] = info.has_labels
                assert self._outer_loop is not None and self._train_target is not None  # set up above
                train_target = self._train_target
                restored = self._outer_loop.resume()
                if restored is None and self._warm_start is not None:
                    with strategy.scope():
                        warm_start_lib.warm_start(self._warm_start, self._store)
                start = self._global_step_value()
                if max_steps is not None and start >= max_steps:
                    logging.info("tfdist.estimator: global step %d >= max_steps %d; nothing to train.",
                                 start, max_steps)
                    return self
                target = max_steps if max_steps is not None else (start + steps if steps else None)
                if start and not info.finite and not self._scheduled:
                    # (Under parameter-server training each worker reads its own pipeline.)
                    # The input follows the global step (same epoch, same position in it), at
                    # this run's size; a finite input is read afresh by each call, as tf.estimator.
                    logging.info("tfdist.estimator: the input resumes at step %d over %d replica(s)",
                                 start, strategy.num_replicas_in_sync)
                    distributed, _ = source.distribute(strategy, ModeKeys.TRAIN, start_step=start)
                iterator = iter(distributed)
                train_target.bind(self._train_loop(info.finite), iterator, self._fetch_dtypes)
                hooks_action = hooks_lib.HooksAction(self._spec_hooks + user_hooks,
                                                     list(saving_listeners or []),
                                                     lambda: train_target.run_values)
                try:
                    self._outer_loop.train(target, train_actions=[hooks_action])
                except outer_loop.NonFiniteLossError as error:
                    gave_up = (f" Gave up after {self._config.max_nonfinite_restores} restores."
                               if self._config.on_nonfinite == "restore" else "")
                    raise hooks_lib.NanLossDuringTrainingError(
                        f"NaN loss during training: the loss is {error.loss} at global step "
                        f"{error.step}.{gave_up} Lower the learning rate or check the data; the "
                        f"last checkpoint is step {error.last_saved}."
                    ) from None
            finally:
                # A per-worker iterator (parameter-server training): its workers own the pipelines.
                if iterator is not None and not self._scheduled:
                    data_lib.release_iterator(iterator)  # destroyed off this thread: no stall
                del iterator
        return self

    def _train_loop(self, finite: bool) -> Callable[..., Any]:
        if finite not in self._train_loops:
            loop = loops.make_train_loop(
                strategy=self._strategy,
                call_model_fn=self._call_model_fn(),
                optimizers=self._optimizers,
                global_step=self._global_step,
                has_labels=lambda: self._has_labels[ModeKeys.TRAIN],
                fetch_keys=list(self._fetch_dtypes),
                is_chief=self._is_chief,
                finite=finite,
                count_steps=not self._scheduled,  # the coordinator counts them
                accumulation_steps=self._config.accumulation_steps,
            )
            self._train_loops[finite] = ps_training.scheduled_loop(loop) if self._scheduled else loop
        return self._train_loops[finite]

    # --- evaluation ------------------------------------------------------------------------------

    def evaluate(
        self,
        input_fn: Callable[..., Any],
        steps: int | None = None,
        hooks: Iterable[hooks_lib.SessionRunHook] | None = None,
        checkpoint_path: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Evaluates the newest (or a given) checkpoint and writes eval summaries.

        Args:
            input_fn: The evaluation input function.
            steps: Batches to evaluate. Defaults to `None`: until the input ends.
            hooks: Hooks run around the evaluation (one loop call). Defaults to none.
            checkpoint_path: Checkpoint to evaluate. Defaults to the newest in `model_dir`
                (with none, the current variables are evaluated and a warning logged).
            name: Evaluation name; summaries go to `eval_dir(name)`. Defaults to `None`.

        Returns:
            `{"loss": ..., <metric name>: ..., "global_step": ...}`.

        Raises:
            ValueError: Invalid `steps`, or a `model_fn`/`input_fn` problem.
        """
        require_eager("Estimator.evaluate")
        _check_steps("steps", steps)
        hooks = list(hooks or [])
        strategy = self._get_strategy()
        source = inputs_lib.InputFn(input_fn, params=self._params, config=self._config)
        distributed, info = source.distribute(strategy, ModeKeys.EVAL)
        if steps is None and not info.finite:
            raise ValueError(
                "Evaluation with steps=None runs until the input ends, but input_fn's dataset "
                "repeats forever. Pass steps=<batches>, or do not repeat the evaluation data."
            )
        iterator = iter(distributed)
        try:
            self._build(ModeKeys.EVAL, info)
            assert self._eval_loss is not None, "the EVAL build creates it"
            self._has_labels[ModeKeys.EVAL] = info.has_labels
            path = self._restore(checkpoint_path)
            if path is None:
                logging.warning("tfdist.estimator: no checkpoint in %s; evaluating the current "
                                "(initial) variables.", self.model_dir)
            if self._eval_loop is None:
                self._eval_loop = loops.make_eval_loop(
                    strategy=strategy, call_model_fn=self._call_model_fn(),
                    loss_metric=self._eval_loss,
                    has_labels=lambda: self._has_labels[ModeKeys.EVAL],
                )
            metrics = [self._eval_loss, *self._eval_metrics.values()]
            with strategy.scope():
                for metric in metrics:
                    metric.reset_state()
            for hook in hooks:
                hook.begin()
            step = self._global_step_value()
            context = hooks_lib.SessionRunContext(step)
            requests = [hook.before_run(context) for hook in hooks]
            self._eval_loop(iterator, tf.constant(steps or loops.UNTIL_END, tf.int64))
            with strategy.scope():
                results = {"loss": _to_numpy(self._eval_loss.result())}
                for key, metric in self._eval_metrics.items():
                    value = metric.result()
                    if isinstance(value, dict):  # e.g. Keras's compiled-metrics container
                        results.update({k: _to_numpy(v) for k, v in value.items()})
                    else:
                        results[key] = _to_numpy(value)
            results["global_step"] = step
            hooks_lib.after_runs(hooks, requests, context,
                                 {"loss": results["loss"], "global_step": step})
            for hook in hooks:
                hook.end(None)
        finally:
            data_lib.release_iterator(iterator)
            del iterator
        if self._is_chief or self._config.cluster.is_evaluator:
            self._summaries.write(self.eval_dir(name), step, results)
        logging.info("tfdist.estimator: evaluation at step %d: %s", step,
                     ", ".join(f"{k} = {v}" for k, v in results.items()))
        return results

    # --- prediction ------------------------------------------------------------------------------

    def predict(
        self,
        input_fn: Callable[..., Any],
        predict_keys: str | list[str] | None = None,
        hooks: Iterable[hooks_lib.SessionRunHook] | None = None,
        checkpoint_path: str | None = None,
        yield_single_examples: bool = True,
    ) -> Iterator[Any]:
        """Yields predictions for each example (or batch) of `input_fn`'s data.

        Runs on one device (not distributed), as tf.estimator's did.

        Args:
            input_fn: Returns features, or `(features, labels)` (labels are ignored).
            predict_keys: Keys of the `predictions` dict to return. Defaults to all.
            hooks: Hooks run around each batch. Defaults to none.
            checkpoint_path: Checkpoint to use. Defaults to the newest in `model_dir`.
            yield_single_examples: Yield one dict per example; else one per batch.
                Defaults to `True`.

        Yields:
            A dict of prediction name -> value (or the value, when `predictions` is a tensor).

        Raises:
            RuntimeError: TensorFlow is in graph mode (raised by this call; the rest when
                the first prediction is taken).
            ValueError: A predict key that `predictions` does not have.
        """
        require_eager("Estimator.predict")
        return self._predict(input_fn, predict_keys, hooks, checkpoint_path,
                             yield_single_examples)

    def _predict(self, input_fn: Callable[..., Any], predict_keys: str | list[str] | None,
                 hooks: Iterable[hooks_lib.SessionRunHook] | None, checkpoint_path: str | None,
                 yield_single_examples: bool) -> Iterator[Any]:
        if isinstance(predict_keys, str):
            predict_keys = [predict_keys]
        hooks = list(hooks or [])
        self._get_strategy()
        source = inputs_lib.InputFn(input_fn, params=self._params, config=self._config)
        dataset, info = source.dataset(
            ModeKeys.PREDICT,
            tf.distribute.InputContext() if source.takes_input_context else None,
        )
        spec = self._build(ModeKeys.PREDICT, info)
        predictions_lib.check_predict_keys(spec.predictions, predict_keys)
        path = self._restore(checkpoint_path)
        if path is None:
            logging.warning("tfdist.estimator: no checkpoint in %s; predicting with the current "
                            "(initial) variables.", self.model_dir)
        if self._predict_fn is None:
            call = self._call_model_fn()

            def predict_fn(features):
                return call(features, None, ModeKeys.PREDICT).predictions

            self._predict_fn = tf.function(predict_fn, reduce_retracing=True)
        for hook in hooks:
            hook.begin()
        for element in dataset:
            features, _ = inputs_lib.split(element, info.has_labels)
            context = hooks_lib.SessionRunContext(self._global_step_value())
            requests = [hook.before_run(context) for hook in hooks]
            predictions = self._predict_fn(features)
            hooks_lib.after_runs(hooks, requests, context,
                                 {"global_step": context.global_step, "loss": float("nan")})
            if isinstance(predictions, dict):
                predictions = {k: predictions[k] for k in (predict_keys or predictions)}
                batch: dict[str, np.ndarray] | np.ndarray = {
                    k: np.asarray(v) for k, v in predictions.items()}
            else:
                batch = np.asarray(predictions)
            if not yield_single_examples:
                yield batch
                continue
            yield from predictions_lib.examples(batch)
            if context.stop_requested:
                break
        for hook in hooks:
            hook.end(None)

    # --- export ----------------------------------------------------------------------------------

    def export_saved_model(
        self,
        export_dir_base: str,
        serving_input_receiver_fn: Callable[[], Any],
        assets_extra: dict[str, str] | None = None,
        as_text: bool = False,
        checkpoint_path: str | None = None,
        experimental_mode: str = ModeKeys.PREDICT,
    ) -> str:
        """Writes `export_dir_base/<timestamp>`: a SavedModel with a `serving_default` signature.

        The signature's inputs are the receiver tensors; its outputs are the
        `export_outputs` of `model_fn` in PREDICT mode (default: the `predictions`). Each
        other `export_outputs` key becomes another signature.

        Args:
            export_dir_base: The parent directory of timestamped exports.
            serving_input_receiver_fn: Returns a `tfdist.estimator.export.ServingInputReceiver`.
            assets_extra: Destination (relative to `assets.extra/`) -> source file. Defaults to
                none.
            as_text: Not supported; must be `False`.
            checkpoint_path: Checkpoint to export. Defaults to the newest in `model_dir`.
            experimental_mode: Only `ModeKeys.PREDICT`.

        Returns:
            The export directory (a `str`; tf.estimator returned bytes).

        Raises:
            ValueError: No checkpoint to export, `as_text`, or another mode.
        """
        require_eager("Estimator.export_saved_model")
        if as_text:
            raise ValueError(
                "export_saved_model(as_text=True) is not supported: TF2 SavedModels are binary. "
                "Inspect them with `saved_model_cli show --dir <export> --all`."
            )
        if experimental_mode != ModeKeys.PREDICT:
            raise ValueError(
                f"export_saved_model exports PREDICT mode only. Received: "
                f"experimental_mode={experimental_mode!r}."
            )
        receiver = saved_model_lib.trace_receiver(serving_input_receiver_fn)
        self._get_strategy()
        self._build(ModeKeys.PREDICT, None, feature_spec=receiver.feature_spec)
        path = self._restore(checkpoint_path)
        if path is None:
            raise ValueError(
                f"Cannot export: there is no checkpoint in {self.model_dir}. Train first, or "
                "pass checkpoint_path."
            )
        claimed: set[str] = set()
        module, signatures = saved_model_lib.serving_module(
            receiver, self._call_model_fn(claimed),
            lambda: {k: self._store.variables[k] for k in sorted(claimed)},
            resources=self._export_resources(),
        )
        export_dir = saved_model_lib.save(module, signatures, export_dir_base, assets_extra)
        logging.info("tfdist.estimator: exported %s (checkpoint %s)", export_dir, path)
        return export_dir

    def _export_resources(self) -> list[Any]:
        """Objects made outside `model_fn` that the serving functions read (lookup tables).

        A subclass whose `model_fn` captures such objects (canned estimators' preprocessing
        layers) returns them here, so the SavedModel tracks and saves them.
        """
        return []

    # --- checkpoints -----------------------------------------------------------------------------

    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint in `model_dir`, or `None`."""
        return tf.train.latest_checkpoint(self.model_dir)

    def _latest_or_fail(self) -> str:
        path = self.latest_checkpoint()
        if path is None:
            raise ValueError(
                f"There is no checkpoint in model_dir={self.model_dir!r}. Train first (or point "
                "model_dir at a trained run)."
            )
        return path

    def get_variable_names(self) -> list[str]:
        """Names of the variables in the newest checkpoint (Keras paths, plus "global_step").

        Raises:
            ValueError: There is no checkpoint yet.
        """
        return sorted(checkpoint_names(self._latest_or_fail(), name_based=False))

    def get_variable_value(self, name: str) -> np.ndarray:
        """The value of one variable in the newest checkpoint.

        Raises:
            ValueError: No checkpoint yet, or no variable of that name.
        """
        path = self._latest_or_fail()
        names = checkpoint_names(path, name_based=False)
        if name not in names:
            close = difflib.get_close_matches(name, list(names), n=3)
            raise ValueError(
                f"The checkpoint {path} has no variable {name!r}."
                + (f" Did you mean {', '.join(map(repr, close))}?" if close else "")
                + " See get_variable_names()."
            )
        return tf.train.load_variable(path, names[name])
