"""Training progress for the chief: Keras's `Progbar` on a terminal, plain lines elsewhere.

Keras's `Progbar` redraws one line with `\\r` and ANSI colours whenever `posix` is imported, i.e.
always on Linux, so in a log file or through `tfdist-launch`'s line-by-line pipe a whole run
arrives as one line at the end. Off a terminal we print one plain line per update instead,
at most every `interval` seconds (and always the last).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import keras


class LineProgress:
    """Plain progress lines: `step 300/600 - loss: 0.4648 - accuracy: 0.8896 - steps_per_sec: 126`.

    Args:
        target: The step training runs to.
        interval: Least seconds between two lines (the final step always prints). Defaults to 5.
    """

    def __init__(self, target: int, interval: float = 5.0) -> None:
        self.target = target
        self.interval = interval
        self._last_print: float | None = None

    def update(self, current: int, values: list[tuple[str, Any]] | None = None) -> None:
        now = time.monotonic()
        final = current >= self.target
        if not final and self._last_print is not None and now - self._last_print < self.interval:
            return
        self._last_print = now
        fields = [f"step {current}/{self.target}"]
        fields += [f"{name}: {float(value):.4g}" for name, value in values or ()]
        print(" - ".join(fields), flush=True)


def in_notebook_kernel() -> bool:
    """Whether this process is a Jupyter or Colab kernel.

    Not merely "ipykernel is imported": a program that runs notebooks (nbclient, whose kernel
    lookup imports `ipykernel.kernelspec`) imports it too, and its output is a pipe or a log.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_bar(target: int) -> keras.utils.Progbar | LineProgress:
    """A redrawn `keras.utils.Progbar` on a terminal or in a notebook; `LineProgress` otherwise."""
    if sys.stdout.isatty() or in_notebook_kernel():
        return keras.utils.Progbar(target, stateful_metrics=None, unit_name="step")
    return LineProgress(target)
