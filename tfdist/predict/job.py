"""One prediction run on one worker: check, load, score its shards, and (chief) merge.

Everything that can be wrong with the arguments is found before any shard is scored: the
cluster role, the output directory, the model, the inputs, the features against the serving
signature, the post-processing against the outputs, and the run manifest of an existing output
directory. Nothing already written is touched when a check fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfdist import cluster as cluster_lib
from tfdist import data as data_lib
from tfdist import strategy as strategy_lib
from tfdist.predict import faults, inference, inputs, merge, readers, store, writers
from tfdist.predict import features as features_lib
from tfdist.predict import model as model_lib
from tfdist.predict.errors import PredictError
from tfdist.predict.options import PredictOptions
from tfdist.predict.progress import Progress

MANIFEST_VERSION = 1


def _role(cluster: cluster_lib.ClusterInfo) -> tuple[int, int]:
    if cluster.rank is None:
        raise PredictError(f"tfdist-predict runs on chief and worker tasks; this task is "
                           f"{cluster.task_type}:{cluster.task_id}. Launch it without ps or "
                           "evaluator tasks.")
    return cluster.rank, cluster.world_size


def _attempt_id(cluster: cluster_lib.ClusterInfo) -> str:
    """The same on every worker of one launch, different for the next launch (fresh ports)."""
    if cluster.is_local:
        return uuid.uuid4().hex[:12]
    text = json.dumps(cluster.cluster_spec, sort_keys=True) + os.environ.get("TFDIST_RESTART", "")
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _local_strategy(options: PredictOptions) -> tf.distribute.Strategy:
    local = cluster_lib.ClusterInfo()  # workers never all-reduce: each runs its own devices
    return strategy_lib.get_strategy(options.strategy, virtual_cpus=options.virtual_cpus,
                                     cluster=local)


def run(options: PredictOptions, *, cluster: cluster_lib.ClusterInfo | None = None,
        strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Runs this worker's part of a prediction run (the chief also merges and summarises).

    Args:
        options: The run.
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.
        strategy: This worker's local strategy. Defaults to one from `options`.

    Returns:
        The chief's summary (also in `<output_dir>/summary.json`), or this worker's stats.

    Raises:
        PredictError: Bad arguments, model, inputs or output directory (before any work).
    """
    started = time.perf_counter()
    cluster = cluster if cluster is not None else cluster_lib.resolve()
    rank, world = _role(cluster)
    out = options.output_dir
    model_lib.resolve_path(options.model)  # a missing model fails before anything is created
    store.check_writable(out)
    source = readers.open_source(options.inputs, options.input_format)
    strategy = strategy if strategy is not None else _local_strategy(options)
    model = model_lib.load(options.model, strategy)
    raw = (source.format == "tfrecord" and len(model.inputs) == 1
           and next(iter(model.inputs.values())).dtype == tf.string and options.features is None)
    feeds = [] if raw else features_lib.plan_feeds(
        model.inputs, source.columns, features=options.features, id_column=options.id_column)
    if raw:
        name, spec = next(iter(model.inputs.items()))
        feeds = [features_lib.Feed(name, ("<serialized records>",), spec)]
        if options.id_column is not None and options.id_column not in source.columns:
            raise PredictError(f"Invalid value for argument `id_column`. Received: id_column="
                               f"{options.id_column!r}, not a column of the input (columns: "
                               f"{list(source.columns)}).")
    options.postprocess.check(model.outputs)
    plan = data_lib.plan_inference(source.num_records, shard_size=options.shard_size,
                                   num_workers=world, worker_index=rank,
                                   boundaries=source.boundaries)
    fingerprint = {"version": MANIFEST_VERSION, "model": os.path.abspath(model.path),
                   "model_fingerprint": model_lib.fingerprint(model.path, model.kind),
                   "inputs": readers.fingerprint(source), "num_records": source.num_records,
                   "num_shards": len(plan.shards), **options.fingerprint_fields()}
    resumed = store.claim_run(out, fingerprint)
    num = len(plan.shards)
    done = store.completed_shards(out, num)
    todo = [s for s in plan.mine if s.index not in done]
    skipped = len(plan.mine) - len(todo)
    store.remove_stale_temps(out, {s.index for s in todo}, num)
    logging.info("tfdist-predict worker %d/%d: %s; %s; %d of %d shards to score (%d done)", rank,
                 world, readers.describe(source), strategy_lib.describe(strategy), len(todo),
                 len(plan.mine), skipped)

    chief = rank == 0
    progress = Progress(source.num_records, sum(s.size for s in plan.shards if s.index in done),
                        enabled=chief and options.progress)
    rows_done_elsewhere = lambda: sum(  # noqa: E731
        s.size for s in plan.shards if s.index in store.completed_shards(out, num))
    startup = time.perf_counter() - started
    timings = inference.Timings()
    loop_started = time.perf_counter()
    write_seconds, scored = 0.0, 0
    if todo:
        dataset = inputs.build(source, feeds, todo, options.batch_size,
                               id_column=options.id_column if source.tfrecord else None,
                               raw_records=raw)
        scored, write_seconds = _score(out, plan, todo, dataset, strategy, model, source, options,
                                       timings, rank, progress, rows_done_elsewhere)
    loop_seconds = time.perf_counter() - loop_started
    attempt = _attempt_id(cluster)
    stats = {"rank": rank, "attempt": attempt, "rows_scored": scored,
             "shards_written": len(todo), "shards_skipped": skipped,
             "startup_seconds": startup, "loop_seconds": loop_seconds,
             "input_seconds": timings.input, "inference_seconds": timings.inference,
             "write_seconds": write_seconds, "batches": timings.batches,
             "first_step_seconds": timings.first_step, "steady_rows": timings.steady_rows,
             "steady_seconds": timings.steady,
             "strategy": strategy_lib.describe(strategy)}
    store.write_json(store.worker_stats_path(out, rank), stats)
    if not chief:
        return stats

    def all_stats() -> list[dict[str, Any]] | None:
        found = []
        for r in range(world):
            try:
                s = store.read_json(store.worker_stats_path(out, r))
            except (OSError, ValueError):
                return None
            if s.get("attempt") != attempt:
                return None
            found.append(s)
        return found

    merge.wait_for(lambda: len(store.completed_shards(out, num)) == num,
                   timeout=options.wait_timeout, what=f"all {num} shards",
                   tick=lambda: progress.update(rows_done_elsewhere()))
    progress.update(source.num_records)
    progress.close()
    collected: list[list[dict[str, Any]]] = []

    def stats_ready() -> bool:  # keeps what it read: a second read could see a newer attempt
        found = all_stats()
        if found is not None:
            collected.append(found)
        return found is not None

    merge.wait_for(stats_ready, timeout=options.wait_timeout, what="every worker's stats")
    workers = collected[-1]
    merge_started = time.perf_counter()
    target = merge.output_path(out, options.output_format, options.merge)
    key_name = options.id_column or "key"
    if os.path.exists(target) and resumed and not any(w["shards_written"] for w in workers):
        rows = source.num_records  # an earlier attempt merged these very shards already
    else:
        target, rows = merge.merge(out, plan, fmt=options.output_format,
                                   merge_into_one=options.merge, post=options.postprocess,
                                   key_name=key_name)
    merge_seconds = time.perf_counter() - merge_started
    scored_rows = sum(w["rows_scored"] for w in workers)
    slowest = max(w["loop_seconds"] for w in workers)
    summary = {
        "rows": rows, "output": target, "output_format": options.output_format,
        "shards": num, "shards_written": sum(w["shards_written"] for w in workers),
        "shards_skipped": sum(w["shards_skipped"] for w in workers), "resumed": resumed,
        "rows_scored": scored_rows,
        "rows_per_second": scored_rows / slowest if slowest > 0 else 0.0,
        "wall_seconds": time.perf_counter() - started, "merge_seconds": merge_seconds,
        "input_seconds": sum(w["input_seconds"] for w in workers),
        "num_workers": world, "model": model.path, "workers": workers,
    }
    store.write_json(os.path.join(out, store.SUMMARY_FILE), summary)
    return summary


def _score(out, plan, todo, dataset, strategy, model, source, options, timings, rank, progress,
           rows_elsewhere) -> tuple[int, float]:
    """Scores `todo`, writing each shard as soon as its last row is scored."""
    num = len(plan.shards)
    starts = np.array([s.start for s in todo])
    pending: dict[int, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = {}
    counts = dict.fromkeys(range(len(todo)), 0)
    written = scored = 0
    write_seconds = 0.0
    ids = source.arrays[options.id_column] if options.id_column and source.arrays else None
    elsewhere = rows_elsewhere()
    last_poll = time.perf_counter()
    for keys, outputs in inference.predict_batches(strategy, model, dataset, timings=timings):
        if len(keys) == 0:
            continue
        which = np.searchsorted(starts, keys, side="right") - 1
        for slot in np.unique(which):
            mask = which == slot
            pending.setdefault(int(slot), []).append(
                (keys[mask], {n: v[mask] for n, v in outputs.items()}))
            counts[int(slot)] += int(mask.sum())
            if counts[int(slot)] == todo[slot].size:
                t = time.perf_counter()
                parts = pending.pop(int(slot))
                shard_keys = np.concatenate([k for k, _ in parts])
                shard_out = {n: np.concatenate([o[n] for _, o in parts]) for n in parts[0][1]}
                if ids is not None:
                    shard_out[features_lib.ID_FEATURE] = ids[shard_keys]
                store.write_shard(store.shard_path(out, todo[slot].index, num), shard_keys,
                                  {n: writers.plain(v) for n, v in shard_out.items()})
                write_seconds += time.perf_counter() - t
                written += 1
                faults.after_shard(rank, written)
        scored += len(keys)
        if progress.enabled and time.perf_counter() - last_poll > progress.interval:
            elsewhere, last_poll = rows_elsewhere(), time.perf_counter()
        if progress.enabled:
            mine_pending = sum(counts[s] for s in pending)
            progress.update(max(progress.done, elsewhere + mine_pending))
    return scored, write_seconds
