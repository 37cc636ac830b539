"""Workarounds that make Keras 3 `Model.fit` work, and work fast, under tf.distribute.

Three narrow patches to `keras.src.backend.tensorflow.trainer`, each
with its upstream issue (FINDINGS §1, §2). `install()` applies them all; `uninstall()` restores
upstream (for the canary tests in tests/test_compat.py).

1. Symbolic build from a distributed batch (keras-team/keras#20585, tensorflow/tensorflow#72388).
   `_maybe_symbolic_build` reduces the first distributed batch with `strategy.reduce("MEAN")`,
   which fails under MultiWorkerMirroredStrategy ("Attempt to convert a value (PerReplica...)").
   It only needs shapes and dtypes: we build from the dataset's element spec, which also avoids
   creating (and tearing down) an iterator on every `fit`/`evaluate` call.
2. Scalar logs under multi-worker (keras-team/keras#20585). `reduce_per_replica` reduces scalar
   logs with `axis=0` ("Invalid reduction dimension 0 for input with 0 dimensions"); scalars are
   reduced with `axis=None`.
3. `steps_per_execution > 1` under MirroredStrategy (keras-team/keras#19246). Keras calls its own
   `tf.function`-wrapped step inside a `tf.cond`; the all-reduce's deferred instance-key capture
   lands on the cond branch graph and leaves unfed placeholders. With SPE > 1 and several
   replicas, the per-step function is left unwrapped, so it is traced into the multi-step loop.
The tf.data iterator-teardown stall (FINDINGS §2, cause 1), which Keras pays at every epoch end and
at the end of every call, needs no Keras patch: `tfdist.compat.iterator_teardown` moves the
destruction of every tf.data iterator off the thread that drops it.

Each patch acts only under the strategies it was written for (`handles_strategy`: the ones
`tfdist.get_strategy` builds). Under any other (`ParameterServerStrategy`, TPU, central storage)
Keras runs its own code, so its own behaviour and errors come through unchanged (issue 13).
"""

from __future__ import annotations

import types
from typing import Any

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer
from keras.src.trainers import epoch_iterator as keras_epoch_iterator


UPSTREAM = {
    "symbolic_build": "https://github.com/keras-team/keras/issues/20585",
    "scalar_logs": "https://github.com/keras-team/keras/issues/20585",
    "steps_per_execution": "https://github.com/keras-team/keras/issues/19246",
}

_Trainer = keras_tf_trainer.TensorFlowTrainer
_EpochIterator = keras_epoch_iterator.EpochIterator
_ORIGINALS = {
    "maybe_symbolic_build": _Trainer._maybe_symbolic_build,
    "make_function": _Trainer._make_function,
    "reduce_per_replica": keras_tf_trainer.reduce_per_replica,
}

_HANDLED = (
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
    tf.distribute.OneDeviceStrategy,
)


def handles_strategy(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether tfdist's Keras `fit` workarounds apply under `strategy`.

    Args:
        strategy: A model's strategy; `None` (no strategy, as Keras records it) counts as the
            default strategy.

    Returns:
        True for no strategy, the default one, and mirrored, multi-worker mirrored and one-device
        strategies; False for every other (upstream Keras handles those its own way).
    """
    return (
        strategy is None
        or isinstance(strategy, _HANDLED)
        or type(strategy).__name__ == "_DefaultDistributionStrategy"
    )


# --- 1. symbolic build from the element spec ---------------------------------------------------


def _first_replica_spec(spec: Any) -> Any:
    def one(s):
        value_specs = getattr(s, "_value_specs", None)  # PerReplicaSpec
        return value_specs[0] if value_specs else s

    return tf.nest.map_structure(one, spec, expand_composites=False)


def _maybe_symbolic_build(self, iterator=None, data_batch=None):
    if self._distribute_strategy is None:
        return
    if not handles_strategy(self._distribute_strategy):
        return _ORIGINALS["maybe_symbolic_build"](self, iterator=iterator, data_batch=data_batch)
    if data_batch is None and iterator is not None:
        dataset = getattr(iterator, "_distributed_dataset", None)
        if dataset is None:
            return _ORIGINALS["maybe_symbolic_build"](self, iterator=iterator)
        data_batch = _first_replica_spec(dataset.element_spec)
    with self.distribute_strategy.scope():
        self._symbolic_build(data_batch=data_batch)


# --- 2. scalar logs under multi-worker ---------------------------------------------------------


def _reduce_per_replica(values, strategy, reduction):
    multi_worker = keras_tf_trainer._collective_all_reduce_multi_worker(strategy)
    if not multi_worker or reduction not in ("auto", "mean"):
        return _ORIGINALS["reduce_per_replica"](values, strategy, reduction)

    def reduce(v):
        rank = v.values[0].shape.rank if hasattr(v, "values") else v.shape.rank
        return strategy.reduce("MEAN", v, axis=None if rank == 0 else 0)

    return tf.nest.map_structure(reduce, values)


# --- 3. steps_per_execution > 1 under several replicas -----------------------------------------


class _NoInnerFunction(types.ModuleType):
    """Stands in for `tf` while Keras builds its step functions: leaves the per-step one unwrapped."""

    def __init__(self) -> None:
        super().__init__("tensorflow")

    def __getattr__(self, name: str) -> Any:
        return getattr(tf, name)

    @staticmethod
    def function(fn=None, **kwargs):
        if getattr(fn, "__name__", "") == "one_step_on_data":
            return fn
        return tf.function(fn, **kwargs)


def _make_function(self, step_function):
    strategy = self._distribute_strategy
    if (self.steps_per_execution == 1 or strategy is None or strategy.num_replicas_in_sync == 1
            or not handles_strategy(strategy)):
        return _ORIGINALS["make_function"](self, step_function)
    keras_tf_trainer.tf = _NoInnerFunction()
    try:
        return _ORIGINALS["make_function"](self, step_function)
    finally:
        keras_tf_trainer.tf = tf


# --- install / uninstall -----------------------------------------------------------------------


def install() -> None:
    """Applies the three patches (idempotent)."""
    _Trainer._maybe_symbolic_build = _maybe_symbolic_build
    _Trainer._make_function = _make_function
    keras_tf_trainer.reduce_per_replica = _reduce_per_replica


def uninstall(*names: str) -> None:
    """Restores upstream behaviour, for all patches or the named ones (for canary tests).

    Args:
        *names: Any of the keys of `UPSTREAM`. Defaults to all.
    """
    names = names or tuple(UPSTREAM)
    if "symbolic_build" in names:
        _Trainer._maybe_symbolic_build = _ORIGINALS["maybe_symbolic_build"]
    if "scalar_logs" in names:
        keras_tf_trainer.reduce_per_replica = _ORIGINALS["reduce_per_replica"]
    if "steps_per_execution" in names:
        _Trainer._make_function = _ORIGINALS["make_function"]
