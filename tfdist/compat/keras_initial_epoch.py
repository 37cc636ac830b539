"""Workaround: a Keras 3 callback can move `fit`'s first epoch only through `model._initial_epoch`.

Upstream: keras-team/keras#19179 (Keras 3's `BackupAndRestore` did not resume at the interrupted
epoch; the fix has `fit` read the private `model._initial_epoch`, which
`keras.callbacks.BackupAndRestore` sets in `on_train_begin`). There is no public way: `fit`'s
`initial_epoch` argument is read before any callback runs. `tfdist.keras.callbacks.BackupAndRestore`
sets the same attribute, through `set_initial_epoch`. Canary:
tests/test_compat.py::test_canary_keras_backup_still_sets_private_initial_epoch.
"""

from __future__ import annotations

from typing import Any

UPSTREAM = "https://github.com/keras-team/keras/issues/19179"
ATTRIBUTE = "_initial_epoch"


def set_initial_epoch(model: Any, epoch: int | None) -> None:
    """Makes the `fit` call that is starting begin at `epoch` (None: its `initial_epoch`).

    Call it from a callback's `on_train_begin`, and with None from `on_train_end`.
    """
    setattr(model, ATTRIBUTE, epoch)
