"""Trains one small digits model four ways on a 2-worker cluster (tests/test_gradients_multiworker.py).

Usage: gradients_job.py OUT_DIR STEPS. Runs, one after another on the same strategy, data and
initial weights: the custom loop as is (`base`), with bfloat16 gradients on the wire (`bf16`),
with 4 micro-batches per step (`accum4`), and Keras `fit` with both (`fit_accum4_bf16`).
Writes OUT_DIR/<task>-<id>.json: per run, the held-out accuracy and the final weights.
"""

import json
import sys

import keras
import numpy as np
import tensorflow as tf
from input_pipelines import digits

import tfdist
from tfdist import data, gradients

BATCH = 64


def _build():
    keras.utils.set_random_seed(7)
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(10)])


def main(out_dir: str, steps: int) -> None:
    strategy = tfdist.get_strategy("multi_worker_mirrored")
    info = tfdist.cluster.resolve()
    images, y = digits.load_raw()
    x = images.reshape(len(y), -1)
    x = (x / 16.0).astype("float32")
    y = y.astype("int32")
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    def spec(accumulation_steps=1):
        source = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        return data.DataSpec(source, global_batch_size=BATCH, seed=1,
                             accumulation_steps=accumulation_steps)

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loop(accumulation_steps=1, options=None):
        trainer = tfdist.loop.Trainer(
            strategy=strategy, model=_build, optimizer=keras.optimizers.SGD(0.2), loss=loss,
            train_data=spec(accumulation_steps), gradients=options)
        trainer.train(steps)
        return trainer.model

    def fit(accumulation_steps, options):
        train = spec(accumulation_steps)
        with strategy.scope():
            model = _build()
            model.compile(keras.optimizers.SGD(0.2), loss, steps_per_execution=5)
        tfdist.keras.gradients.configure(model, gradients=options, data=train)
        model.fit(data.for_fit(strategy, train), epochs=1, steps_per_epoch=steps, verbose=0)
        assert int(model.optimizer.iterations.numpy()) == steps
        return model

    bf16 = gradients.GradientOptions(compression="bfloat16")
    models = {
        "base": loop(),
        "bf16": loop(options=bf16),
        "accum4": loop(accumulation_steps=4),
        "fit_accum4_bf16": fit(4, bf16),
    }
    report = {}
    for name, model in models.items():
        logits = model(x_test, training=False)
        accuracy = float(np.mean(np.argmax(keras.ops.convert_to_numpy(logits), -1) == y_test))
        report[name] = {"accuracy": accuracy,
                        "weights": [w.ravel().tolist() for w in model.get_weights()]}
    with open(f"{out_dir}/{info.task_type}-{info.task_id}.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
