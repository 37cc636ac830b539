"""The inner loop of route 1: one `Trainer` holds the model and runs many steps per call.

`Trainer` owns what a step needs (model, optimizer, loss, metrics, global step) and the two
compiled loops: `train_loop(num_steps)` runs `num_steps` steps inside one `tf.function`
(`tf.range` over `strategy.run`, the step count passed as a tensor so it never retraces), and
`eval_loop(num_steps)` runs to the end of the data or `num_steps`. It is the route's
`tfdist.outer_loop.TrainTarget` and `EvalTarget` (`train(num_steps)`, `evaluate(num_steps)`),
so the shared outer loop (checkpoints, summaries, evaluation cadence; `tfdist.loop.Controller`)
drives it without reaching into it.

Subclass and override `train_step` / `eval_step` for full control; both run in replica context.

Under `ParameterServerStrategy` (issue 16) the same `Trainer` runs on the chief, the
coordinator: `train(num_steps)` schedules functions of `steps_per_function` steps each on the
workers (`ClusterCoordinator.schedule`, per-worker datasets from `tfdist.data.per_worker`) and
joins them before it returns, so the outer loop's boundaries (checkpoints, evaluation) see a
quiet cluster. The global step is counted on the coordinator, one per step of each function
that finished (Keras' `optimizer.iterations` loses increments under concurrent workers, and a
function retried after a worker failure must count once). Evaluation runs on the coordinator.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import keras
import tensorflow as tf
from absl import logging

from tfdist import checks
from tfdist import data as data_lib
from tfdist import gradients as gradients_lib
from tfdist import parameter_server
from tfdist.compat import default_strategy
from tfdist.compat import keras_atomic_updates
from tfdist.compat import keras_gradient_reduction
from tfdist.compat import keras_optimizer_build
from tfdist.compat import keras_sharded_variables
from tfdist.compat import strategy_workers
from tfdist.outer_loop import interface

# Evaluation "to the end of the data" runs the loop with this many steps at most.
_UNTIL_END = checks.UNTIL_END

LossLike: TypeAlias = keras.losses.Loss | Callable[..., tf.Tensor] | str


class TrainerError(ValueError):
    """The trainer's inputs do not fit together (model, optimizer, strategy, data)."""


def _tf_variable(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable


def _root_cause(error: BaseException) -> str:
    """`Type: first line` of the innermost exception (Keras wraps call() errors in layers)."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def _copy_metric(metric: keras.metrics.Metric | str) -> keras.metrics.Metric:
    metric = keras.metrics.get(metric)
    if not isinstance(metric, keras.metrics.Metric):
        metric = keras.metrics.MeanMetricWrapper(metric, name=getattr(metric, "__name__", "metric"))
    return metric.__class__.from_config(metric.get_config())


@tf.function
def _advance(iterator: Any, num_batches: tf.Tensor) -> None:
    for _ in tf.range(num_batches):
        next(iterator)


class Trainer(interface.TrainTarget, interface.EvalTarget):
    """Model, optimizer, loss and metrics under one strategy, with compiled multi-step loops.

    Args:
        strategy: The strategy to train under (e.g. from `tfdist.get_strategy`).
        model: A Keras model built under `strategy.scope()`, or a zero-argument builder that
            tfdist calls under the scope (preferred: nothing can be built outside it). A model
            without weights yet (no `keras.Input`, or subclassed) is built by calling it on
            symbolic inputs shaped like the training (or evaluation) data.
        optimizer: A Keras optimizer (created under the scope, or outside any scope and not yet
            used) or its name, e.g. `"adam"`.
        loss: A Keras loss object, a function `loss(y_true, y_pred)` returning per-example losses,
            or a loss name. Required unless `train_step` and `eval_step` are overridden.
        metrics: Keras metrics or their names; the trainer keeps separate copies for training and
            evaluation. Defaults to none.
        train_data: Training data (`tfdist.data.DataSpec`). Defaults to `None`.
        eval_data: Evaluation data (`tfdist.data.DataSpec`). Defaults to `None`.
        steps_per_function: Under `ParameterServerStrategy`: training steps per scheduled
            function (a loop call of `num_steps` schedules `ceil(num_steps / this)` of them).
            Defaults to 10.
        gradients: How gradients are all-reduced (`tfdist.gradients.GradientOptions`:
            compression, packing). Gradient accumulation is set on the data:
            `train_data.accumulation_steps`. Defaults to TensorFlow's float32 reduction.

    Raises:
        TrainerError: A model built outside the scope or that cannot be built from the data, an
            optimizer from another strategy, or a missing loss.
        tfdist.data.DataConfigError: The global batch does not divide over the replicas.

    Example:

    ```python
    strategy = tfdist.get_strategy("mirrored", virtual_cpus=2)
    trainer = tfdist.loop.Trainer(
        strategy=strategy, model=build_model, optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"], train_data=train_spec, eval_data=eval_spec)
    ```
    """

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model | Callable[[], keras.Model],
        optimizer: keras.optimizers.Optimizer | str,
        loss: LossLike | None = None,
        metrics: Sequence[keras.metrics.Metric | str] = (),
        train_data: data_lib.DataSpec | None = None,
        eval_data: data_lib.DataSpec | None = None,
        steps_per_function: int = 10,
        gradients: gradients_lib.GradientOptions | None = None,
    ) -> None:
        checks.positive_int("steps_per_function", steps_per_function, error=TrainerError)
        if gradients is not None and not isinstance(gradients, gradients_lib.GradientOptions):
            raise TrainerError(
                f"Invalid value for argument `gradients`. Received: gradients={gradients!r}. "
                "Pass a tfdist.gradients.GradientOptions or None.")
        self.strategy = strategy
        self.steps_per_function = steps_per_function
        self._coordinator = (parameter_server.coordinator(strategy)
                             if parameter_server.is_parameter_server(strategy) else None)
        # Steps each worker ran under ParameterServerStrategy, by worker index.
        self.steps_by_worker: collections.Counter[int] = collections.Counter()
        self.train_data = train_data
        self.eval_data = eval_data
        for spec in (train_data, eval_data):
            if spec is not None:
                spec.per_replica_batch_size(strategy.num_replicas_in_sync)
        self.accumulation_steps = train_data.accumulation_steps if train_data is not None else 1
        self._check_wire_options(gradients)
        if loss is None and type(self).train_step is Trainer.train_step:
            raise TrainerError(
                "Trainer needs a `loss` (a Keras loss, a function or a name) unless you "
                "override `train_step` and `eval_step`."
            )
        self._loss_fn = keras.losses.get(loss) if isinstance(loss, str) else loss

        with strategy.scope():
            if isinstance(model, keras.Model):
                self.model = model
            elif callable(model):
                self.model = model()
                if not isinstance(self.model, keras.Model):
                    raise TrainerError(
                        f"The model builder returned {type(self.model).__name__}, not a keras.Model."
                    )
            else:
                raise TrainerError(
                    f"Invalid value for argument `model`. Received: {type(model).__name__}. Pass "
                    "a keras.Model or a function that builds one."
                )
            self._build_model_if_needed()
            self._check_model_in_scope()
            self.optimizer = self._resolve_optimizer(optimizer)
            # Built here, under the scope and before any tracing (FINDINGS §3).
            self.optimizer.build(self._differentiable_variables())
            keras_gradient_reduction.configure(self.optimizer, gradients)
            self.global_step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            # First step whose loss was not finite on replica 0 (-1: none).
            self.nonfinite_step = tf.Variable(
                -1,
                dtype=tf.int64,
                trainable=False,
                name="nonfinite_step",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self.train_loss = keras.metrics.Mean(name="loss")
            self.eval_loss = keras.metrics.Mean(name="loss")
            self.train_metrics = [_copy_metric(m) for m in metrics]
            self.eval_metrics = [_copy_metric(m) for m in metrics]
        self._train_loop_fn = tf.function(self._train_loop)
        self._scheduled_train_fn = tf.function(self._scheduled_train_loop)
        self._eval_loop_fn = tf.function(self._eval_loop)
        self._train_iterator: Any = None
        self._input_start_step = 0  # the step a resumed run's input starts at (resume_input)

    # --- construction checks -----------------------------------------------------------------

    def _build_model_if_needed(self) -> None:
        if self.model.weights:
            return
        spec = self.train_data or self.eval_data
        if spec is None:
            raise TrainerError(
                "The model has no weights yet and there is no data to infer input shapes from. "
                "Build it (e.g. start it with keras.Input) or pass train_data/eval_data."
            )
        element = data_lib.make_dataset(spec).element_spec
        x_spec = element[0] if isinstance(element, tuple) else element
        # A symbolic call builds what Keras would build on the first real call, so the weights
        # (and the optimizer's slots, built next) exist before any tracing. `model.build(shape)`
        # would only mark a subclassed model without `build()` as built, with no weights.
        inputs = tf.nest.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), x_spec)
        shapes = tf.nest.map_structure(lambda s: tuple(s.shape), x_spec)
        name = f"{type(self.model).__name__} '{self.model.name}'"
        try:
            self.model(inputs)
        except Exception as e:  # noqa: BLE001 - any failure of the user's call() is reported
            raise TrainerError(
                f"Invalid value for argument `model`. Received: model={name}, which fails when "
                f"called on symbolic inputs shaped like the data, {shapes} ({_root_cause(e)}). "
                "Start it with keras.Input, give it a build() method, or build it in the `model=` "
                "function."
            ) from e
        if not self.model.trainable_weights:
            raise TrainerError(
                f"Invalid value for argument `model`. Received: model={name}, which has no "
                f"trainable weights once built on inputs shaped {shapes}: nothing to train."
            )

    def _check_wire_options(self, gradients: gradients_lib.GradientOptions | None) -> None:
        ps = self._coordinator is not None
        if ps and gradients is not None and not gradients.is_default:
            raise TrainerError(
                f"Invalid value for argument `gradients`. Received: gradients={gradients!r} "
                "under ParameterServerStrategy, which sends gradients to ps tasks and never "
                "all-reduces them. Pass gradients=None.")
        if self.accumulation_steps == 1 or self.train_data is None:
            return
        if ps:
            raise TrainerError(
                f"Invalid value for argument `accumulation_steps` of train_data. Received: "
                f"accumulation_steps={self.accumulation_steps} under ParameterServerStrategy, "
                "which has no all-reduce to save. Use accumulation_steps=1.")
        if not self.train_data.effective_drop_remainder:
            raise TrainerError(
                f"Invalid value for argument `drop_remainder` of train_data. Received: "
                f"drop_remainder=False with accumulation_steps={self.accumulation_steps}: a short "
                "final batch does not split into micro-batches. Leave drop_remainder unset (True "
                "for training) or use accumulation_steps=1.")
        self.train_data.micro_batch_size(self.strategy.num_replicas_in_sync)

    def _check_model_in_scope(self) -> None:
        if not tf.distribute.has_strategy() or self.strategy is tf.distribute.get_strategy() and (
            default_strategy.is_default(self.strategy)
        ):
            return
        def created_in_scope(variable: Any) -> bool:
            if keras_sharded_variables.is_sharded(variable):
                variable = keras_sharded_variables.shards(variable)[0]
            return self.strategy.extended.variable_created_in_scope(_tf_variable(variable))

        outside = [v.path for v in self.model.weights if not created_in_scope(v)]
        if outside:
            raise TrainerError(
                f"The model's variables were created outside this strategy's scope (e.g. "
                f"{outside[0]!r}). Build the model inside `with strategy.scope():`, or pass a "
                "function that builds it as `model=` and tfdist calls it under the scope."
            )

    def _resolve_optimizer(self, optimizer: Any) -> keras.optimizers.Optimizer:
        if isinstance(optimizer, str):
            return keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise TrainerError(
                f"Invalid value for argument `optimizer`. Received: {type(optimizer).__name__}. "
                "Pass a keras.optimizers.Optimizer or its name (e.g. 'adam')."
            )
        owner = keras_optimizer_build.strategy_of(optimizer)
        if owner is self.strategy:
            return optimizer
        default = default_strategy.is_default(owner)
        if default and not optimizer.built:
            # Created outside any scope and unused: an equivalent one made here is safe.
            return optimizer.__class__.from_config(optimizer.get_config())
        raise TrainerError(
            f"The optimizer {optimizer.name!r} belongs to another strategy "
            f"({type(owner).__name__}{', already built' if optimizer.built else ''}), not to the "
            f"{type(self.strategy).__name__} it would train under. Create it inside "
            "`with strategy.scope():` of this strategy, or pass its name (e.g. 'adam')."
        )

    # --- steps (replica context) ---------------------------------------------------------------

    @property
    def global_batch_size(self) -> int:
        if self.train_data is None:
            raise TrainerError("This trainer has no train_data.")
        return self.train_data.global_batch_size

    def per_example_loss(self, y_true: Any, y_pred: Any) -> tf.Tensor:
        """Per-example losses, shape `[batch]` (extra dimensions are averaged)."""
        fn = self._loss_fn
        if fn is None:  # an overridden step called it; __init__ allowed no loss for that step
            raise TrainerError(
                "This Trainer has no `loss`, but `per_example_loss` (or `compute_loss`) was "
                "called. Pass `loss=...`, or do not call them from an overridden step."
            )
        losses = fn.call(y_true, y_pred) if isinstance(fn, keras.losses.Loss) else fn(y_true, y_pred)
        losses = tf.convert_to_tensor(losses)
        if losses.shape.rank and losses.shape.rank > 1:
            losses = tf.reduce_mean(losses, axis=list(range(1, losses.shape.rank)))
        return losses

    def compute_loss(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> tf.Tensor:
        """This replica's share of the global mean loss (the value to differentiate).

        Averages over the *global* batch, so the gradients summed across replicas are those of
        the global mean; the model's regularization losses are divided by the replica count, so
        they are counted once in that sum.
        """
        loss = tf.nn.compute_average_loss(
            self.per_example_loss(y_true, y_pred),
            sample_weight=sample_weight,
            global_batch_size=self.global_batch_size,
        )
        if self.model.losses:
            loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
        return loss

    def train_step(self, inputs: Any) -> tf.Tensor:
        """One optimisation step on this replica's batch; override for full control.

        Args:
            inputs: This replica's batch, `(x, y)` or `(x, y, sample_weight)`.

        Returns:
            The loss that was differentiated (this replica's share of the global mean).
        """
        variables = self._differentiable_variables()

        def micro_step(batch: Any) -> tuple[tf.Tensor, list[Any]]:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            with tf.GradientTape() as tape:
                y_pred = self.model(x, training=True)
                # This micro-batch's share of the global mean: the micro-batches sum to it.
                loss = self.compute_loss(y, y_pred, sample_weight)
                # A LossScaleOptimizer (mixed_float16) multiplies here and divides in
                # apply_gradients; other optimizers return the loss unchanged.
                scaled_loss = self.optimizer.scale_loss(loss)
            for metric in self.train_metrics:
                metric.update_state(y, y_pred, sample_weight)
            return loss, tape.gradient(scaled_loss, variables)

        # With accumulation the micro-batches' gradients are summed here and reduced once.
        loss, grads = gradients_lib.accumulate(micro_step, inputs, self.accumulation_steps)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.train_loss.update_state(loss * self.strategy.num_replicas_in_sync)
        return loss

    def _differentiable_variables(self) -> list[Any]:
        """The trainable variables, each split across ps tasks replaced by its shards."""
        return keras_sharded_variables.differentiable(self.model.trainable_variables)

    def eval_step(self, inputs: Any) -> None:
        """Updates the evaluation loss and metrics on this replica's batch; override if needed."""
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(inputs)
        y_pred = self.model(x, training=False)
        self.eval_loss.update_state(self.per_example_loss(y, y_pred), sample_weight)
        for metric in self.eval_metrics:
            metric.update_state(y, y_pred, sample_weight)

    def _replica_train_step(self, inputs: Any) -> None:
        loss = self.train_step(inputs)
        if self._coordinator is not None:
            return  # the coordinator counts the steps of the functions that finished
        step = self.global_step.assign_add(1)
        first_bad = tf.logical_and(
            tf.logical_not(tf.reduce_all(tf.math.is_finite(loss))), self.nonfinite_step < 0
        )
        self.nonfinite_step.assign(tf.where(first_bad, step, self.nonfinite_step))

    # --- compiled loops (cross-replica context) ------------------------------------------------

    def _train_loop(self, iterator: Any, num_steps: tf.Tensor) -> None:
        for _ in tf.range(num_steps):
            self.strategy.run(self._replica_train_step, args=(next(iterator),))

    def _eval_loop(self, iterator: Any, num_steps: tf.Tensor) -> None:
        for _ in tf.range(num_steps):
            optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            self.strategy.run(self.eval_step, args=(optional.get_value(),))

    def _scheduled_train_loop(self, iterator: Any, num_steps: tf.Tensor) -> tf.Tensor:
        """One function scheduled on a worker: `num_steps` steps; returns the worker's index."""
        self._train_loop(iterator, num_steps)
        return tf.distribute.coordinator.experimental_get_current_worker_index()

    def train_loop(self, iterator: Any, num_steps: int) -> None:
        """Runs `num_steps` training steps in one `tf.function` call (no retracing per count)."""
        self._train_loop_fn(iterator, tf.constant(num_steps, tf.int64))

    def eval_loop(self, iterator: Any, num_steps: int | None = None) -> None:
        """Runs evaluation steps until the data ends or `num_steps` steps have run."""
        # Before the trace: __init__ lets a Trainer without `loss` through when train_step is
        # overridden, but the default eval_step needs one.
        if self._loss_fn is None and type(self).eval_step is Trainer.eval_step:
            raise TrainerError(
                "This Trainer has no `loss`, which the default `eval_step` needs. Pass "
                "`loss=...`, or override `eval_step` too."
            )
        self._eval_loop_fn(iterator, tf.constant(num_steps or _UNTIL_END, tf.int64))

    # --- results -------------------------------------------------------------------------------

    def train_results(self, reset: bool = True) -> dict[str, float]:
        """Training loss and metrics since the last reset (reads synchronise across workers)."""
        return self._results([self.train_loss, *self.train_metrics], reset)

    def eval_results(self, reset: bool = True) -> dict[str, float]:
        """Evaluation loss and metrics since the last reset."""
        return self._results([self.eval_loss, *self.eval_metrics], reset)

    def _results(self, metrics: Sequence[keras.metrics.Metric], reset: bool) -> dict[str, float]:
        results = {m.name: float(m.result()) for m in metrics}
        if reset:
            for m in metrics:
                m.reset_state()
        return results

    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))

    # --- the outer loop's interface (tfdist.outer_loop.TrainTarget / EvalTarget) ---------------

    def _train_input(self) -> Any:
        if self.train_data is None:
            raise TrainerError("This trainer has no train_data.")
        if self._train_iterator is None:
            # One iterator for the whole run: re-creating it would pay the teardown stall.
            if self._coordinator is not None:
                self._train_iterator = iter(data_lib.per_worker(self.strategy, self.train_data))
            else:
                self._train_iterator = iter(data_lib.distribute(
                    self.strategy, self.train_data, start_step=self._input_start_step))
        return self._train_iterator

    def _input_is_checkpointable(self) -> bool:
        """One replica on one worker: the input may be a plain, checkpointable `tf.data` iterator."""
        return (self._coordinator is None and self.strategy.num_replicas_in_sync == 1
                and strategy_workers.num_workers(self.strategy) == 1)

    def resume_input(self, step: int, *, position_restored: bool) -> None:
        """Moves the training input to global step `step` after a resume, unless it was restored.

        A checkpoint holds the input position only where TensorFlow can save it (a plain
        `tf.data` iterator: one replica, one worker); one written at another size, or by a
        distributed iterator, does not. Then the input starts where it would be after `step`
        steps at this size (`tfdist.data.skip_examples`), so the position follows the step:
        same epoch, same position in it, at the same global batch. A plain iterator is
        advanced by reading (its dataset must stay as checkpointed); a distributed one is
        built with the skip.
        """
        if position_restored or step <= 0 or self.train_data is None or self._coordinator is not None:
            return
        logging.info("tfdist.loop: the input resumes at step %d (%d examples in, at the global "
                     "batch of %d over %d replica(s))", step, step * self.global_batch_size,
                     self.global_batch_size, self.strategy.num_replicas_in_sync)
        if isinstance(self._train_iterator, tf.data.Iterator):
            _advance(self._train_iterator, tf.constant(step, tf.int64))
            return
        self.release_input()
        self._input_start_step = int(step)  # used when `train` builds the iterator

    def checkpoint_items(self, input_position: bool = True) -> dict[str, Any]:
        """Model, optimizer and global step, plus the training input position if `input_position`.

        The input position (with its shuffle buffer) is included where TensorFlow can
        checkpoint it: plain `tf.data` iterators (one replica, one worker).
        """
        items = dict(model=keras_sharded_variables.checkpointable(self.model),
                     optimizer=self.optimizer, global_step=self.global_step)
        if self.train_data is not None and input_position and self._input_is_checkpointable():
            iterator = self._train_input()
            if isinstance(iterator, tf.data.Iterator):
                items["train_input"] = iterator
        return items

    def train(self, num_steps: int) -> dict[str, float]:
        """Runs `num_steps` training steps; returns loss, metrics, steps/s and examples/s."""
        iterator = self._train_input()
        started = time.perf_counter()
        if self._coordinator is not None:
            self._schedule_and_join(iterator, num_steps)
        else:
            self.train_loop(iterator, num_steps)
        results = self.train_results()  # reading synchronises: the loop has finished
        elapsed = time.perf_counter() - started
        results["steps_per_sec"] = num_steps / elapsed
        results["examples_per_sec"] = num_steps * self.global_batch_size / elapsed
        return results

    def _schedule_and_join(self, iterator: Any, num_steps: int) -> None:
        """Schedules `num_steps` steps in functions of `steps_per_function`, joins, counts them."""
        assert self._coordinator is not None
        sizes = [self.steps_per_function] * (num_steps // self.steps_per_function)
        if num_steps % self.steps_per_function:
            sizes.append(num_steps % self.steps_per_function)
        # Traced (on the first call) with atomic metric and step updates: workers run at once.
        with keras_atomic_updates.atomic():
            scheduled = [(size, self._coordinator.schedule(
                self._scheduled_train_fn, args=(iterator, tf.constant(size, tf.int64))))
                for size in sizes]
        self._coordinator.join()  # raises if a function failed (e.g. a ps task is gone)
        for size, worker in scheduled:
            self.steps_by_worker[int(worker.fetch())] += size
        self.global_step.assign_add(num_steps)

    def first_nonfinite_step(self) -> int | None:
        if self._coordinator is not None:
            return None  # the outer loop checks the loop call's mean loss
        step = int(self.nonfinite_step.numpy())
        return step if step >= 0 else None

    def after_restore(self) -> None:
        self.nonfinite_step.assign(-1)
        self.train_results(reset=True)

    def evaluate(self, num_steps: int | None = None) -> dict[str, float]:
        """Evaluates on `eval_data` (to its end, or `num_steps` batches); returns loss and metrics."""
        if self.eval_data is None:
            raise TrainerError("This trainer has no eval_data.")
        if self._coordinator is not None:  # inline evaluation on the coordinator
            return self._evaluate_on_coordinator(num_steps)
        iterator = iter(data_lib.distribute(self.strategy, self.eval_data))
        self.eval_loop(iterator, num_steps)
        results = self.eval_results()
        data_lib.release_iterator(iterator)  # destroyed off this thread: no teardown stall
        del iterator
        return results

    def _evaluate_on_coordinator(self, num_steps: int | None) -> dict[str, float]:
        assert self.eval_data is not None
        if self._loss_fn is None and type(self).eval_step is Trainer.eval_step:
            raise TrainerError(
                "This Trainer has no `loss`, which the default `eval_step` needs. Pass "
                "`loss=...`, or override `eval_step` too."
            )
        dataset = data_lib.make_dataset(self.eval_data)
        if num_steps is not None:
            dataset = dataset.take(num_steps)
        if not hasattr(self, "_coordinator_eval_fn"):
            self._coordinator_eval_fn = tf.function(self.eval_step)
        for batch in dataset:
            self._coordinator_eval_fn(batch)
        return self.eval_results()

    def release_input(self) -> None:
        """Releases the training iterator (a later `train` makes a new one)."""
        if self._coordinator is not None:
            self._train_iterator = None  # a per-worker iterator: its workers own the pipelines
            return
        if self._train_iterator is not None:
            data_lib.release_iterator(self._train_iterator)
            self._train_iterator = None
