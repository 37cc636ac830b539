"""TF's tutorial "Create an Estimator from a Keras model" (site/en/tutorials/estimator/
keras_model_to_estimator), written after its structure with the edits of docs/tutorials.md:
`tf.keras.estimator.model_to_estimator` -> `tfdist.estimator.model_to_estimator`. Offline:
scikit-learn's bundled Iris in place of `tfds.load('iris')` (same features, labels and
`as_supervised` pairs). Harness addition: a fixed seed (TUTORIAL_SEED, default 0), so the
loss the test asserts is not a draw.

argv = OUT_DIR (OUT_DIR/report.json).
"""

import sys
import tempfile

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_iris

import tfdist.estimator
from tests.tutorials._report import run_sections

TRAIN_STEPS = 200  # the tutorial: 500


def _iris_train():
    """What `tfds.load('iris', split='train', as_supervised=True)` gives: (features, label)."""
    iris = load_iris()
    order = np.random.default_rng(0).permutation(len(iris.target))
    return tf.data.Dataset.from_tensor_slices(
        (iris.data[order].astype(np.float32), iris.target[order].astype(np.int64)))


def keras_model_to_estimator(report):
    model = tf.keras.models.Sequential([
        tf.keras.layers.Dense(16, activation='relu', input_shape=(4,)),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(3)
    ])
    model.compile(loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer='adam')
    model.summary()

    def input_fn():
        dataset = _iris_train()
        dataset = dataset.map(lambda features, labels: ({'dense_input': features}, labels))
        dataset = dataset.batch(32).repeat()
        return dataset

    for features_batch, labels_batch in input_fn().take(1):
        print(features_batch)
        print(labels_batch)

    model_dir = tempfile.mkdtemp()
    keras_estimator = tfdist.estimator.model_to_estimator(keras_model=model, model_dir=model_dir)
    keras_estimator.train(input_fn=input_fn, steps=TRAIN_STEPS)
    eval_result = keras_estimator.evaluate(input_fn=input_fn, steps=10)
    print('Eval result: {}'.format(eval_result))
    report["eval_result"] = {k: float(v) for k, v in eval_result.items()}


if __name__ == "__main__":
    import os
    tf.keras.utils.set_random_seed(int(os.environ.get("TUTORIAL_SEED", "0")))
    run_sections(sys.argv[1], [("keras_model_to_estimator", keras_model_to_estimator)])
