"""`tfdist-bench --predict`: the predict route's throughput against plain Keras `predict`.

Rows (same model, same data, same batch per replica; every rate in examples/s, tracing and the
first step left out):

- `keras_predict`: `model.predict(x, batch_size=B)` in this process, on one device;
- `one_device`: tfdist-predict's loop in this process (default strategy), shards written;
- `mirrored`: the same over `virtual_cpus` logical CPUs;
- `one_worker`: one tfdist-predict worker process on `workers` cores;
- `multi_worker`: `workers` worker processes pinned to one core each (1 intra-op and 1
  inter-op thread), under `tfdist.launch`;
- `input_pipeline`: tfdist-predict's input pipeline read alone, without the model.

Targets: one_device >= 1.0x keras_predict; multi_worker >= 0.9x one_worker; input_pipeline
>= 3x what one_device consumes, each the median over reps of the ratio within a rep (the rows of
one rep run back to back). Worker rows rate the slowest worker: the rows all workers scored over
the longest worker's scoring time.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from tfdist.bench.multiworker import BenchError, _pin, _tail

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARDS = 8
TARGETS = (("one_device vs keras_predict", "one_device", "keras_predict", 1.0),
           ("multi_worker vs one_worker", "multi_worker", "one_worker", 0.9),
           ("input_pipeline vs one_device", "input_pipeline", "one_device", 3.0))


def _prepare(model_name: str, rows: int, seed: int, work_dir: str) -> tuple[str, str]:
    """Saves the bench model (random weights) and `rows` examples; returns their paths."""
    import keras
    import numpy as np

    from tfdist.bench import workloads

    keras.utils.set_random_seed(seed)
    workload = workloads.load(model_name, seed=seed)
    model = workload.build()
    model(workload.features[:1])
    model_path = os.path.join(work_dir, "model.keras")
    model.save(model_path)
    repeats = -(-rows // len(workload.features))
    x = np.concatenate([workload.features] * repeats)[:rows]
    data_path = os.path.join(work_dir, "x.npy")
    np.save(data_path, x)
    return model_path, data_path


def _options(model: str, data: str, out: str, batch: int, rows: int, **kwargs: Any):
    from tfdist.predict import PredictOptions

    return PredictOptions(model=model, inputs=(data,), output_dir=out, batch_size=batch,
                          shard_size=-(-rows // SHARDS), output_format="numpy", progress=False,
                          **kwargs)


def _rate(workers: list[dict[str, Any]]) -> float:
    seconds = max(w["steady_seconds"] for w in workers)
    return sum(w["steady_rows"] for w in workers) / seconds if seconds > 0 else 0.0


def _launch(row: str, workers: int, cores: int, spec: dict[str, Any], work_dir: str,
            timeout: float) -> dict[str, Any]:
    from tfdist import launch

    out = tempfile.mkdtemp(prefix=f"{row}-", dir=work_dir)
    spec = {**spec, "cores_per_worker": cores, "output_dir": os.path.join(out, "out")}
    spec_path = os.path.join(out, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", ""))
                                         if p)}
    results = launch.run([sys.executable, "-m", "tfdist.bench", "--_predict_worker", spec_path],
                         num_workers=workers, timeout=timeout, env=env, stream=False, grace=5.0)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        raise BenchError(f"predict {row}: {failed[0].name} failed; its last lines:\n"
                         f"{_tail(failed[0].output)}")
    with open(os.path.join(spec["output_dir"], "summary.json")) as f:
        summary = json.load(f)
    return {"examples_per_sec": _rate(summary["workers"]), "workers": workers,
            "cores_per_worker": cores, "per_worker": summary["workers"]}


def worker_main(spec_path: str) -> int:
    """Worker mode (`--_predict_worker`): pin, then run tfdist-predict's job. Never for users."""
    with open(spec_path) as f:
        spec = json.load(f)
    rank = int(os.environ.get("TFDIST_RANK", "0"))
    cores = _pin(rank, spec["cores_per_worker"])  # before TensorFlow sizes its thread pools
    import tensorflow as tf

    from tfdist.predict import job

    tf.config.threading.set_intra_op_parallelism_threads(len(cores))
    tf.config.threading.set_inter_op_parallelism_threads(len(cores))
    job.run(_options(spec["model"], spec["data"], spec["output_dir"], spec["batch"], spec["rows"]))
    return 0


def run(*, model_name: str, batch: int, rows: int, reps: int, workers: int, virtual_cpus: int,
        timeout: float, seed: int, say: Any) -> dict[str, Any]:
    """Measures every row and the targets; returns the report section (JSON-safe)."""
    import shutil

    work_dir = tempfile.mkdtemp(prefix="tfdist-bench-predict-")
    try:
        return _run(model_name, batch, rows, reps, workers, virtual_cpus, timeout, seed, say,
                    work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _run(model_name: str, batch: int, rows: int, reps: int, workers: int, virtual_cpus: int,
         timeout: float, seed: int, say: Any, work_dir: str) -> dict[str, Any]:
    from tfdist import strategy as strategy_lib

    strategy_lib.configure_virtual_cpus(virtual_cpus)  # before TensorFlow initialises
    model_path, data_path = _prepare(model_name, rows, seed, work_dir)
    spec = {"model": model_path, "data": data_path, "batch": batch, "rows": rows}
    results: dict[str, Any] = {}
    # Launches first, while this process computes nothing; interleaved, `reps` of each.
    launched: dict[str, list[dict[str, Any]]] = {"one_worker": [], "multi_worker": []}
    for rep in range(reps):
        for row, count, cores in (("one_worker", 1, workers), ("multi_worker", workers, 1)):
            say(f"tfdist-bench: predict {row} ({rep + 1}/{reps}): {count} worker(s) x {cores} "
                "core(s) ...")
            launched[row].append(_launch(row, count, cores, spec, work_dir, timeout))
    for row, runs in launched.items():
        values = [r["examples_per_sec"] for r in runs]
        median = sorted(runs, key=lambda r: r["examples_per_sec"])[len(runs) // 2]
        results[row] = {**median, "examples_per_sec": statistics.median(values), "reps": values}

    import keras
    import numpy as np

    from tfdist import cluster as cluster_lib
    from tfdist import data as data_lib
    from tfdist.predict import features, inputs, job, model as model_lib, readers

    x = np.load(data_path)
    plain = keras.saving.load_model(model_path)
    plain.predict(x[: 2 * batch], batch_size=batch, verbose=0)  # trace outside the timing
    say(f"tfdist-bench: predict in-process rows, {reps} reps ...")
    seconds: dict[str, list[float]] = {"keras_predict": [], "one_device": [], "mirrored": [],
                                       "input_pipeline": []}
    rates: dict[str, list[float]] = {k: [] for k in seconds}
    source = readers.open_source([data_path])
    loaded = model_lib.load(model_path)
    feeds = features.plan_feeds(loaded.inputs, source.columns)
    plan = data_lib.plan_inference(rows, shard_size=-(-rows // SHARDS))
    for rep in range(reps):
        started = time.perf_counter()
        plain.predict(x, batch_size=batch, verbose=0)
        rates["keras_predict"].append(rows / (time.perf_counter() - started))
        for row, kwargs in (("one_device", dict(strategy="default")),
                            ("mirrored", dict(strategy="mirrored", virtual_cpus=virtual_cpus))):
            out = os.path.join(work_dir, f"{row}-{rep}")
            summary = job.run(_options(model_path, data_path, out, batch, rows, **kwargs),
                              cluster=cluster_lib.ClusterInfo())
            rates[row].append(_rate(summary["workers"]))
        dataset = inputs.build(source, feeds, plan.shards, batch)
        it = iter(dataset)
        next(it)  # the first batch starts the pipeline; rate the rest
        started, count = time.perf_counter(), 0
        for keys, _ in it:
            count += int(keys.shape[0])
        rates["input_pipeline"].append(count / (time.perf_counter() - started))
    for row, values in rates.items():
        results[row] = {"examples_per_sec": statistics.median(values), "reps": values}
    return {"model": model_name, "batch": batch, "rows": rows, "results": results,
            "targets": targets(results)}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The three target checks from the rows' per-rep rates."""
    checks = []
    for name, row, base, goal in TARGETS:
        # Rows of one rep ran back to back: the median of their ratios is steadier than the
        # ratio of medians when other processes load the machine unevenly over the run.
        pairs = [a / b for a, b in zip(results[row]["reps"], results[base]["reps"])]
        ratio = statistics.median(pairs)
        checks.append({"target": name, "ratio": ratio, "goal": goal, "met": ratio >= goal,
                       "rep_ratios": pairs})
    return checks


def render(section: dict[str, Any], markdown: bool = False) -> str:
    """The predict rows and targets as a table."""
    rows: list[tuple[str, ...]] = [("row", "examples/s", "vs keras_predict")]
    base = section["results"]["keras_predict"]["examples_per_sec"]
    order = ("keras_predict", "one_device", "mirrored", "one_worker", "multi_worker",
             "input_pipeline")
    for name in order:
        rate = section["results"][name]["examples_per_sec"]
        rows.append((name, f"{rate:,.0f}", f"{rate / base:.2f}x"))
    targets: list[tuple[str, ...]] = [("target", "ratio", "goal", "met")]
    for t in section["targets"]:
        targets.append((t["target"], f"{t['ratio']:.2f}x", f">= {t['goal']:.1f}x",
                        "yes" if t["met"] else "NO"))
    head = (f"predict: model {section['model']}, {section['rows']} rows, batch {section['batch']} "
            "per replica")
    return "\n".join([head, _table(rows, markdown), "", _table(targets, markdown)])


def _table(rows: list[tuple[str, ...]], markdown: bool) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    if markdown:
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        return "\n".join(lines)
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
