"""Batched inference under the strategy: keyed batches in, keyed predictions out.

One worker's replicas share its input pipeline: with one replica each batch goes straight to a
`tf.function`; with several (mirrored over local devices), consecutive batches go to the
replicas of one step (`distribute_datasets_from_function`, whose partial-batch handling gives a
replica with nothing left an empty batch). Keys travel with the features through `strategy.run`,
so outputs are matched to records by key, whatever replica scored them.

Workers do not form a `MultiWorkerMirroredStrategy`: inference has no all-reduce, and its
distributed iterators agree on the end of the data with a cross-worker all-reduce every step
(`_calculate_replicas_with_values` in tensorflow/python/distribute/input_lib.py, TF 2.21),
which would make every worker wait for the slowest one (and hang on a dead one). Each worker runs
a local strategy over its own devices and writes its own shards; the chief waits on the files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from tfdist.predict import model as model_lib
from tfdist.predict.features import ID_FEATURE


@dataclasses.dataclass
class Timings:
    """Where a worker's time went (seconds)."""

    input: float = 0.0  # waiting for the next batch from the input pipeline
    inference: float = 0.0  # model calls, until the outputs are on the host
    first_step: float = 0.0  # the first step alone: building the iterator, tracing, first call
    batches: int = 0
    rows: int = 0
    steady_rows: int = 0  # rows after the first step, scored in `steady` seconds (from the end
    steady: float = 0.0  # of the first step to the end of the last: what the caller does between
    #                      steps, such as writing shards, included)


def predict_batches(
    strategy: tf.distribute.Strategy,
    model: model_lib.Model,
    dataset: tf.data.Dataset,
    *,
    timings: Timings | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Scores every batch of `dataset` and yields `(keys, outputs)` as NumPy arrays.

    Args:
        strategy: A local strategy (default, one device or mirrored).
        model: The loaded model (under `strategy`'s scope).
        dataset: `(keys, features)` batches, e.g. from `tfdist.data.inference_dataset`.
        timings: Accumulates input and inference time. Defaults to none.

    Yields:
        `(keys, outputs)` per batch (per step with several replicas: the replicas' batches
        concatenated; keys are not necessarily sorted across replicas).
    """
    timings = timings if timings is not None else Timings()
    replicas = strategy.num_replicas_in_sync

    def replica_step(keys: tf.Tensor, features: dict[str, tf.Tensor]) -> tuple[tf.Tensor, dict]:
        features = dict(features)
        passed = {ID_FEATURE: features.pop(ID_FEATURE)} if ID_FEATURE in features else {}
        return keys, {**model.call(features), **passed}

    if replicas == 1:
        step = tf.function(replica_step, input_signature=list(dataset.element_spec))
        iterator: Any = iter(dataset)
    else:
        dist = strategy.distribute_datasets_from_function(lambda _ctx: dataset)

        @tf.function
        def step(keys: Any, features: Any) -> Any:
            return strategy.run(replica_step, args=(keys, features))

        iterator = iter(dist)
    first = True
    began = time.perf_counter()
    while True:
        started = time.perf_counter()
        try:
            keys, features = next(iterator)
        except StopIteration:
            break
        got = time.perf_counter()
        timings.input += got - started
        out_keys, outputs = step(keys, features)
        if replicas == 1:
            host_keys = out_keys.numpy()
            host = {n: v.numpy() for n, v in outputs.items()}
        else:
            parts = strategy.experimental_local_results((out_keys, outputs))
            host_keys = np.concatenate([k.numpy() for k, _ in parts])
            host = {n: np.concatenate([o[n].numpy() for _, o in parts]) for n in parts[0][1]}
        done = time.perf_counter()
        timings.inference += done - got
        timings.batches += 1
        timings.rows += len(host_keys)
        if first:
            timings.first_step = done - began
            first_done = done
            first = False
        else:
            timings.steady_rows += len(host_keys)
            timings.steady = done - first_done
        yield host_keys, host
