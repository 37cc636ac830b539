"""The TF "Multi-worker training with Estimator" tutorial program, ported to tfdist.estimator.

Same shape as the tutorial: an `input_fn(mode, input_context)` that shards by input pipeline, a
`model_fn` that builds a Keras CNN inside, `RunConfig(train_distribute=strategy)` and
`train_and_evaluate`. The data is scikit-learn's 8x8 digits instead of MNIST (no network here).

The porting edits, each marked `# PORT:` below (docs/estimator_migration.md lists them all):
1. `tf.estimator.X` -> `tfdist.estimator.X`;
2. the strategy comes from `tfdist.get_strategy()` (MultiWorkerMirroredStrategy on training
   tasks, the default strategy on the evaluator, where TF's own constructor fails);
3. `train_op=optimizer.minimize(loss, global_step)` -> `optimizer=keras optimizer`;
4. `tf.keras` spelled `keras` (optional: the same Keras 3 objects), so `Reduction.NONE` ->
   `reduction=None` (`keras.losses` has no `Reduction`; `tf.keras.losses.Reduction.NONE` works);
5. `tf.compat.v1.disable_eager_execution()` removed (Keras 3 and tfdist need eager execution).
Additions beyond the tutorial (not porting edits): an accuracy metric, an exporter, finite
`EvalSpec` delays, `repeat(EPOCHS)` so the run is long enough to learn, and a hook recording the
last step for the tests.

Usage: estimator_job.py MODEL_DIR OUT_DIR [EPOCHS]   (writes OUT_DIR/<task_type>-<task_id>.json)
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf
from input_pipelines import digits as digits_data

import tfdist
import tfdist.estimator  # PORT 1

BUFFER_SIZE = 10000
BATCH_SIZE = 32
LEARNING_RATE = 0.1
EPOCHS = 16  # 375 steps on 2 workers: test accuracy 0.85-0.91, far from chance either way
NUM_TRAIN = 1500


def _digits(mode):
    raw_images, target = digits_data.load_raw()
    images = raw_images[..., np.newaxis].astype(np.float32)
    labels = target.astype(np.int64)
    if mode == tfdist.estimator.ModeKeys.TRAIN:
        return images[:NUM_TRAIN], labels[:NUM_TRAIN]
    return images[NUM_TRAIN:], labels[NUM_TRAIN:]


def input_fn(mode, input_context=None):
    images, labels = _digits(mode)
    digits_dataset = tf.data.Dataset.from_tensor_slices((images, labels))

    def scale(image, label):
        image = tf.cast(image, tf.float32)
        image /= 16
        return image, label

    if input_context:
        digits_dataset = digits_dataset.shard(input_context.num_input_pipelines,
                                              input_context.input_pipeline_id)
    digits_dataset = digits_dataset.map(scale).cache().shuffle(BUFFER_SIZE)
    if mode == tfdist.estimator.ModeKeys.TRAIN:
        digits_dataset = digits_dataset.repeat(EPOCHS)
    return digits_dataset.batch(BATCH_SIZE)


def model_fn(features, labels, mode):
    model = keras.Sequential([  # PORT 4 (tf.keras -> keras)
        keras.layers.Conv2D(32, 3, activation='relu', input_shape=(8, 8, 1)),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation='relu'),
        keras.layers.Dense(10)
    ])
    logits = model(features, training=False)

    if mode == tfdist.estimator.ModeKeys.PREDICT:
        predictions = {'logits': logits, 'classes': tf.argmax(logits, axis=1)}
        return tfdist.estimator.EstimatorSpec(mode, predictions=predictions)

    optimizer = keras.optimizers.SGD(learning_rate=LEARNING_RATE)  # PORT 3
    loss = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=None)(labels, logits)  # PORT 4 (keras.losses has no Reduction)
    loss = tf.reduce_sum(loss) * (1. / BATCH_SIZE)
    if mode == tfdist.estimator.ModeKeys.EVAL:
        accuracy = keras.metrics.SparseCategoricalAccuracy(name='accuracy')
        accuracy.update_state(labels, logits)
        return tfdist.estimator.EstimatorSpec(mode, loss=loss,
                                              eval_metric_ops={'accuracy': accuracy})

    return tfdist.estimator.EstimatorSpec(
        mode=mode,
        loss=loss,
        optimizer=optimizer)  # PORT 3 (was train_op=optimizer.minimize(loss, global_step))


def serving_input_receiver_fn():
    images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 1], name='images')
    return tfdist.estimator.export.TensorServingInputReceiver(images, {'images': images})


class LastStepHook(tfdist.estimator.SessionRunHook):
    """Test instrumentation: the global step this worker reached."""

    step = None

    def before_run(self, run_context):
        return tfdist.estimator.SessionRunArgs('global_step')

    def after_run(self, run_context, run_values):
        LastStepHook.step = run_values.results


def main(model_dir, out_dir, epochs=EPOCHS):
    global EPOCHS
    EPOCHS = epochs
    strategy = tfdist.get_strategy()  # PORT 2 (was tf.distribute.experimental.MultiWorkerMirroredStrategy())
    config = tfdist.estimator.RunConfig(train_distribute=strategy, save_checkpoints_steps=100,
                                        save_summary_steps=20, log_step_count_steps=40)
    classifier = tfdist.estimator.Estimator(model_fn=model_fn, model_dir=model_dir, config=config)
    eval_result, exports = tfdist.estimator.train_and_evaluate(
        classifier,
        train_spec=tfdist.estimator.TrainSpec(input_fn=input_fn, hooks=[LastStepHook()]),
        eval_spec=tfdist.estimator.EvalSpec(
            input_fn=input_fn, steps=None, start_delay_secs=0, throttle_secs=0,
            exporters=[tfdist.estimator.FinalExporter('digits', serving_input_receiver_fn)]),
    )
    report = {
        'task': f'{config.task_type}-{config.task_id}',
        'eval_result': eval_result,
        'exports': exports,
        'latest_checkpoint': classifier.latest_checkpoint(),
        'last_step': LastStepHook.step,
    }
    with open(os.path.join(out_dir, f'{config.task_type}-{config.task_id}.json'), 'w') as f:
        json.dump(report, f, default=float)
    return report


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else EPOCHS)
