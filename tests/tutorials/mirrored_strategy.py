"""TF's guide "Migrate single-worker multiple-GPU training" (site/en/guide/migrate/
mirrored_strategy), written after its structure with the edits of docs/tutorials.md:
`tf.compat.v1.estimator` -> `tfdist.estimator`; `tf.compat.v1.layers.Dense` ->
`tf.keras.layers.Dense`; `tf.compat.v1.distribute.MirroredStrategy` -> `tf.distribute.MirroredStrategy`;
TF1 optimizer + `train_op` -> Keras optimizer + `EstimatorSpec(optimizer=)`.
On this CPU-only machine `MirroredStrategy()` has one replica; the
tests also run it over 2 logical CPUs (TUTORIAL_LOGICAL_CPUS=2, a harness addition).

argv = OUT_DIR (OUT_DIR/report.json).
"""

import os
import sys

import tensorflow as tf

if os.environ.get("TUTORIAL_LOGICAL_CPUS"):  # harness: several replicas on one CPU
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * int(os.environ["TUTORIAL_LOGICAL_CPUS"]))

import tensorflow.compat.v1 as tf1  # noqa: E402

import tfdist.estimator  # noqa: E402
from tests.tutorials._report import run_sections  # noqa: E402

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
    strategy = tf.distribute.MirroredStrategy()
    config = tfdist.estimator.RunConfig(train_distribute=strategy, eval_distribute=strategy)
    estimator = tfdist.estimator.Estimator(model_fn=_model_fn, config=config)
    train_spec = tfdist.estimator.TrainSpec(input_fn=_input_fn)
    eval_spec = tfdist.estimator.EvalSpec(input_fn=_eval_input_fn)
    result, _ = tfdist.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    report.update(replicas=strategy.num_replicas_in_sync, evaluate=result)


def keras_section(report):
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(1)
    eval_dataset = tf.data.Dataset.from_tensor_slices((eval_features, eval_labels)).batch(1)
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        model = tf.keras.models.Sequential([tf.keras.layers.Dense(1)])
        optimizer = tf.keras.optimizers.Adagrad(learning_rate=0.05)
    model.compile(optimizer=optimizer, loss='mse')
    model.fit(dataset)
    report.update(replicas=strategy.num_replicas_in_sync,
                  evaluate=model.evaluate(eval_dataset, return_dict=True),
                  iterations=int(model.optimizer.iterations.numpy()))


if __name__ == "__main__":
    run_sections(sys.argv[1], [("estimator", estimator_section), ("keras", keras_section)])
