"""A user's script whose `fit` under a tfdist strategy ends in an uncaught NameError (a typo).

argv: MODE, one of
- `in_fit`: the typo is in a callback, so the exception escapes `fit` mid-epoch and its traceback
  keeps Keras's epoch iterator alive until the interpreter finalizes;
- `after_fit`: `fit` finishes, then the typo;
- `in_second_fit`: a first `fit` finishes (the iterator reaper is running), then `in_fit`.

The process must exit with Python's traceback status (1), as it does without tfdist.
"""

import sys

import keras
import numpy as np

import tfdist


class _Typo(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            undefined_name  # noqa: B018, F821 - the user's typo


def main(mode: str) -> None:
    strategy = tfdist.get_strategy("mirrored", virtual_cpus=2)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype(np.float32), np.arange(64) % 2
    if mode == "in_second_fit":
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    callbacks = [_Typo()] if mode in ("in_fit", "in_second_fit") else []
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=callbacks)
    if mode == "after_fit":
        undefined_name  # noqa: B018, F821


if __name__ == "__main__":
    main(sys.argv[1])
