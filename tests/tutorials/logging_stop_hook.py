"""TF's guide "Migrate LoggingTensorHook and StopAtStepHook to Keras callbacks" (site/en/guide/
migrate/logging_stop_hook), written after its structure with the edits of docs/tutorials.md:

- `tf.compat.v1.estimator.X`, `tf.compat.v1.train.{StopAtStepHook,LoggingTensorHook}` ->
  `tfdist.estimator.X` (tf.estimator is gone from TF 2.16 on);
- `tf.compat.v1.layers.Dense` -> `tf.keras.layers.Dense` (gone with Keras 3);
- `tf.compat.v1.train.AdagradOptimizer` + `train_op=optimizer.minimize(loss, global_step)` ->
  `tf.keras.optimizers.Adagrad` + `EstimatorSpec(optimizer=...)`.

argv = OUT_DIR: the steps trained and the lines each section logged go to OUT_DIR/report.json.
"""

import json
import logging as std_logging
import os
import sys

import tensorflow as tf
import tensorflow.compat.v1 as tf1
from absl import logging

import tfdist.estimator

features = [[1., 1.5], [2., 2.5], [3., 3.5]]
labels = [[0.3], [0.5], [0.7]]


# Define an input function.
def _input_fn():
    return tf1.data.Dataset.from_tensor_slices((features, labels)).batch(1)


def _model_fn(features, labels, mode):
    dense = tf.keras.layers.Dense(1)
    logits = dense(features)
    loss = tf1.losses.mean_squared_error(labels=labels, predictions=logits)
    optimizer = tf.keras.optimizers.Adagrad(0.05)

    # Define the stop hook.
    stop_hook = tfdist.estimator.StopAtStepHook(num_steps=2)

    # Access tensors to be logged by names.
    kernel_name = tf.identity(dense.weights[0])
    bias_name = tf.identity(dense.weights[1])
    logging_weight_hook = tfdist.estimator.LoggingTensorHook(
        tensors=[kernel_name, bias_name], every_n_iter=1)
    # Log the training loss by the tensor object.
    logging_loss_hook = tfdist.estimator.LoggingTensorHook(
        {'loss from LoggingTensorHook': loss}, every_n_secs=3)

    # Pass all hooks to `EstimatorSpec`.
    return tfdist.estimator.EstimatorSpec(mode, loss=loss, optimizer=optimizer,
                                          training_hooks=[stop_hook, logging_weight_hook,
                                                          logging_loss_hook])


class StopAtStepCallback(tf.keras.callbacks.Callback):
    def __init__(self, stop_step=None):
        super().__init__()
        self._stop_step = stop_step

    def on_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations >= self._stop_step:
            self.model.stop_training = True
            print('\nstop training now')


class LoggingTensorCallback(tf.keras.callbacks.Callback):
    def __init__(self, every_n_iter):
        super().__init__()
        self._every_n_iter = every_n_iter
        self._log_count = every_n_iter

    def on_batch_end(self, batch, logs=None):
        if self._log_count > 0:
            self._log_count -= 1
            print("Logging Tensor Callback: dense/kernel:", model.layers[0].weights[0])
            print("Logging Tensor Callback: dense/bias:", model.layers[0].weights[1])
            print("Logging Tensor Callback loss:", logs["loss"])
        else:
            self._log_count -= self._every_n_iter


class _Lines(std_logging.Handler):
    """Harness: keeps what absl logs (where tfdist's LoggingTensorHook writes)."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main(out_dir):
    global model
    report = {}
    logging.set_verbosity(logging.INFO)
    lines = _Lines()
    logging.get_absl_logger().addHandler(lines)
    try:
        estimator = tfdist.estimator.Estimator(model_fn=_model_fn)
        # Begin training.
        # The training will stop after 2 steps, and the weights/loss will also be logged.
        estimator.train(_input_fn)
        report["estimator"] = {"global_step": int(estimator.get_variable_value("global_step")),
                               "logged": list(lines.lines)}
    except Exception as e:  # noqa: BLE001 - report it, run the Keras part, then fail
        message = [line.strip() for line in str(e).splitlines() if line.strip()]
        report["estimator"] = {"error": f"{type(e).__name__}: {message[-1] if message else ''}"}

    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1)
    model = tf.keras.models.Sequential([tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.Adagrad(learning_rate=0.05)
    model.compile(optimizer, "mse")

    # Begin training.
    # The training will stop after 2 steps, and the weights/loss will also be logged.
    model.fit(dataset, callbacks=[StopAtStepCallback(stop_step=2),
                                  LoggingTensorCallback(every_n_iter=2)])
    report["keras"] = {"iterations": int(model.optimizer.iterations.numpy())}
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if "error" in report["estimator"]:
        sys.exit(1)


if __name__ == '__main__':
    main(sys.argv[1])
