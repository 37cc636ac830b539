"""`tfdist-bench --parameter-server`: parameter-server training vs the synchronous routes.

Two launches by `tfdist.launch`, the same model, data and global batch (issue 16):

- `parameter_server`: 1 chief + `workers` workers + `ps` ps tasks, this package's worker mode
  under `tfdist.get_strategy("parameter_server")` (with `ps > 1`, a `MinSizePartitioner` splits
  variables of `MIN_SHARD_BYTES` or more across the ps tasks). Worker and ps tasks serve; the chief times the
  routes that train under the strategy, `ctl` (`Trainer`/`Controller`) and `estimator`
  (`Estimator.train`), both scheduling functions of 10 steps (their default) on the workers,
  `steps_per_call` steps per loop call, in interleaved repetitions. For a model with an
  embedding table (`--model embedding`) the chief also times `ctl` on its dense head alone
  (the same layers on the pooled vectors, no table), in the same repetitions: the rest of the
  step time is the embedding's (id transfer, gather, pooling, sparse update on the ps); and
  `ctl` with `keras.layers.Embedding` as the lookup, which reads the whole table from the ps on
  every step (models/embedding.py).
- `multi_worker`: the same `workers` worker processes under `MultiWorkerMirroredStrategy`
  (`tfdist.bench.multiworker`), routes `reference`, `ctl` and `estimator`.

The report also carries `tfdist.bench.traffic`'s estimate of the bytes a step moves in each
row. Processes are not pinned to cores: the ps layout runs more processes than workers, and what
it costs is part of the comparison. Numbers from a loaded machine are only indicative; rerun
on a quiet one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import tempfile
from typing import Any

from tfdist.bench import multiworker
from tfdist.bench.options import BenchOptions
from tfdist.launch.group import describe_status

ROW = "parameter_server"
ROUTES = ("ctl", "estimator")  # the routes that train under ParameterServerStrategy
SYNC_ROUTES = ("reference", "ctl", "estimator")
HEAD = "ctl (dense head only)"
KERAS_LOOKUP = "ctl (keras.layers.Embedding)"
MIN_SHARD_BYTES = 256 << 10  # the dense head's kernels stay whole; the table is split


def run(options: BenchOptions, work_dir: str, say: Any = print) -> dict[str, Any]:
    """Runs both launches; returns `{"parameter_server": row, "multi_worker": row, ...}`.

    Raises:
        multiworker.BenchError: A process failed or the chief reported nothing.
    """
    say(f"tfdist-bench: {ROW}: 1 chief + {options.workers} workers + {options.ps} ps, routes "
        f"{', '.join(routes(options))}, {options.mw_reps} reps ...")
    ps_row = _launch(options, work_dir)
    sync = dataclasses.replace(options, routes=SYNC_ROUTES)
    say(f"tfdist-bench: multi_worker: {options.workers} worker process(es) x 1 core(s), routes "
        f"{', '.join(SYNC_ROUTES)}, {options.mw_reps} reps ...")
    # `_launch` returns its rows by name (one per `--wire` variant too; none here).
    mw_row = multiworker._launch("multi_worker", options.workers, 1, sync, work_dir)["multi_worker"]
    return {"model": options.model, "batch": options.batch, "steps": options.steps,
            "steps_per_call": options.steps_per_call, "reps": options.mw_reps,
            ROW: ps_row, "multi_worker": mw_row, "traffic": ps_row.pop("traffic")}


def _launch(options: BenchOptions, work_dir: str) -> dict[str, Any]:
    from tfdist import launch  # no TensorFlow import

    out_dir = tempfile.mkdtemp(prefix=f"{ROW}-", dir=work_dir)
    spec_path = os.path.join(out_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump({"row": ROW, "cores_per_worker": 0, "out_dir": out_dir,
                   "options": dataclasses.asdict(options)}, f)
    env = {"PYTHONPATH": os.pathsep.join(
        p for p in (multiworker._PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
    results = launch.run([sys.executable, "-m", "tfdist.bench", "--_worker", spec_path],
                         num_workers=options.workers, chief=True, num_ps=options.ps,
                         timeout=options.timeout, env=env, stream=False, grace=5.0)
    chief = results[0]
    if chief.returncode != 0:
        # The process that failed by itself, not one the launcher stopped because of it.
        first = next((r for r in results if r.returncode != 0 and not r.stopped), chief)
        how = "was stopped (timeout)" if first.stopped else "failed"
        raise multiworker.BenchError(
            f"{ROW}: {first.name} {how} ({describe_status(first.returncode)}); its last lines:\n"
            f"{multiworker._tail(first.output)}")
    with open(os.path.join(out_dir, "chief.json")) as f:
        return json.load(f)


def worker_main(spec: dict[str, Any], options: BenchOptions) -> int:
    """Worker mode of the `parameter_server` row (TF_CONFIG set by the launcher).

    On worker and ps tasks `get_strategy` serves until the launcher stops the process; the
    chief times the routes and writes `chief.json`.
    """
    task = f"{os.environ.get('TFDIST_TASK_TYPE', '')}:{os.environ.get('TFDIST_TASK_ID', '')}"
    multiworker._inject_fault(ROW, task)
    import keras
    import tensorflow as tf

    import tfdist
    from tfdist.bench import routes as routes_lib
    from tfdist.bench import teardown
    from tfdist.bench import timing
    from tfdist.bench import traffic
    from tfdist.bench import workloads

    partitioner = None
    if options.ps > 1:
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=MIN_SHARD_BYTES, max_shards=options.ps)
    # Only the chief returns.
    strategy = tfdist.get_strategy("parameter_server", variable_partitioner=partitioner)
    keras.utils.set_random_seed(options.seed)
    loaded = workloads.load(options.model, seed=options.seed)
    workload = per_worker(loaded)
    work_dir = os.path.join(os.path.dirname(spec["out_dir"]), ROW)
    built = {name: routes_lib.build(name, strategy, workload, options.batch,
                                    options.steps_per_call, work_dir) for name in routes(options)}
    if loaded.table is not None:
        built[HEAD] = routes_lib.build("ctl", strategy, per_worker(workloads.dense_head(loaded)),
                                       options.batch, options.steps_per_call,
                                       os.path.join(work_dir, "head"))
        keras_lookup = workloads.load(options.model, seed=options.seed, lookup="keras")
        built[KERAS_LOOKUP] = routes_lib.build("ctl", strategy, per_worker(keras_lookup),
                                               options.batch, options.steps_per_call,
                                               os.path.join(work_dir, "keras_lookup"))
    teardown.keep(built)
    for route in built.values():  # warm-up, not counted
        route.run(options.steps_per_call)
    seconds = timing.interleaved(
        {name: functools.partial(route.run, options.steps) for name, route in built.items()},
        options.mw_reps)
    report: dict[str, Any] = {"workers": options.workers, "ps": options.ps, "routes": {
        name: {"seconds": timing.summary(seconds[name]),
               "steps_per_sec": timing.summary([options.steps / s for s in seconds[name]]),
               "examples_per_sec": timing.summary(
                   [options.steps * options.batch / s for s in seconds[name]]),
               "first_call_seconds": built[name].first_call_seconds}
        for name in built}}
    report["traffic"] = traffic.per_step(loaded, options.batch, options.workers)
    if loaded.table is not None:
        # Paired within each repetition: the share of a ctl step not spent in the dense head.
        report["embedding_share"] = timing.summary(
            [1 - h / c for h, c in zip(seconds[HEAD], seconds["ctl"])])
        report["table_shards"] = table_shards(partitioner, loaded.table)
    path = os.path.join(spec["out_dir"], "chief.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)
    return 0


def routes(options: BenchOptions) -> tuple[str, ...]:
    """The routes the ps row times: not `estimator` with `ps > 1` (tfdist.estimator does not
    train sharded variables yet, docs/parameter_server.md#not-done-yet-issue-16)."""
    return ROUTES if options.ps == 1 else tuple(r for r in ROUTES if r != "estimator")


def table_shards(partitioner: Any, table: tuple[int, int]) -> list[list[int]]:
    """Shapes of the table's shards on the ps tasks (one shard without a partitioner)."""
    import tensorflow as tf

    rows, dim = table
    if partitioner is None:
        return [[rows, dim]]
    parts = int(partitioner(tf.TensorShape([rows, dim]), tf.float32)[0])
    # TensorFlow gives the first `rows % parts` shards one extra row.
    return [[rows // parts + (i < rows % parts), dim] for i in range(parts)]


def per_worker(workload: Any) -> Any:
    """The workload with a `dataset_fn` source: each worker builds its own pipeline."""
    import tensorflow as tf

    from tfdist import data as data_lib

    class PerWorker(type(workload)):  # type: ignore[misc]
        def spec(self, global_batch_size: int) -> Any:
            features, labels = self.features, self.labels

            def source(_: Any) -> tf.data.Dataset:  # traced on the chief, built on each worker
                return tf.data.Dataset.from_tensor_slices((features, labels))

            return data_lib.DataSpec(source=source, global_batch_size=global_batch_size,
                                     shuffle_buffer=0)

    return PerWorker(**{f.name: getattr(workload, f.name) for f in dataclasses.fields(workload)})


def render(report: dict[str, Any]) -> str:
    """The comparison as text lines: examples/s (median) of every route of both rows, and for
    an embedding model the embedding's share of the ps step time and the estimated traffic."""
    from tfdist.bench import traffic

    def rates(row: dict[str, Any]) -> str:
        return ", ".join(f"{name} {r['examples_per_sec']['median']:,.0f}"
                         for name, r in row["routes"].items())

    ps_row, mw_row = report[ROW], report["multi_worker"]
    lines = [
        f"parameter-server vs synchronous training: model {report['model']}, global batch "
        f"{report['batch']}, {report['steps']} steps per timed call, {report['reps']} reps "
        "(examples/s, median; measured on this machine)",
        f"  parameter_server (1 chief + {ps_row['workers']} workers + {ps_row['ps']} ps): "
        f"{rates(ps_row)}",
        f"  multi_worker ({mw_row['workers']} workers, 1 core each): {rates(mw_row)}",
    ]
    if "embedding_share" in ps_row:
        share = ps_row["embedding_share"]
        shards = ", ".join("x".join(map(str, shape)) for shape in ps_row["table_shards"])
        lines.append(f"  parameter_server ctl step time outside the dense head (the embedding): "
                     f"{share['median']:.0%} (range {share['min']:.0%}-{share['max']:.0%}); "
                     f"table shards: {shards}")
    if report.get("traffic", {}).get("table_bytes"):
        lines.append(traffic.render(report["traffic"]))
    return "\n".join(lines)
