"""The one `tf.data` sharding layer that every route uses.

A `DataSpec` says what to read and the *global* batch size; this module decides how each input
pipeline (one per worker) gets its share, derives the per-replica batch size, and hands the result
out in the form each route needs:

- `distribute(strategy, spec)`: a distributed dataset for `strategy.run` loops;
- `for_fit(strategy, spec)`: what Keras `Model.fit` takes;
- `input_fn(spec)`: an Estimator-style `input_fn(input_context=None)`;
- `per_worker(strategy, spec)`: under `ParameterServerStrategy`, a per-worker dataset whose
  pipeline on worker `i` of `n` reads every `n`-th example from the `i`-th.

In-memory arrays (`Arrays((x, y))`) are read by index: the pipeline shards, shuffles, repeats
and batches example indices, then takes each batch with one `tf.gather` per array, instead of
slicing every example and copying it into a batch (`from_tensor_slices(...).batch()`). The
batches are the same (shuffling indices with a seed permutes them as it would the examples).

Sharding (see `plan_sharding`): by file when there are at least as many files as input pipelines
(every worker shuffles the file list with the same seed, then takes its slice), otherwise by
example. Sharding happens before shuffling, and TensorFlow's own auto-sharding is switched off on
the result, so data is never sharded twice. Examples are shuffled one by one; a `batch_map_fn`
(e.g. one `tf.io.parse_example` over a batch of serialized records) runs on whole per-replica
batches after that.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import random
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import tensorflow as tf
from absl import logging

from tfdist import checks
from tfdist.compat import strategy_workers
from tfdist.compat.iterator_teardown import release_iterator  # noqa: F401  (part of this layer's API)

SHARDING_POLICIES = ("auto", "off", "file", "data")
DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]

DEFAULT_SHUFFLE_BUFFER = 10_000
# Odd constant that spreads per-pipeline seeds apart; any fixed value keeps runs reproducible.
_SEED_STRIDE = 7919


class DataConfigError(ValueError):
    """A `DataSpec` or its use does not fit the strategy or the data."""


@dataclasses.dataclass(frozen=True, eq=False)
class Arrays:
    """In-memory examples, one row per example: a `DataSpec` source read by index.

    Each batch is one `tf.gather` per array over the batch's indices, not one slice per example
    and a copy into the batch: the same batches as `tf.data.Dataset.from_tensor_slices(data)`,
    with less work per step (docs/performance.md#input-pipeline-for-in-memory-arrays). With a
    `map_fn` or `cache`, which work example by example, the examples are sliced as before.

    Args:
        data: A NumPy array or tensor, or a tuple or dict of them, all with the same leading
            dimension (the examples), e.g. `(x, y)`.

    Raises:
        DataConfigError: No arrays, an array without a leading dimension, or leading dimensions
            that differ.

    Example:

    ```python
    spec = tfdist.data.DataSpec(source=tfdist.data.Arrays((x, y)), global_batch_size=256)
    ```
    """

    data: Any

    def __post_init__(self) -> None:
        leaves = tf.nest.flatten(self.data)
        if not leaves:
            raise DataConfigError("Invalid value for argument `data`. Received: an empty "
                                  f"{type(self.data).__name__}. Pass arrays with one row per "
                                  "example, e.g. Arrays((x, y)).")
        sizes = [tuple(getattr(leaf, "shape", np.shape(leaf)))[:1] for leaf in leaves]
        if () in sizes:
            raise DataConfigError("Invalid value for argument `data`. Received: an array of shape "
                                  f"{tuple(np.shape(leaves[sizes.index(())]))}. Every array needs "
                                  "a leading dimension, one row per example.")
        if len(set(sizes)) > 1:
            raise DataConfigError(
                "Invalid value for argument `data`. Received: arrays with "
                f"{', '.join(str(size[0]) for size in sizes)} rows. Every array needs one row per "
                "example, the same number of rows.")

    @property
    def num_examples(self) -> int:
        """Rows (examples) in each array."""
        leaf = tf.nest.flatten(self.data)[0]
        return int(tuple(getattr(leaf, "shape", np.shape(leaf)))[0])

    def gather_fn(self) -> Callable[[tf.Tensor], Any]:
        """`take(indices)`: the rows at `indices` of every array, in `data`'s structure."""
        tensors = tf.nest.map_structure(tf.convert_to_tensor, self.data)
        return lambda indices: tf.nest.map_structure(lambda t: tf.gather(t, indices), tensors)


Source = Union[tf.data.Dataset, Arrays, DatasetFn, str, Sequence[str]]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What to read and how to batch it; the data layer derives everything per replica.

    Args:
        source: The examples, unbatched: a `tf.data.Dataset`; in-memory arrays (`Arrays`,
            read by index: less work per step than `from_tensor_slices`); a
            `dataset_fn(input_context)` returning this input pipeline's examples (it shards
            itself, as with `distribute_datasets_from_function`); or TFRecord file patterns (a
            string or a list).
        global_batch_size: Examples per step across all replicas and workers.
        training: Training data shuffles, repeats and drops the short final batch by default;
            evaluation data does none of these. Defaults to `True`.
        shuffle_buffer: Shuffle buffer size in examples; 0 disables shuffling. Defaults to
            10,000 for training, 0 otherwise.
        repeat: Repeat the data forever. Defaults to `training`.
        drop_remainder: Drop the short final batch. Defaults to `training`.
        seed: Seed for file-list and example shuffling; each input pipeline derives its own
            example-shuffle seed from it. `None` shuffles examples differently on every run
            (the file list still uses seed 0, since all workers must agree on it).
            Defaults to `0`.
        sharding: `"auto"`, `"off"`, `"file"` or `"data"`. Defaults to `"auto"`.
        map_fn: Per-example preprocessing, applied in parallel after sharding and shuffling.
            Defaults to `None`.
        batch_map_fn: Per-batch preprocessing, applied in parallel to each per-replica batch
            (after `map_fn`, `cache`, `repeat` and batching; before prefetching), in order when
            `seed` is set. Vectorised work such as `tf.io.parse_example` on a batch of
            serialized records belongs here. Defaults to `None`.
        reader: Turns one file name into a dataset of records. Defaults to
            `tf.data.TFRecordDataset`.
        cache: Cache this pipeline's examples in memory after `map_fn` (before
            `batch_map_fn`). Defaults to `False`.
        accumulation_steps: Micro-batches per optimizer step (gradient accumulation): each
            replica still receives `global_batch_size / replicas` examples per step, and the
            route cuts them into this many micro-batches (`micro_batch_size`) whose gradients
            are summed before one all-reduce. Defaults to 1 (no accumulation).

    Example:

    ```python
    spec = tfdist.data.DataSpec(source=tf.data.Dataset.from_tensor_slices((x, y)),
                                global_batch_size=256)
    dist_ds = tfdist.data.distribute(strategy, spec)
    ```
    """

    source: Source
    global_batch_size: int
    training: bool = True
    shuffle_buffer: int | None = None
    repeat: bool | None = None
    drop_remainder: bool | None = None
    seed: int | None = 0
    sharding: str = "auto"
    map_fn: Callable[..., Any] | None = None
    batch_map_fn: Callable[..., Any] | None = None
    reader: Callable[[tf.Tensor], tf.data.Dataset] = tf.data.TFRecordDataset
    cache: bool = False
    accumulation_steps: int = 1

    def __post_init__(self) -> None:
        checks.positive_int("global_batch_size", self.global_batch_size, error=DataConfigError)
        checks.positive_int("accumulation_steps", self.accumulation_steps,
                            error=DataConfigError)
        checks.one_of("sharding", self.sharding, SHARDING_POLICIES, error=DataConfigError)
        checks.non_negative_int("shuffle_buffer", self.shuffle_buffer, allow_none=True,
                                none_means="10,000 when training, else 0", error=DataConfigError)
        if not callable(self.source):
            checks.instance("source", self.source, (tf.data.Dataset, Arrays, str, list, tuple),
                            what="a tf.data.Dataset, tfdist.data.Arrays, a "
                                 "dataset_fn(input_context), or TFRecord file patterns",
                            error=DataConfigError)
        for name in ("map_fn", "batch_map_fn"):
            checks.function(name, getattr(self, name), allow_none=True, error=DataConfigError)
        if self.sharding == "file" and not self._is_files():
            raise DataConfigError(
                "sharding='file' needs file patterns as the source; received a "
                f"{type(self.source).__name__}. Use sharding='data' or pass file patterns."
            )

    def _is_files(self) -> bool:
        return self._file_patterns() is not None

    def _file_patterns(self) -> str | Sequence[str] | None:
        """The file patterns of a file source; `None` for a dataset or a `dataset_fn`."""
        return self.source if isinstance(self.source, (str, list, tuple)) else None

    @property
    def effective_shuffle_buffer(self) -> int:
        if self.shuffle_buffer is not None:
            return self.shuffle_buffer
        return DEFAULT_SHUFFLE_BUFFER if self.training else 0

    @property
    def effective_repeat(self) -> bool:
        return self.training if self.repeat is None else self.repeat

    @property
    def effective_drop_remainder(self) -> bool:
        return self.training if self.drop_remainder is None else self.drop_remainder

    def per_replica_batch_size(self, num_replicas_in_sync: int) -> int:
        """The batch each replica gets per step.

        Args:
            num_replicas_in_sync: Replicas across all workers.

        Returns:
            `global_batch_size // num_replicas_in_sync`.

        Raises:
            DataConfigError: The global batch does not divide evenly over the replicas.
        """
        if self.global_batch_size % num_replicas_in_sync:
            lower = self.global_batch_size - self.global_batch_size % num_replicas_in_sync
            upper = lower + num_replicas_in_sync
            hint = f"{lower} or {upper}" if lower else f"{upper}"
            counts = [n for n in range(1, min(self.global_batch_size, 64) + 1)
                      if self.global_batch_size % n == 0]
            raise DataConfigError(
                f"global_batch_size={self.global_batch_size} does not divide evenly over "
                f"{num_replicas_in_sync} replicas. Use a multiple of {num_replicas_in_sync} "
                f"(e.g. {hint}), or a replica count that divides it "
                f"({', '.join(map(str, counts))})."
            )
        return self.global_batch_size // num_replicas_in_sync

    def micro_batch_size(self, num_replicas_in_sync: int) -> int:
        """The examples each replica differentiates at once under gradient accumulation.

        Args:
            num_replicas_in_sync: Replicas across all workers.

        Returns:
            `global_batch_size // (num_replicas_in_sync * accumulation_steps)`.

        Raises:
            DataConfigError: The per-replica batch does not divide into `accumulation_steps`
                micro-batches (or the global batch over the replicas).
        """
        per_replica = self.per_replica_batch_size(num_replicas_in_sync)
        if per_replica % self.accumulation_steps:
            unit = num_replicas_in_sync * self.accumulation_steps
            raise DataConfigError(
                f"Invalid value for argument `accumulation_steps`. Received: accumulation_steps="
                f"{self.accumulation_steps} with global_batch_size={self.global_batch_size} over "
                f"{num_replicas_in_sync} replica(s): {per_replica} examples per replica do not "
                f"split into {self.accumulation_steps} micro-batches. Use a global_batch_size "
                f"that is a multiple of {unit} (e.g. {max(1, self.global_batch_size // unit) * unit}).")
        return per_replica // self.accumulation_steps


@dataclasses.dataclass(frozen=True)
class ShardingInfo:
    """What the data layer applied for one input pipeline (for logs and debugging).

    Attributes:
        policy: `"file"`, `"data"` or `"off"`.
        reason: Why that policy was chosen.
        input_pipeline_id: This pipeline's index.
        num_input_pipelines: Pipelines across the job (one per worker).
        num_replicas_in_sync: Replicas across the job.
        global_batch_size: Examples per step across the job.
        per_replica_batch_size: Examples per step on each replica.
        num_files: Files matched by the patterns, or `None` for other sources.
        files: The files this pipeline reads (file sources only).
    """

    policy: str
    reason: str
    input_pipeline_id: int
    num_input_pipelines: int
    num_replicas_in_sync: int
    global_batch_size: int
    per_replica_batch_size: int
    num_files: int | None = None
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for logs."""
        files = ""
        if self.num_files is not None:
            files = f", files {len(self.files) if self.policy == 'file' else self.num_files}/{self.num_files}"
        return (
            f"input pipeline {self.input_pipeline_id}/{self.num_input_pipelines}: "
            f"sharding={self.policy} ({self.reason}){files}, global batch "
            f"{self.global_batch_size} = {self.num_replicas_in_sync} replica(s) x "
            f"{self.per_replica_batch_size}"
        )


def list_files(patterns: str | Sequence[str]) -> list[str]:
    """Expands file patterns into a sorted, de-duplicated file list.

    Args:
        patterns: One glob pattern or a list of them.

    Returns:
        The matching files, sorted so every worker sees the same order.

    Raises:
        FileNotFoundError: A pattern matches no file.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    files: set[str] = set()
    for pattern in patterns:
        matched = tf.io.gfile.glob(pattern) if "://" in pattern else globlib.glob(pattern)
        if not matched:
            raise FileNotFoundError(
                f"File pattern {pattern!r} matches no file. Check the path, or write the files "
                "first (input_pipelines.tfrecord.write_shards)."
            )
        files.update(matched)
    return sorted(files)


def plan_sharding(
    spec: DataSpec, input_context: tf.distribute.InputContext | None = None
) -> ShardingInfo:
    """Decides how one input pipeline gets its share of the data, without reading any.

    Args:
        spec: The data.
        input_context: The pipeline's context; `None` means one pipeline and one replica. An
            `input_pipeline_id` that is a tensor (a worker's index under parameter-server
            training) shards by example, as `worker_shard` does.

    Returns:
        The `ShardingInfo` that `make_dataset` applies.

    Raises:
        DataConfigError: The global batch does not divide over the replicas.
        FileNotFoundError: A file pattern matches nothing.
    """
    ctx = input_context or tf.distribute.InputContext()
    per_replica = spec.per_replica_batch_size(ctx.num_replicas_in_sync)
    n, i = ctx.num_input_pipelines, ctx.input_pipeline_id
    common = dict(
        input_pipeline_id=i,
        num_input_pipelines=n,
        num_replicas_in_sync=ctx.num_replicas_in_sync,
        global_batch_size=spec.global_batch_size,
        per_replica_batch_size=per_replica,
    )
    patterns = spec._file_patterns()
    files = list_files(patterns) if patterns is not None else None
    num_files = len(files) if files is not None else None

    if spec.sharding == "off":
        policy, reason = "off", "sharding='off' requested; every pipeline reads all data"
    elif n == 1 and spec.sharding == "auto":
        policy, reason = "off", "one input pipeline"
    elif callable(spec.source) and not isinstance(spec.source, tf.data.Dataset):
        if spec.sharding == "data":
            policy, reason = "data", "sharding='data' requested on the dataset_fn's output"
        else:
            policy, reason = "off", "dataset_fn receives the input context and shards itself"
    elif spec.sharding == "data":
        policy, reason = "data", "sharding='data' requested"
    elif spec.sharding == "file":
        assert num_files is not None  # __post_init__ allows sharding='file' only for files
        if num_files < n:
            raise DataConfigError(
                f"sharding='file' needs at least one file per input pipeline; received "
                f"{num_files} file(s) for {n} pipelines. Write more shards or use sharding='data'."
            )
        policy, reason = "file", "sharding='file' requested"
    elif files is not None and num_files >= n:
        policy, reason = "file", f"{num_files} files >= {n} input pipelines"
    elif files is not None:
        policy, reason = "data", f"only {num_files} file(s) for {n} input pipelines"
    else:
        policy, reason = "data", "in-memory dataset source"

    mine: tuple[str, ...] = tuple(files or ())
    if policy == "file":
        shuffled = list(mine)
        # Same seed on every worker, so the slices are disjoint and complete.
        random.Random(spec.seed or 0).shuffle(shuffled)
        mine = tuple(shuffled[i::n])
    return ShardingInfo(policy=policy, reason=reason, num_files=num_files, files=mine, **common)


_logged: set[tuple[Any, ...]] = set()


def _log_once(info: ShardingInfo) -> None:
    key = (info.policy, info.reason, info.input_pipeline_id, info.num_input_pipelines)
    if key not in _logged:
        _logged.add(key)
        logging.info("tfdist.data: %s", info.describe())


def make_dataset(
    spec: DataSpec, input_context: tf.distribute.InputContext | None = None, *,
    worker_shard: tuple[int, Any] | None = None, start_step: int = 0,
) -> tf.data.Dataset:
    """Builds one input pipeline: shard, shuffle, map, repeat, batch per replica, map, prefetch.

    Args:
        spec: The data.
        input_context: The pipeline's context; `None` means one pipeline and one replica. An
            `input_pipeline_id` that is a tensor (a worker's index under parameter-server
            training) shards by example, as `worker_shard` does.
        worker_shard: `(num_workers, worker_index)` with the index a tensor known only on the
            worker (parameter-server training): shard by example before anything else.
        start_step: Global steps already trained: the pipeline starts where it would be after
            that many steps at this size (see `skip_examples`). Defaults to 0.

    Returns:
        A dataset of per-replica batches for this pipeline, with TensorFlow's auto-sharding off.
    """
    ctx = input_context or tf.distribute.InputContext()
    if tf.is_tensor(ctx.input_pipeline_id) and worker_shard is None:
        # Parameter-server training (the Estimator's per-worker input_fn): the pipeline's index
        # is the worker's, a tensor known only on the worker. Shard by example with it.
        worker_shard = (ctx.num_input_pipelines, ctx.input_pipeline_id)
        ctx = tf.distribute.InputContext(num_replicas_in_sync=ctx.num_replicas_in_sync)
    info = plan_sharding(spec, ctx)
    _log_once(info)
    n, i = info.num_input_pipelines, info.input_pipeline_id

    take = None  # Arrays read by index: indices -> the batch's rows
    if spec._is_files():
        files = info.files  # this pipeline's slice under file sharding, else every file
        ds = tf.data.Dataset.from_tensor_slices(list(files))
        ds = ds.interleave(
            spec.reader,
            cycle_length=max(1, min(len(files), 8)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=spec.seed is not None,
        )
    elif isinstance(spec.source, tf.data.Dataset):
        ds = spec.source
    elif isinstance(spec.source, Arrays):
        if spec.map_fn is None and not spec.cache:
            # Indices go through shard/shuffle/repeat/batch; each batch is one gather per array.
            ds = tf.data.Dataset.range(spec.source.num_examples)
            take = spec.source.gather_fn()
        else:
            ds = tf.data.Dataset.from_tensor_slices(spec.source.data)
    elif callable(spec.source):
        ds = spec.source(ctx)
        if not isinstance(ds, tf.data.Dataset):
            raise DataConfigError(
                f"dataset_fn must return a tf.data.Dataset; it returned {type(ds).__name__}."
            )
    else:  # not reached: __post_init__ admits no other source
        raise DataConfigError(f"Unsupported source: {type(spec.source).__name__}.")
    if info.policy == "data":
        ds = ds.shard(n, i)
    if worker_shard is not None:
        ds = ds.shard(*worker_shard)

    buffer = spec.effective_shuffle_buffer
    if buffer:
        seed = None if spec.seed is None else spec.seed + _SEED_STRIDE * i
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if spec.map_fn is not None:
        ds = ds.map(
            spec.map_fn,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=spec.seed is not None,
        )
    if spec.cache:
        ds = ds.cache()
    if spec.effective_repeat:
        ds = ds.repeat()
    skipped = skip_examples(spec, ctx, start_step)
    if skipped:
        ds = ds.skip(skipped)
    ds = ds.batch(info.per_replica_batch_size, drop_remainder=spec.effective_drop_remainder)
    if take is not None:
        ds = ds.map(take)
    if spec.batch_map_fn is not None:
        ds = ds.map(
            spec.batch_map_fn,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=spec.seed is not None,
        )
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if spec.seed is not None:
        options.deterministic = True
    return ds.with_options(options)


def skip_examples(spec: DataSpec, input_context: tf.distribute.InputContext | None,
                  start_step: int) -> int:
    """Examples one input pipeline skips to start at global step `start_step`.

    Each step takes one per-replica batch for each of the pipeline's replicas, so the pipeline
    skips ``start_step * per_replica_batch * replicas_per_pipeline`` examples (after sharding,
    shuffling and repeating, before batching). Its data at this size being deterministic (a set
    `seed`), it then yields exactly what an uninterrupted run at this size would from that step:
    the same epoch, the same position in it. A resume at another size keeps the epoch and the
    position in it (examples consumed = ``start_step * global_batch_size``), not the exact
    examples: the other size deals the examples out differently.

    Raises:
        DataConfigError: `start_step` is negative or not an integer.
    """
    checks.non_negative_int("start_step", start_step, error=DataConfigError)
    ctx = input_context or tf.distribute.InputContext()
    per_pipeline = ctx.num_replicas_in_sync // max(1, ctx.num_input_pipelines)
    return int(start_step) * spec.per_replica_batch_size(ctx.num_replicas_in_sync) * per_pipeline


def distribute(
    strategy: tf.distribute.Strategy, spec: DataSpec, *, start_step: int = 0
) -> tf.distribute.DistributedDataset:
    """The distributed dataset for loops built on `strategy.run`.

    Args:
        strategy: The strategy that will consume it.
        spec: The data.
        start_step: Global steps already trained (a resumed run): each pipeline starts where it
            would be after that many steps at this size (`skip_examples`). Defaults to 0.

    Returns:
        A distributed dataset whose elements are per-replica batches.

    Raises:
        DataConfigError: The global batch does not divide over `strategy`'s replicas.
    """
    spec.per_replica_batch_size(strategy.num_replicas_in_sync)  # fail before TF does
    checks.non_negative_int("start_step", start_step, error=DataConfigError)
    return strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset(spec, ctx, start_step=start_step))


def per_worker(strategy: tf.distribute.Strategy, spec: DataSpec) -> Any:
    """Parameter-server training: the per-worker dataset the coordinator's functions iterate.

    Each worker builds its own pipeline (TensorFlow's `create_per_worker_dataset`), sharded by
    example with the worker index only that worker knows, then shuffled, repeated and batched
    as `make_dataset` does. A worker that returns after a failure rebuilds its pipeline.

    Args:
        strategy: A `tf.distribute.ParameterServerStrategy` (with its coordinator).
        spec: The training data: a `dataset_fn` or files (each worker builds its pipeline), and
            it must repeat (the coordinator schedules steps, not epochs).

    Raises:
        DataConfigError: The source is a dataset, or the data does not repeat.
    """
    if not spec.effective_repeat:
        raise DataConfigError(
            "Invalid value for argument `repeat`. Received: repeat=False, but parameter-server "
            "training schedules steps, not epochs, so its training data must repeat. Pass "
            "repeat=True (the default for training data).")
    if isinstance(spec.source, tf.data.Dataset):
        raise DataConfigError(
            "Invalid value for argument `source`. Received: a tf.data.Dataset, but under "
            "ParameterServerStrategy each worker builds its own pipeline and a dataset made on the "
            "chief cannot be sent to them. Pass a dataset_fn(input_context) that builds it, or "
            "TFRecord file patterns.")
    num = strategy_workers.num_workers(strategy)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)

    def dataset_fn() -> tf.data.Dataset:
        index = tf.distribute.coordinator.experimental_get_current_worker_index()
        return make_dataset(spec, worker_shard=(num, index))

    return coordinator.create_per_worker_dataset(dataset_fn)


def for_fit(
    strategy: tf.distribute.Strategy, spec: DataSpec, *, start_step: int = 0
) -> tf.data.Dataset | tf.distribute.DistributedDataset:
    """The dataset to pass to Keras `Model.fit`, `evaluate` or `predict`.

    A plain dataset of global batches on one replica; a distributed dataset (which Keras accepts
    as is) when there are several replicas, so Keras does not shard or rebatch again.

    Args:
        strategy: The strategy the model was built under.
        spec: The data.
        start_step: Global steps already trained, as for `distribute`. Defaults to 0 (with
            `tfdist.keras.callbacks.BackupAndRestore`, leave it: the callback moves the input).

    Returns:
        A dataset Keras can iterate.
    """
    if strategy.num_replicas_in_sync == 1 and strategy_workers.num_workers(strategy) == 1:
        return make_dataset(spec, start_step=start_step)
    return distribute(strategy, spec, start_step=start_step)


def input_fn(spec: DataSpec) -> Callable[..., tf.data.Dataset]:
    """An Estimator-style `input_fn(input_context=None)` for the data.

    Args:
        spec: The data.

    Returns:
        A function building this pipeline's dataset of per-replica batches.
    """

    def _input_fn(input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        return make_dataset(spec, input_context)

    return _input_fn


# --- Inference: keyed, non-dropping sharding ------------------------------------------------------
# Training shards examples so that every replica gets full batches forever; inference must score
# every record exactly once. Records are keyed by their position (row number), split into
# contiguous key ranges ("shards", the unit of output and of resume) and the shards dealt to
# workers round-robin. Nothing is shuffled, repeated or dropped: a shard's last batch is short.


@dataclasses.dataclass(frozen=True)
class KeyRange:
    """One inference shard: the records with keys `start <= key < stop`.

    Attributes:
        index: The shard's position among all shards (0-based).
        start: First key.
        stop: One past the last key.
    """

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclasses.dataclass(frozen=True)
class InferencePlan:
    """How `num_records` keyed records are split into shards and dealt to workers.

    Attributes:
        num_records: Records in the input.
        shard_size: Records per shard (the last shard may be shorter).
        num_workers: Input pipelines (one per worker process).
        worker_index: This worker's index.
        shards: Every shard, in key order.
    """

    num_records: int
    shard_size: int
    num_workers: int
    worker_index: int
    shards: tuple[KeyRange, ...]

    @property
    def mine(self) -> tuple[KeyRange, ...]:
        """This worker's shards: shard `i` goes to worker `i % num_workers`."""
        return self.shards[self.worker_index::self.num_workers]

    def owner(self, shard: KeyRange) -> int:
        """The worker that writes `shard`."""
        return shard.index % self.num_workers


def plan_inference(
    num_records: int,
    *,
    shard_size: int,
    num_workers: int = 1,
    worker_index: int = 0,
    boundaries: Sequence[int] = (),
) -> InferencePlan:
    """Splits keys `0..num_records-1` into contiguous shards and deals them to workers.

    The split depends only on `num_records`, `shard_size` and `boundaries`, never on the number
    of workers, so a run restarted with a different number of workers can reuse finished shards.

    Args:
        num_records: Records in the input, at least 1.
        shard_size: Records per shard, at least 1.
        num_workers: Worker processes. Defaults to 1.
        worker_index: This worker, `0 <= worker_index < num_workers`. Defaults to 0.
        boundaries: Keys where a shard must start as well (e.g. where one input file ends and the
            next begins, so no shard spans two files). Defaults to none.

    Returns:
        The `InferencePlan`.

    Raises:
        DataConfigError: An argument is out of range.
    """
    for name, value in (("num_records", num_records), ("shard_size", shard_size),
                        ("num_workers", num_workers)):
        checks.positive_int(name, value, error=DataConfigError)
    if not 0 <= worker_index < num_workers:
        raise DataConfigError(f"Invalid value for argument `worker_index`. Received: worker_index="
                              f"{worker_index!r} for num_workers={num_workers}.")
    cuts = sorted({0, num_records, *(b for b in boundaries if 0 < b < num_records)})
    shards: list[KeyRange] = []
    for lo, hi in zip(cuts, cuts[1:]):
        for start in range(lo, hi, shard_size):
            shards.append(KeyRange(len(shards), start, min(start + shard_size, hi)))
    return InferencePlan(num_records, shard_size, num_workers, worker_index, tuple(shards))


def inference_dataset(
    shards: Sequence[KeyRange],
    read_batches: Callable[[tf.Tensor, tf.Tensor, int], tf.data.Dataset],
    batch_size: int,
    *,
    batch_map_fn: Callable[..., Any] | None = None,
) -> tf.data.Dataset:
    """One input pipeline of keyed batches over `shards`, in key order, nothing dropped.

    Each shard is batched on its own (a batch never spans two shards, and a shard's last batch
    is short rather than dropped or padded), so a worker can write a shard as soon as its last
    batch is scored.

    Args:
        shards: The shards this pipeline reads, in order.
        read_batches: `read_batches(start, stop, batch_size)` -> a dataset of batches of the
            records with keys in `[start, stop)`, in key order (start and stop are int64
            scalar tensors).
        batch_size: Records per batch.
        batch_map_fn: Per-batch preprocessing of the records (e.g. `tf.io.parse_example`),
            applied in parallel and in order. Defaults to `None`.

    Returns:
        A dataset of `(keys, records)` batches: `keys` an int64 vector.
    """
    if not shards:
        raise DataConfigError("inference_dataset got no shards; pass at least one KeyRange.")
    starts = tf.constant([s.start for s in shards], tf.int64)
    stops = tf.constant([s.stop for s in shards], tf.int64)

    def one_shard(start: tf.Tensor, stop: tf.Tensor) -> tf.data.Dataset:
        keys = tf.data.Dataset.range(start, stop).batch(batch_size)
        return tf.data.Dataset.zip((keys, read_batches(start, stop, batch_size)))

    ds = tf.data.Dataset.from_tensor_slices((starts, stops)).flat_map(one_shard)
    if batch_map_fn is not None:
        ds = ds.map(lambda keys, records: (keys, batch_map_fn(records)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options)
