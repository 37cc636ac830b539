"""Keras losses called inside `model_fn` return the replica's own mean, as tf.estimator's did.

Upstream behaviour (keras/src/losses/loss.py, `reduce_values`): under a `tf.distribute`
strategy with N > 1 replicas, a Keras `Loss` with the default `"sum_over_batch_size"` reduction
returns the batch mean divided by N (`scale_loss_for_distribution`), because Keras's own
`fit` sums the replicas' gradients. tf.estimator's contract is different: `model_fn` returns the
mean loss over its replica's batch, and the training loop divides by N itself (as the TF1
optimizers did for MEAN losses). A `model_fn` written as
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)` was therefore
scaled twice (found while porting the official tutorials, issue 13: 2 replicas trained other
weights than 1, and reported a loss of 0.397 instead of 0.652).

`replica_means()` suspends that scaling while tfdist calls `model_fn`. It is a counter, not a
swap, because `MirroredStrategy` calls `model_fn` on several replica threads at once. No
upstream issue: Keras documents the scaling as intended for `fit`; the canary in
tests/test_compat.py fails when Keras stops scaling (then this module can go).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from keras.src.losses import loss as keras_loss_module

_lock = threading.Lock()
_suspended = 0
_upstream_scale = keras_loss_module.scale_loss_for_distribution
_upstream_unscale = keras_loss_module.unscale_loss_for_distribution


def _scale_loss_for_distribution(value: Any) -> Any:
    return value if _suspended else _upstream_scale(value)


def _unscale_loss_for_distribution(value: Any) -> Any:
    # Keras's loss trackers (compile_utils) undo the scaling for display: off together with it.
    return value if _suspended else _upstream_unscale(value)


def install() -> None:
    """Routes Keras's loss scaling through the counter (idempotent)."""
    keras_loss_module.scale_loss_for_distribution = _scale_loss_for_distribution
    keras_loss_module.unscale_loss_for_distribution = _unscale_loss_for_distribution


@contextlib.contextmanager
def replica_means() -> Iterator[None]:
    """Within the block (on any thread), Keras losses return the replica's unscaled mean."""
    global _suspended
    install()
    with _lock:
        _suspended += 1
    try:
        yield
    finally:
        with _lock:
            _suspended -= 1
