"""Workaround: two MirroredStrategy objects over the same devices break each other's all-reduces.

Upstream: tensorflow/tensorflow#62790 (closed as stale, still reproducible on TF 2.21). Each
`MirroredStrategy` numbers its collective instances from the same start, and the devices' collective
executor caches an instance's parameters (its shape) by that number. The second strategy's first
all-reduce then reuses the first strategy's instance key with another shape and fails with
"Shape mismatch in the collective instance ...", which also aborts the executor for the rest of
the process. So tfdist builds one MirroredStrategy per device set and process and hands the same
object out again. Canary:
tests/test_compat.py::test_canary_second_mirrored_strategy_still_breaks_all_reduce.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

UPSTREAM = "https://github.com/tensorflow/tensorflow/issues/62790"
_STRATEGIES: dict[tuple[str, ...], tf.distribute.MirroredStrategy] = {}


def _canonical_device(name: str) -> str:
    """One spelling per local device ("/cpu:0" and "/job:localhost/.../device:CPU:0" agree)."""
    spec = tf.DeviceSpec.from_string(name)
    return tf.DeviceSpec(
        job=spec.job or "localhost", replica=spec.replica or 0, task=spec.task or 0,
        device_type=(spec.device_type or "CPU").upper(), device_index=spec.device_index or 0,
    ).to_string()


def mirrored_strategy(devices: Sequence[str]) -> tf.distribute.MirroredStrategy:
    """The process's one `MirroredStrategy` over `devices` (created on the first call).

    It is created with `tfdist.strategy.cross_device_ops_for(devices)`, whoever asks first, so
    the one strategy per device set always reduces the same way.

    Args:
        devices: Local device names, in any spelling and order.

    Returns:
        The same strategy object for the same set of devices.
    """
    key = tuple(sorted(_canonical_device(d) for d in devices))
    if key not in _STRATEGIES:
        from tfdist import strategy  # not at import: tfdist.strategy imports this module

        _STRATEGIES[key] = tf.distribute.MirroredStrategy(
            devices=list(devices), cross_device_ops=strategy.cross_device_ops_for(devices))
    return _STRATEGIES[key]
