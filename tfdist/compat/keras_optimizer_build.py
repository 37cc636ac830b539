"""Workaround: Keras 3 optimizers built lazily inside `strategy.run` in a `tf.function`.

Upstream: keras-team/keras#20164 and keras-team/keras#23085 (same failure, TF 2.21 + Keras 3.15).
The pattern of the TF custom-training tutorials — optimizer created under the scope,
`apply_gradients` inside `strategy.run` inside a `tf.function` — fails on the first call with
`You must feed a value for placeholder tensor 'cond/else/.../Placeholder'`: the optimizer builds
its slot variables while tracing, inside the replica function, and the variables' initial values
capture graph placeholders that nothing feeds.

The fix: when an unbuilt optimizer is asked to apply gradients, build it first outside the
function graph (`tf.init_scope`) and in cross-replica context (`merge_call`), exactly as a user
calling `optimizer.build(model.trainable_variables)` under the scope beforehand would.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from keras.src.backend.tensorflow import optimizer as keras_tf_optimizer

UPSTREAM = "https://github.com/keras-team/keras/issues/20164"
_TARGET = keras_tf_optimizer.TFOptimizer
_original_apply_gradients = _TARGET.apply_gradients


def _build_eagerly(optimizer, variables) -> None:
    with tf.init_scope():
        optimizer.build(variables)


@functools.wraps(_original_apply_gradients)
def _apply_gradients(self, grads_and_vars, *args, **kwargs):
    if not self.built:
        grads_and_vars = list(grads_and_vars)
        variables = [v for _, v in grads_and_vars]
        replica_context = tf.distribute.get_replica_context()
        if tf.distribute.has_strategy() and replica_context is not None:
            replica_context.merge_call(lambda _: _build_eagerly(self, variables))
        else:
            _build_eagerly(self, variables)
    return _original_apply_gradients(self, grads_and_vars, *args, **kwargs)


def install() -> None:
    """Patches `TFOptimizer.apply_gradients` (idempotent)."""
    _TARGET.apply_gradients = _apply_gradients


def uninstall() -> None:
    """Restores the upstream method (for the canary test)."""
    _TARGET.apply_gradients = _original_apply_gradients


def strategy_of(optimizer) -> tf.distribute.Strategy:
    """The strategy a Keras TF optimizer captured when it was created (a private attribute)."""
    return optimizer._distribution_strategy
