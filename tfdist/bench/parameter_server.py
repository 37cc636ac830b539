"""`tfdist-bench --parameter-server`: parameter-server training vs the synchronous routes.

Two launches by `tfdist.launch`, the same model, data and global batch (issue 16):

- `parameter_server`: 1 chief + `workers` workers + 1 ps, this package's worker mode under
  `tfdist.get_strategy("parameter_server")`. Worker and ps tasks serve; the chief times the
  routes that train under the strategy, `ctl` (`Trainer`/`Controller`) and `estimator`
  (`Estimator.train`), both scheduling functions of 10 steps (their default) on the workers,
  `steps_per_call` steps per loop call, in interleaved repetitions.
- `multi_worker`: the same `workers` worker processes under `MultiWorkerMirroredStrategy`
  (`tfdist.bench.multiworker`), routes `reference`, `ctl` and `estimator`.

Processes are not pinned to cores: the ps layout runs more processes than workers, and what
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
NUM_PS = 1


def run(options: BenchOptions, work_dir: str, say: Any = print) -> dict[str, Any]:
    """Runs both launches; returns `{"parameter_server": row, "multi_worker": row, ...}`.

    Raises:
        multiworker.BenchError: A process failed or the chief reported nothing.
    """
    say(f"tfdist-bench: {ROW}: 1 chief + {options.workers} workers + {NUM_PS} ps, routes "
        f"{', '.join(ROUTES)}, {options.mw_reps} reps ...")
    ps_row = _launch(options, work_dir)
    sync = dataclasses.replace(options, routes=SYNC_ROUTES)
    say(f"tfdist-bench: multi_worker: {options.workers} worker process(es) x 1 core(s), routes "
        f"{', '.join(SYNC_ROUTES)}, {options.mw_reps} reps ...")
    mw_row = multiworker._launch("multi_worker", options.workers, 1, sync, work_dir)
    return {"model": options.model, "batch": options.batch, "steps": options.steps,
            "steps_per_call": options.steps_per_call, "reps": options.mw_reps,
            ROW: ps_row, "multi_worker": mw_row}


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
                         num_workers=options.workers, chief=True, num_ps=NUM_PS,
                         timeout=options.timeout, env=env, stream=False, grace=5.0)
    chief = results[0]
    if chief.returncode != 0:
        how = "was stopped (timeout)" if chief.stopped else "failed"
        raise multiworker.BenchError(
            f"{ROW}: {chief.name} {how} ({describe_status(chief.returncode)}); its last lines:\n"
            f"{multiworker._tail(chief.output)}")
    with open(os.path.join(out_dir, "chief.json")) as f:
        return json.load(f)


def worker_main(spec: dict[str, Any], options: BenchOptions) -> int:
    """Worker mode of the `parameter_server` row (TF_CONFIG set by the launcher).

    On worker and ps tasks `get_strategy` serves until the launcher stops the process; the
    chief times the routes and writes `chief.json`.
    """
    import keras

    import tfdist
    from tfdist.bench import routes as routes_lib
    from tfdist.bench import teardown
    from tfdist.bench import timing
    from tfdist.bench import workloads

    strategy = tfdist.get_strategy("parameter_server")  # only the chief returns
    keras.utils.set_random_seed(options.seed)
    workload = per_worker(workloads.load(options.model, seed=options.seed))
    work_dir = os.path.join(os.path.dirname(spec["out_dir"]), ROW)
    built = {name: routes_lib.build(name, strategy, workload, options.batch,
                                    options.steps_per_call, work_dir) for name in ROUTES}
    teardown.keep(built)
    for route in built.values():  # warm-up, not counted
        route.run(options.steps_per_call)
    seconds = timing.interleaved(
        {name: functools.partial(route.run, options.steps) for name, route in built.items()},
        options.mw_reps)
    report = {"workers": options.workers, "ps": NUM_PS, "routes": {
        name: {"seconds": timing.summary(seconds[name]),
               "steps_per_sec": timing.summary([options.steps / s for s in seconds[name]]),
               "examples_per_sec": timing.summary(
                   [options.steps * options.batch / s for s in seconds[name]]),
               "first_call_seconds": built[name].first_call_seconds}
        for name in ROUTES}}
    path = os.path.join(spec["out_dir"], "chief.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)
    return 0


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
    """The comparison as text lines: examples/s (median) of every route of both rows."""
    def rates(row: dict[str, Any]) -> str:
        return ", ".join(f"{name} {r['examples_per_sec']['median']:,.0f}"
                         for name, r in row["routes"].items())

    ps_row, mw_row = report[ROW], report["multi_worker"]
    return "\n".join([
        f"parameter-server vs synchronous training: model {report['model']}, global batch "
        f"{report['batch']}, {report['steps']} steps per timed call, {report['reps']} reps "
        "(examples/s, median; measured on this machine)",
        f"  parameter_server (1 chief + {ps_row['workers']} workers + {ps_row['ps']} ps): "
        f"{rates(ps_row)}",
        f"  multi_worker ({mw_row['workers']} workers, 1 core each): {rates(mw_row)}",
    ])
