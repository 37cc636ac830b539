"""Workaround: the default (no-op) strategy's class is private, so it is recognised by name.

Upstream: no issue found (searched 2026-12-01). `tf.distribute.get_strategy()` returns the
default strategy only outside every scope; inside a scope, or for an object that was captured
earlier (an optimizer's `_distribution_strategy`), the only way to tell "built under no strategy"
from "built under this one" is the class, `distribute_lib._DefaultDistributionStrategy`, which
TensorFlow does not export. Canary:
tests/test_compat.py::test_canary_default_strategy_class_is_still_private.
"""

from __future__ import annotations

from typing import Any

UPSTREAM = "no upstream issue (searched 2026-12-01): no public class for the default strategy"
CLASS_NAME = "_DefaultDistributionStrategy"


def is_default(strategy: Any) -> bool:
    """True for TensorFlow's default strategy (what runs outside every `strategy.scope()`)."""
    return type(strategy).__name__ == CLASS_NAME
