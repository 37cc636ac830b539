"""Upstream workarounds, kept in one place.

Each workaround lives in its own module, names the upstream issue it works around, and has a
canary test (tests/test_compat.py) that reports when upstream no longer needs it. `apply` is
called by `tfdist.get_strategy`; users who build strategies themselves call it explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfdist.compat import keras_fit
from tfdist.compat import keras_fit_checks
from tfdist.compat import keras_optimizer_build
from tfdist.compat import mirrored_lazy_variables

# Each entry patches process-wide state once; `apply` may be called many times.
_WORKAROUNDS: list[Callable[[], None]] = [
    keras_optimizer_build.install,
    mirrored_lazy_variables.install,
    keras_fit.install,
    keras_fit_checks.install,
]
_applied = False


def apply(strategy: tf.distribute.Strategy | None = None) -> None:
    """Installs every upstream workaround (idempotent).

    Args:
        strategy: The strategy about to be used. The current workarounds are process-wide, so it
            is accepted for API stability and not needed. Defaults to `None`.
    """
    del strategy
    global _applied
    if _applied:
        return
    for workaround in _WORKAROUNDS:
        workaround()
    _applied = True
