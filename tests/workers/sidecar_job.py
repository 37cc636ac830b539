"""A 2-worker `fit` job that saves `ckpt-{epoch}.weights.h5` files, plus an evaluator task
running `tfdist.keras.SidecarEvaluator` on them (the shape of TF's guide
site/en/guide/migrate/evaluator, its Keras part, on small synthetic data).

argv = OUT_DIR. Checkpoints go to OUT_DIR/ckpt; the evaluator writes OUT_DIR/evaluator.json.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

import tfdist
from tfdist.keras.callbacks import ModelCheckpoint

EPOCHS = 3


def build_model():
    model = keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(4),
    ])
    model.compile(optimizer="adam",
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def make_data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (np.argmax(x[:, :4], axis=1)).astype("int64")
    return x, y


def eval_data():
    return tf.data.Dataset.from_tensor_slices(make_data(128, seed=1)).batch(32)


def main(out_dir):
    info = tfdist.cluster.resolve()
    ckpt_dir = os.path.join(out_dir, "ckpt")
    keras.utils.set_random_seed(0)
    if info.is_evaluator:
        evaluator = tfdist.keras.SidecarEvaluator(build_model(), eval_data(), ckpt_dir,
                                                  poll_secs=0.2)
        results = evaluator.start()
        with open(os.path.join(out_dir, "evaluator.json"), "w") as f:
            json.dump({"results": results, "evaluated": [n for n, _ in evaluator.evaluated]}, f)
        return
    strategy = tfdist.get_strategy()
    with strategy.scope():
        model = build_model()
    x, y = make_data(512, seed=0)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=0).repeat().batch(64)
    saver = ModelCheckpoint(os.path.join(ckpt_dir, "ckpt-{epoch}.weights.h5"),
                            save_weights_only=True)
    model.fit(train, epochs=EPOCHS, steps_per_epoch=20, callbacks=[saver], verbose=0)


if __name__ == "__main__":
    main(sys.argv[1])
