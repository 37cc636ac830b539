"""The input pipelines' own throughput: the dataset iterated alone, as training would consume it.

Each pipeline is the `tfdist.data` pipeline a route would get (shard, shuffle, map, batch,
prefetch), consumed in a `tf.range` loop of `next(iterator)` inside one `tf.function` (the way
the loops consume it), one iterator kept alive, timed after a warm-up. Measured pipelines:

- `synthetic`: the in-memory arrays the routes train on (no shuffling);
- `digits`: `input_pipelines.load("digits")`, 8x8 images in memory, shuffled;
- `tfrecord`: examples of the benchmark model's input shape written by
  `input_pipelines.tfrecord.write_shards` to 4 files and read back by
  `input_pipelines.tfrecord.sources` (interleaved reads, parsing, shuffling).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

import input_pipelines
from input_pipelines import tfrecord
from tfdist import data as data_lib
from tfdist.bench import teardown
from tfdist.bench import timing
from tfdist.bench.workloads import Workload

TFRECORD_SHARDS = 4


def _timer(spec: data_lib.DataSpec, batches: int) -> Callable[[], float]:
    """A function timing `batches` batches; returns examples/s."""
    iterator = iter(data_lib.make_dataset(spec))
    teardown.keep(iterator)

    @tf.function
    def consume(n: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0, tf.int64)
        for _ in tf.range(n):
            features, _ = next(iterator)
            total += tf.shape(features, out_type=tf.int64)[0]
        return total

    consume(tf.constant(max(1, batches // 10))).numpy()  # trace, fill buffers

    def once() -> float:
        started = time.perf_counter()
        examples = int(consume(tf.constant(batches)).numpy())
        return examples / (time.perf_counter() - started)

    return once


def _specs(workload: Workload, batch: int, work_dir: str,
           seed: int) -> dict[str, tuple[data_lib.DataSpec, tuple[int, ...]]]:
    """Pipeline name -> (its spec, the shape of one example)."""
    digits = input_pipelines.load("digits", seed=seed)
    directory = os.path.join(work_dir, "tfrecord")
    tfrecord.write_shards((workload.features, workload.labels), directory, TFRECORD_SHARDS,
                          prefix="train")
    # `sources` wants an eval split too; it is never read here, so keep it small.
    tfrecord.write_shards((workload.features[:64], workload.labels[:64]), directory, 1,
                          prefix="eval")
    return {
        "synthetic": (workload.spec(batch), workload.input_shape),
        "digits": (digits.train_spec(batch, seed=seed), digits.input_shape),
        "tfrecord": (tfrecord.sources(directory).train_spec(batch, seed=seed),
                     workload.input_shape),
    }


def measure(workload: Workload, batch: int, work_dir: str, *, batches: int = 100, reps: int = 3,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """Examples/s each pipeline delivers, interleaved repetitions.

    Args:
        workload: The benchmark model's data (shape of the TFRecord examples).
        batch: Global batch size.
        work_dir: Where the TFRecord files are written.
        batches: Batches per timed call. Defaults to 100.
        reps: Timed calls per pipeline. Defaults to 3.
        seed: Shuffle seed. Defaults to 0.

    Returns:
        pipeline -> `{"examples_per_sec": summary, "example_shape": [...]}`.
    """
    specs = _specs(workload, batch, work_dir, seed)
    timers = {name: _timer(spec, batches) for name, (spec, _) in specs.items()}
    samples = timing.interleaved(timers, reps)
    return {name: {"examples_per_sec": timing.summary(values),
                   "example_shape": list(specs[name][1])}
            for name, values in samples.items()}
