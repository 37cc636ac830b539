"""Upstream workarounds, kept in one place: every private TensorFlow/Keras touch point lives here.

Each workaround lives in its own module, names the upstream issue it works around (or says that
none was found, and why it is needed), and has a canary test (tests/test_compat.py) that reports
when upstream no longer needs it. Importing this package loads none of them: the library imports
the module it needs where it needs it, so `import tfdist.data` loads no Keras internals. `apply`
(called by `tfdist.get_strategy`; users who build strategies themselves call it explicitly)
installs the process-wide patches.
"""

from __future__ import annotations

import importlib

import tensorflow as tf

# Each module's `install` patches process-wide state once; `apply` may be called many times.
_WORKAROUNDS = (
    "tfdist.compat.keras_optimizer_build",
    "tfdist.compat.mirrored_lazy_variables",
    "tfdist.compat.keras_fit",
    "tfdist.compat.keras_fit_checks",
    "tfdist.compat.keras_gradient_reduction",
    "tfdist.compat.keras_fit_accumulation",
)
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
    for module in _WORKAROUNDS:
        importlib.import_module(module).install()
    _applied = True
