"""TF's guide "Migrate from Estimator to Keras APIs" (site/en/guide/migrate/migrating_estimator),
written after its structure with the edits of docs/tutorials.md: `tf.compat.v1.estimator` ->
`tfdist.estimator`; `tf.compat.v1.layers.Dense` -> `tf.keras.layers.Dense`;
`tf.compat.v1.train.AdagradOptimizer` + `train_op=optimizer.minimize(...)` ->
`tf.keras.optimizers.Adagrad` + `EstimatorSpec(optimizer=...)`.

argv = OUT_DIR (OUT_DIR/report.json).
"""

import sys

import tensorflow as tf
import tensorflow.compat.v1 as tf1

import tfdist.estimator
from tests.tutorials._report import run_sections

features = [[1., 1.5], [2., 2.5], [3., 3.5]]
labels = [[0.3], [0.5], [0.7]]
eval_features = [[4., 4.5], [5., 5.5], [6., 6.5]]
eval_labels = [[0.8], [0.9], [1.]]


def _input_fn():
    return tf1.data.Dataset.from_tensor_slices((features, labels)).batch(1)


def _eval_input_fn():
    return tf1.data.Dataset.from_tensor_slices((eval_features, eval_labels)).batch(1)


def _model_fn(features, labels, mode):
    logits = tf.keras.layers.Dense(1)(features)
    loss = tf1.losses.mean_squared_error(labels=labels, predictions=logits)
    optimizer = tf.keras.optimizers.Adagrad(0.05)
    return tfdist.estimator.EstimatorSpec(mode, loss=loss, optimizer=optimizer)


def estimator_section(report):
    estimator = tfdist.estimator.Estimator(model_fn=_model_fn)
    estimator.train(_input_fn)
    report["evaluate"] = estimator.evaluate(_eval_input_fn)


def keras_section(report):
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1)
    eval_dataset = tf.data.Dataset.from_tensor_slices((eval_features, eval_labels)).batch(1)
    model = tf.keras.models.Sequential([tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.Adagrad(learning_rate=0.05)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(dataset)
    report["evaluate"] = model.evaluate(eval_dataset, return_dict=True)
    report["iterations"] = int(model.optimizer.iterations.numpy())


class CustomModel(tf.keras.Sequential):
    """A custom sequential model that overrides `Model.train_step`."""

    def train_step(self, data):
        batch_data, labels = data
        with tf.GradientTape() as tape:
            predictions = self(batch_data, training=True)
            # Compute the loss value (the loss function is configured in `Model.compile`).
            loss = self.compiled_loss(labels, predictions)
        # Compute the gradients of the parameters with respect to the loss.
        gradients = tape.gradient(loss, self.trainable_variables)
        # Perform gradient descent by updating the weights/parameters.
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        # Update the metrics (includes the metric that tracks the loss).
        self.compiled_metrics.update_state(labels, predictions)
        # Return a dict mapping metric names to the current values.
        return {m.name: m.result() for m in self.metrics}


def custom_train_step_section(report):
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1)
    eval_dataset = tf.data.Dataset.from_tensor_slices((eval_features, eval_labels)).batch(1)
    model = CustomModel([tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.Adagrad(learning_rate=0.05)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(dataset)
    report["evaluate"] = model.evaluate(eval_dataset, return_dict=True)
    report["iterations"] = int(model.optimizer.iterations.numpy())


if __name__ == "__main__":
    run_sections(sys.argv[1], [("estimator", estimator_section), ("keras", keras_section),
                               ("custom_train_step", custom_train_step_section)])
