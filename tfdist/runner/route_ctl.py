"""Route 1 adapter: train with `tfdist.loop` (Trainer + Controller)."""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import tensorflow as tf

from tfdist import data as data_lib
from tfdist import loop
from tfdist.runner import settings as settings_lib


def run(
    strategy: tf.distribute.Strategy,
    build_model: Callable[[], keras.Model],
    train_spec: data_lib.DataSpec,
    eval_spec: data_lib.DataSpec,
    settings: settings_lib.RouteSettings,
) -> settings_lib.RouteResult:
    """Trains with the custom loop, evaluating every `eval_every` steps; resumes from `model_dir`.

    On an `evaluator` task, evaluates each new checkpoint in `model_dir` instead, until the one
    at `train_steps`.

    Returns:
        The final evaluation and the last training metrics (`loss`, `accuracy`).
    """
    trainer = loop.Trainer(
        strategy=strategy, model=build_model,
        optimizer=settings_lib.optimizer(settings.learning_rate),  # built under the scope by Trainer
        loss=settings_lib.loss(), metrics=[settings_lib.accuracy()],
        train_data=None if settings.cluster.is_evaluator else train_spec, eval_data=eval_spec,
        gradients=settings.gradients,
    )
    with loop.Controller(
        trainer, model_dir=settings.model_dir, steps_per_loop=settings.steps_per_loop,
        checkpoint_every=settings.eval_every, cluster=settings.cluster,
        progress=settings.progress, export=False, on_nonfinite=settings.on_nonfinite,
        max_nonfinite_restores=settings.max_nonfinite_restores,
    ) as controller:
        start = controller.global_step
        if settings.cluster.is_evaluator:
            final = controller.evaluate_continuously(settings.train_steps)
            step = int(final.pop("global_step", start))
            return settings_lib.RouteResult(
                final=settings_lib.floats(final), train={}, start_step=start, steps=step,
                train_seconds=0.0)
        started = time.perf_counter()
        interval = settings.eval_every if settings.eval_every < settings.train_steps else None
        train = controller.train(settings.train_steps, eval_interval=interval)
        seconds = time.perf_counter() - started
        final = controller.final_evaluation(train)
        exports = controller.export()  # the chief's; {} elsewhere
    # Metrics only: the report computes throughput over the whole run itself.
    train = {k: v for k, v in train.items()
             if not k.startswith("eval_") and k not in ("steps_per_sec", "examples_per_sec")}
    final = {k: v for k, v in final.items() if k != "global_step"}
    return settings_lib.RouteResult(
        final=settings_lib.floats(final), train=settings_lib.floats(train), start_step=start,
        steps=controller.global_step, train_seconds=seconds, exports=exports)
