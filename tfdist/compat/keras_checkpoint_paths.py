"""Workaround: Keras 3 `ModelCheckpoint` writes the same file from every worker.

Upstream: tensorflow/tensorflow#38635 (every worker of a multi-worker job saves to one path and
they race), and FINDINGS §1: Keras 3 dropped tf.keras's multi-worker file handling, so
`keras.callbacks.ModelCheckpoint` knows nothing of chiefs. Its only seam for choosing where a
file goes is the private pair `_get_file_path(epoch, batch, logs)` (the path of the next save)
and `_save_model(epoch, batch, logs)` (the save itself). `RoutedModelCheckpoint` overrides that
pair once and offers two hooks, `route_path` and `after_save`, which
`tfdist.keras.callbacks.ModelCheckpoint` implements with the "chief writes" rule. Canary:
tests/test_compat.py::test_canary_keras_model_checkpoint_still_writes_from_every_worker.
"""

from __future__ import annotations

from typing import Any

import keras

UPSTREAM = "https://github.com/tensorflow/tensorflow/issues/38635 (FINDINGS §1)"
PRIVATE_METHODS = ("_get_file_path", "_save_model")


class RoutedModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` whose subclasses choose where each file is written."""

    def route_path(self, path: str) -> str:
        """Where to write the file Keras would write at `path`. Defaults to `path` itself."""
        return path

    def after_save(self, succeeded: bool) -> None:
        """Runs after every save attempt (`succeeded` is False when the save raised)."""

    def _get_file_path(self, epoch: int, batch: int | None, logs: Any) -> str:
        return self.route_path(super()._get_file_path(epoch, batch, logs))

    def _save_model(self, epoch: int, batch: int | None, logs: Any) -> None:
        succeeded = False
        try:
            super()._save_model(epoch, batch, logs)
            succeeded = True
        finally:
            self.after_save(succeeded)
