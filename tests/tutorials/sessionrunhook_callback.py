"""TF's guide "Migrate SessionRunHook to Keras callbacks" (site/en/guide/migrate/
sessionrunhook_callback), written after its structure with the edits of docs/tutorials.md:
`tf.compat.v1.estimator` / `tf.compat.v1.train.SessionRunHook` -> `tfdist.estimator`;
`tf.compat.v1.layers.Dense` -> `tf.keras.layers.Dense`; TF1 optimizer + `train_op` -> Keras
optimizer + `EstimatorSpec(optimizer=)`.

argv = OUT_DIR (OUT_DIR/report.json; the hook's and the callback's logged steps).
"""

import sys
import time
from datetime import datetime

import tensorflow as tf
import tensorflow.compat.v1 as tf1

import tfdist.estimator
from tests.tutorials._report import run_sections

features = [[1., 1.5], [2., 2.5], [3., 3.5]]
labels = [[0.3], [0.5], [0.7]]

LOGGED = {"hook": [], "callback": []}  # harness: the steps each one printed


def _input_fn():
    return tf1.data.Dataset.from_tensor_slices((features, labels)).batch(1).repeat(100)


def _model_fn(features, labels, mode):
    logits = tf.keras.layers.Dense(1)(features)
    loss = tf1.losses.mean_squared_error(labels=labels, predictions=logits)
    optimizer = tf.keras.optimizers.Adagrad(0.05)
    return tfdist.estimator.EstimatorSpec(mode, loss=loss, optimizer=optimizer)


class LoggerHook(tfdist.estimator.SessionRunHook):
    """Logs loss and runtime."""

    def begin(self):
        self._step = -1
        self._start_time = time.time()
        self.log_frequency = 10

    def before_run(self, run_context):
        self._step += 1

    def after_run(self, run_context, run_values):
        if self._step % self.log_frequency == 0:
            current_time = time.time()
            duration = current_time - self._start_time
            self._start_time = current_time
            examples_per_sec = self.log_frequency / duration
            print('Time:', datetime.now(), ', Step #:', self._step,
                  ', Examples per second:', examples_per_sec)
            LOGGED["hook"].append(self._step)


def estimator_section(report):
    estimator = tfdist.estimator.Estimator(model_fn=_model_fn)
    estimator.train(_input_fn, hooks=[LoggerHook()])
    report.update(global_step=int(estimator.get_variable_value("global_step")),
                  logged=LOGGED["hook"])


class CustomCallback(tf.keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
        self._step = -1
        self._start_time = time.time()
        self.log_frequency = 10

    def on_train_batch_begin(self, batch, logs=None):
        self._step += 1

    def on_train_batch_end(self, batch, logs=None):
        if self._step % self.log_frequency == 0:
            current_time = time.time()
            duration = current_time - self._start_time
            self._start_time = current_time
            examples_per_sec = self.log_frequency / duration
            print('Time:', datetime.now(), ', Step #:', self._step,
                  ', Examples per second:', examples_per_sec)
            LOGGED["callback"].append(self._step)


def keras_section(report):
    callback = CustomCallback()
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1).repeat(100)
    model = tf.keras.models.Sequential([tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.Adagrad(learning_rate=0.05)
    model.compile(optimizer, "mse")
    result = model.fit(dataset, callbacks=[callback], verbose=0)
    report.update(history=result.history, logged=LOGGED["callback"],
                  iterations=int(model.optimizer.iterations.numpy()))


if __name__ == "__main__":
    run_sections(sys.argv[1], [("estimator", estimator_section), ("keras", keras_section)])
