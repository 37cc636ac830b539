"""TensorBoard scalars for the outer loop: one cached writer per directory, scalars only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf


class SummaryWriters:
    """Writes scalar logs to TensorBoard event files, one writer per directory.

    Values that are not numeric scalars (arrays, strings) are skipped, and so is `global_step`,
    which is the summary's step already.
    """

    def __init__(self) -> None:
        self._writers: dict[str, Any] = {}

    def write(self, directory: str, step: int, values: Mapping[str, Any]) -> None:
        if directory not in self._writers:
            self._writers[directory] = tf.summary.create_file_writer(directory)
        writer = self._writers[directory]
        with writer.as_default(step=step):
            for key, value in values.items():
                if key != "global_step" and _is_scalar(value):
                    tf.summary.scalar(key, value)
        writer.flush()


def _is_scalar(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        return False
    return array.ndim == 0 and np.issubdtype(array.dtype, np.number)
