"""The Keras part of TF's guide "Migrate evaluation" (site/en/guide/migrate/evaluator), written
after its structure with the edits of docs/tutorials.md: `ModelCheckpoint` file name
`ckpt-{epoch}` -> `ckpt-{epoch}.weights.h5` (Keras 3 names the format by the suffix);
`tf.keras.utils.SidecarEvaluator` -> `tfdist.keras.SidecarEvaluator` (Keras 3 has none).
Offline and small: random 28x28 "images" in place of MNIST.

argv = OUT_DIR (OUT_DIR/report.json).
"""

import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

import tfdist
from tests.tutorials._report import run_sections

rng = np.random.default_rng(0)
x_train = rng.random((320, 28, 28), dtype=np.float32)
y_train = rng.integers(0, 10, size=320).astype(np.int64)
x_test = rng.random((128, 28, 28), dtype=np.float32)
y_test = rng.integers(0, 10, size=128).astype(np.int64)


def create_model():
    return tf.keras.models.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(512, activation='relu'),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(10)
    ])


def keras_section(report):
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = create_model()
    model.compile(optimizer='adam', loss=loss, metrics=['accuracy'], steps_per_execution=10,
                  run_eagerly=True)
    log_dir = tempfile.mkdtemp()
    model_checkpoint = tf.keras.callbacks.ModelCheckpoint(
        filepath=os.path.join(log_dir, 'ckpt-{epoch}.weights.h5'), save_weights_only=True)
    model.fit(x=x_train, y=y_train, epochs=1, callbacks=[model_checkpoint])

    data = tf.data.Dataset.from_tensor_slices((x_test, y_test))
    data = data.batch(64)
    evaluator = tfdist.keras.SidecarEvaluator(
        model=model, data=data, checkpoint_dir=log_dir, max_evaluations=1)
    results = evaluator.start()
    report.update(results=results, evaluated=[n for n, _ in evaluator.evaluated],
                  expected=model.evaluate(data, return_dict=True, verbose=0),
                  summaries=sorted(os.listdir(os.path.join(log_dir, "eval"))))


if __name__ == "__main__":
    run_sections(sys.argv[1], [("keras", keras_section)])
