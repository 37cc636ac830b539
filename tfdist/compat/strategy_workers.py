"""Workaround: `tf.distribute` has no public count of a strategy's worker processes.

Upstream: no issue found (searched 2026-12-01; the nearest, tensorflow/tensorflow#30262, was
answered with `num_replicas_in_sync`, which counts replicas, not processes). tfdist needs the
process count to decide whether workers must agree (`tfdist.checkpoint.any_worker`) and whether
a dataset must be distributed for Keras: `num_replicas_in_sync` is no substitute, since
`ParameterServerStrategy` reports one replica however many workers it drives, and
`cluster_resolver` is unset for most strategies. TF 2.21 keeps the count in the private
`extended._num_workers` of `CollectiveAllReduceExtended` (MultiWorkerMirroredStrategy) and
`ParameterServerStrategyV2Extended`; every other strategy runs in one process.
Canary: tests/test_compat.py::test_canary_strategies_have_no_public_worker_count.
"""

from __future__ import annotations

import tensorflow as tf

UPSTREAM = "no upstream issue (searched 2026-12-01): tf.distribute has no public worker count"
_ATTRIBUTE = "_num_workers"


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of training worker processes `strategy` spans (1 unless multi-worker)."""
    return int(getattr(strategy.extended, _ATTRIBUTE, 1))
