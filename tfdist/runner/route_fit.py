"""Route 2 adapter: train with plain Keras `Model.fit` (tfdist's fixes applied by the strategy)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from tfdist import export as export_lib
from tfdist import data as data_lib
from tfdist.keras import callbacks as callbacks_lib
from tfdist.keras import gradients as keras_gradients
from tfdist.runner import settings as settings_lib


class _StopAtStep(keras.callbacks.Callback):
    """Ends `fit` once the optimizer has taken `steps` steps, in its last epoch (which may be short).

    Reads the step counter only in the last epoch: a read waits for the step to finish. Also
    records `start_step`, the step `fit` starts from (after a `BackupAndRestore` listed before it
    has restored).
    """

    def __init__(self, steps: int, last_epoch: int) -> None:
        super().__init__()
        self.steps = steps
        self.last_epoch = last_epoch
        self.start_step = 0
        self._in_last_epoch = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.start_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._in_last_epoch = epoch == self.last_epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._in_last_epoch and int(self.model.optimizer.iterations.numpy()) >= self.steps:
            self.model.stop_training = True  # same step count on every worker: all stop together


def run(
    strategy: tf.distribute.Strategy,
    build_model: Callable[[], keras.Model],
    train_spec: data_lib.DataSpec,
    eval_spec: data_lib.DataSpec,
    settings: settings_lib.RouteSettings,
) -> settings_lib.RouteResult:
    """Trains with `fit`, one epoch per `eval_every` steps (validated after each), then evaluates.

    `steps_per_loop` becomes `steps_per_execution`. A `BackupAndRestore` in `model_dir/backup`
    lets a restarted job (e.g. `tfdist-launch --max-restarts`) resume mid-run; it is deleted when
    `fit` succeeds, so a finished `model_dir` trains again from scratch. (An evaluator task is
    refused before any route runs: `options.check_cluster`.)
    """
    interval = min(settings.eval_every, settings.train_steps)
    remainder = settings.train_steps % interval
    epochs = settings.train_steps // interval + bool(remainder)  # the last one may end early
    with strategy.scope():
        model = build_model()
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate), loss=settings_lib.loss(),
            metrics=[settings_lib.accuracy()],
            steps_per_execution=_steps_per_execution(settings.steps_per_loop, interval, remainder),
        )
    keras_gradients.configure(model, gradients=settings.gradients, data=train_spec)
    train_data = data_lib.for_fit(strategy, train_spec)
    eval_data = data_lib.for_fit(strategy, eval_spec)
    chief = settings.cluster.is_chief
    verbose = (1 if sys.stdout.isatty() else 2) if settings.progress and chief else 0
    backup = callbacks_lib.BackupAndRestore(
        os.path.join(settings.model_dir, "backup"), cluster=settings.cluster,
        on_nonfinite=settings.on_nonfinite, max_nonfinite_restores=settings.max_nonfinite_restores)
    started = time.perf_counter()
    # One `fit` call, so the backup covers every step (a second call for the remainder would start
    # without it: the first call deletes the backup when it ends).
    stop = _StopAtStep(settings.train_steps, last_epoch=epochs - 1)
    history = model.fit(
        train_data, epochs=epochs, steps_per_epoch=interval, callbacks=[backup, stop],
        verbose=verbose, shuffle=False,  # the data layer shuffles
        validation_data=eval_data if interval < settings.train_steps else None,
    )
    seconds = time.perf_counter() - started
    validated = {k[len("val_"):]: v[-1] for k, v in history.history.items() if k.startswith("val_")}
    # Keras validated after the last (possibly stopped) epoch too: that is the final evaluation.
    final = validated or model.evaluate(eval_data, return_dict=True, verbose=0)
    train = {k: v[-1] for k, v in history.history.items() if not k.startswith("val_")}
    exports = export_lib.export_model(model, settings.model_dir, cluster=settings.cluster)
    steps = int(model.optimizer.iterations.numpy())
    return settings_lib.RouteResult(
        final=settings_lib.floats(final), train=settings_lib.floats(train),
        start_step=stop.start_step, steps=steps, train_seconds=seconds, exports=exports)


def _steps_per_execution(steps_per_loop: int, *epoch_lengths: int) -> int:
    """The largest count <= `steps_per_loop` that divides every epoch length.

    Keras 3.15 runs whole executions: `steps_per_epoch=50` with `steps_per_execution=20` trains
    60 steps per epoch, so the execution size must divide the epoch.
    """
    lengths = [n for n in epoch_lengths if n]
    return next(d for d in range(min(steps_per_loop, *lengths), 0, -1)
                if all(n % d == 0 for n in lengths))
