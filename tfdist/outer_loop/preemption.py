"""SIGTERM agreed across workers every N steps, for a training loop tfdist does not drive.

The outer loop's `Controller` agrees on SIGTERM at its own loop boundaries. Keras's `fit` runs
its own loop, so its callback (`tfdist.keras.callbacks.BackupAndRestore`) asks this object at
the end of each train-function call instead; the workers count the same steps, so they all ask
at the same call, save at the same step and stop together.
"""

from __future__ import annotations

import tensorflow as tf

from tfdist import checkpoint as checkpoint_lib


class StepPreemption:
    """Every `check_steps` steps, whether any worker has been sent SIGTERM (all answer alike).

    Args:
        check_steps: Training steps between two agreements (one tiny all-reduce each).
    """

    def __init__(self, check_steps: int) -> None:
        self.check_steps = check_steps
        self._watcher = checkpoint_lib.PreemptionWatcher()
        self._since_check = 0

    def install(self) -> None:
        """Starts catching SIGTERM (main thread only); call it after the strategy exists.

        A multi-worker strategy replaces the process's SIGTERM handler with TensorFlow's, which
        only records the signal (docs/reliability.md): installed before it, ours would be lost.
        """
        self._watcher.close()  # still installed if an earlier run ended with an error
        self._watcher = checkpoint_lib.PreemptionWatcher().install()
        self._since_check = 0

    def close(self) -> None:
        """Gives SIGTERM back to the handler that was there before `install`."""
        self._watcher.close()

    def agreed_after(self, steps: int, strategy: tf.distribute.Strategy) -> bool:
        """Counts `steps` more; at every `check_steps`, True when any worker was sent SIGTERM."""
        self._since_check += steps
        if self._since_check < self.check_steps:
            return False
        self._since_check = 0
        return self._watcher.agreed(strategy)
