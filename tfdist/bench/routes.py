"""The five training routes, each built once and then timed many times on the same workload.

Every builder returns a `Route`: `run(steps)` trains `steps` more steps and returns the wall time
(the work is finished when it returns), and `first_call_seconds` is the time from the start of
the route's construction (model, optimizer, data, loop objects) to the end of its first call,
tracing included. All routes use the same model, SGD(0.01), cross-entropy on logits, the same
global batch and the same in-memory data (no shuffling), so only the route differs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfdist import data as data_lib
from tfdist import estimator as estimator_lib
from tfdist import gradients as gradients_lib
from tfdist import keras as tfdist_keras
from tfdist import loop as loop_lib
from tfdist.bench.options import WireVariant
from tfdist.bench.workloads import Workload
from tfdist.compat import keras_gradient_reduction

LEARNING_RATE = 0.01


@dataclasses.dataclass(frozen=True)
class Route:
    """One built route.

    Attributes:
        run: `run(steps) -> seconds`: trains `steps` steps (a multiple of the steps per call).
        first_call_seconds: Construction start to the end of the first call (tracing included).
        first_call_steps: Steps that first call ran: 1, or one whole execution for `fit`
            (Keras runs whole `steps_per_execution` blocks).
    """

    run: Callable[[int], float]
    first_call_seconds: float
    first_call_steps: int


@dataclasses.dataclass(frozen=True)
class RouteConfig:
    """What every route builder needs besides the strategy and the workload.

    Attributes:
        batch: Global batch size.
        steps_per_call: Steps per `tf.function` call.
        model_dir: A directory for this route's checkpoints (ctl, estimator); shared by all
            workers of a multi-worker run.
        gradients: How gradients are all-reduced; `None` for TensorFlow's own reduction.
        accumulation_steps: Micro-batches per step (the global batch stays `batch`).
    """

    batch: int
    steps_per_call: int
    model_dir: str
    gradients: gradients_lib.GradientOptions | None = None
    accumulation_steps: int = 1

    def spec(self, workload: Workload) -> data_lib.DataSpec:
        """The workload's data at this batch, with this accumulation."""
        return dataclasses.replace(workload.spec(self.batch),
                                   accumulation_steps=self.accumulation_steps)


def _loss() -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _timed(fn: Callable[[int], Any], sync: Callable[[], Any]) -> Callable[[int], float]:
    def run(steps: int) -> float:
        started = time.perf_counter()
        fn(steps)
        sync()
        return time.perf_counter() - started
    return run


def _first(started: float, run: Callable[[int], float], steps: int) -> Route:
    run(steps)
    return Route(run=run, first_call_seconds=time.perf_counter() - started,
                 first_call_steps=steps)


def _sync_on(model: keras.Model) -> Callable[[], Any]:
    # Reading a weight waits for every update queued before it.
    return lambda: keras.ops.convert_to_numpy(model.trainable_variables[-1].value)


def reference(strategy: tf.distribute.Strategy, workload: Workload, config: RouteConfig) -> Route:
    """(a) The minimal hand-written `strategy.run` loop: the yardstick.

    One iterator for the whole run (no teardown stall), `steps_per_call` steps per `tf.function`
    call as a `tf.range` loop, `tf.nn.compute_average_loss` over the global batch.
    """
    started = time.perf_counter()
    spec = config.spec(workload)
    with strategy.scope():
        model = workload.build()
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
        optimizer.build(model.trainable_variables)  # before tracing (FINDINGS §3)
    keras_gradient_reduction.configure(optimizer, config.gradients)
    iterator = iter(data_lib.distribute(strategy, spec))
    loss = _loss()

    def micro_step(inputs: Any) -> tuple[tf.Tensor, list[Any]]:
        features, labels = inputs
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            value = tf.nn.compute_average_loss(loss.call(labels, logits),
                                               global_batch_size=config.batch)
        return value, tape.gradient(value, model.trainable_variables)

    def step(inputs: Any) -> None:
        _, grads = gradients_lib.accumulate(micro_step, inputs, config.accumulation_steps)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def loop(n: tf.Tensor) -> None:
        for _ in tf.range(n):
            strategy.run(step, args=(next(iterator),))

    def train(steps: int) -> None:
        if steps < config.steps_per_call:
            loop(tf.constant(steps))
            return
        for _ in range(steps // config.steps_per_call):
            loop(tf.constant(config.steps_per_call))

    return _first(started, _timed(train, _sync_on(model)), 1)


def ctl(strategy: tf.distribute.Strategy, workload: Workload, config: RouteConfig) -> Route:
    """(b) tfdist's custom loop, end to end through `Controller.train` (its final save included).

    Progress bar, summaries, export and the SIGTERM handler are off; periodic checkpoints are
    off, but `Controller.train` always saves once when it reaches its target step.
    """
    started = time.perf_counter()
    trainer = loop_lib.Trainer(
        strategy=strategy, model=workload.build, optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=_loss(), train_data=config.spec(workload), gradients=config.gradients)
    controller = loop_lib.Controller(
        trainer, model_dir=config.model_dir, steps_per_loop=config.steps_per_call,
        checkpoint_every=10**9, progress=False, summaries=False, export=False,
        handle_preemption=False)

    def train(steps: int) -> None:
        controller.train(controller.global_step + steps)

    return _first(started, _timed(train, _sync_on(trainer.model)), 1)


def _compiled(strategy: tf.distribute.Strategy, workload: Workload,
              steps_per_execution: int) -> keras.Model:
    with strategy.scope():
        model = workload.build()
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss=_loss(),
                      steps_per_execution=steps_per_execution)
    return model


def fit(strategy: tf.distribute.Strategy, workload: Workload, config: RouteConfig) -> Route:
    """(c) tfdist's fit route: `steps_per_execution`, data from `tfdist.data.for_fit`.

    Each timed call is one `fit(epochs=1, steps_per_epoch=steps)` call, so Keras's per-call costs
    (callbacks, iterator creation and teardown) are included, as a user pays them.
    """
    started = time.perf_counter()
    model = _compiled(strategy, workload, config.steps_per_call)
    spec = config.spec(workload)
    tfdist_keras.gradients.configure(model, gradients=config.gradients, data=spec)
    dataset = data_lib.for_fit(strategy, spec)

    def train(steps: int) -> None:
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    # Keras runs whole executions, so the first call is one execution.
    return _first(started, _timed(train, _sync_on(model)), config.steps_per_call)


def keras_fit(strategy: tf.distribute.Strategy, workload: Workload, config: RouteConfig) -> Route:
    """(d) Plain Keras `fit` as users write it: one step per call, a plain batched dataset.

    Keras distributes the dataset itself (auto-sharding under multi-worker). tfdist's
    process-wide Keras fixes (`tfdist.compat`, installed by `tfdist.get_strategy`) are in force.
    """
    started = time.perf_counter()
    model = _compiled(strategy, workload, 1)
    dataset = tf.data.Dataset.from_tensor_slices((workload.features, workload.labels))
    dataset = dataset.repeat().batch(config.batch).prefetch(tf.data.AUTOTUNE)

    def train(steps: int) -> None:
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)

    return _first(started, _timed(train, _sync_on(model)), 1)


def estimator(strategy: tf.distribute.Strategy, workload: Workload, config: RouteConfig) -> Route:
    """(e) The Estimator-style route: `Estimator.train(input_fn, steps=N)` per timed call.

    `RunConfig(train_distribute=strategy, steps_per_loop=steps_per_call)` with summaries, step
    logs and periodic checkpoints off. Like `tf.estimator`, every `train` call builds its input
    pipeline, restores the newest checkpoint and saves one at the end.
    """
    started = time.perf_counter()
    spec = config.spec(workload)
    per_example = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

    def model_fn(features: Any, labels: Any, mode: str) -> estimator_lib.EstimatorSpec:
        logits = workload.build()(features, training=True)
        loss = tf.reduce_mean(per_example(labels, logits))
        return estimator_lib.EstimatorSpec(
            mode, loss=loss, optimizer=keras.optimizers.SGD(LEARNING_RATE))

    run_config = estimator_lib.RunConfig(
        model_dir=config.model_dir, train_distribute=strategy, steps_per_loop=config.steps_per_call,
        save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=None,
        log_step_count_steps=None, gradients=config.gradients,
        accumulation_steps=config.accumulation_steps)
    est = estimator_lib.Estimator(model_fn=model_fn, config=run_config)
    input_fn = data_lib.input_fn(spec)

    def train(steps: int) -> None:
        est.train(input_fn, steps=steps)

    return _first(started, _timed(train, lambda: None), 1)


BUILDERS: dict[str, Callable[[tf.distribute.Strategy, Workload, RouteConfig], Route]] = {
    "reference": reference,
    "ctl": ctl,
    "fit": fit,
    "keras_fit": keras_fit,
    "estimator": estimator,
}


def build(name: str, strategy: tf.distribute.Strategy, workload: Workload, batch: int,
          steps_per_call: int, work_dir: str, wire: WireVariant | None = None) -> Route:
    """Builds route `name` and runs its first call.

    Args:
        name: A `BUILDERS` name.
        strategy: The strategy to train under.
        workload: The model and data.
        batch: Global batch size.
        steps_per_call: Steps per `tf.function` call.
        work_dir: Checkpoints go to `work_dir/<name>`.
        wire: Gradient levers (compression, packing, accumulation). Defaults to none.
    """
    model_dir = os.path.join(work_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    config = RouteConfig(batch, steps_per_call, model_dir)
    if wire is not None:
        options = gradients_lib.GradientOptions(
            compression=wire.compression, loss_scale=wire.loss_scale,
            bytes_per_pack=wire.bytes_per_pack, flat=wire.flat)
        config = dataclasses.replace(config, gradients=None if options.is_default else options,
                                     accumulation_steps=wire.accumulation_steps)
    return BUILDERS[name](strategy, workload, config)
