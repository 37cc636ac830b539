"""The `multi_worker` rows: real worker processes started by `tfdist.launch`, one core each.

Two launches, one after the other, each running this package's worker mode
(`python -m tfdist.bench --_worker SPEC`) under `MultiWorkerMirroredStrategy`:

- `one_worker`: 1 worker on `workers` cores (the baseline for the scaling target; only the
  `BASELINE_ROUTES` it needs, to keep the default run within a few minutes);
- `multi_worker`: `workers` workers pinned to one core each (`os.sched_setaffinity` before
  TensorFlow starts, and 1 intra-op and 1 inter-op thread).

Same global batch, same routes. Every worker writes `worker-<rank>.json`; the parent merges the
chief's timings with every worker's matmul peak. The launcher picks free loopback ports and
stops every child (SIGTERM, then SIGKILL) when one fails, on a timeout or on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys
import tempfile
import time
from typing import Any

from tfdist.bench.options import BenchOptions
from tfdist.launch.group import describe_status

BASELINE_ROUTES = ("reference", "ctl")
# Tests only: "ROW:RANK:hang" or "ROW:RANK:exit" makes that worker never finish or exit 3 at
# once, so a failed launch is triggered by design rather than by a race against a timeout.
# The parameter_server row names tasks instead of ranks: "parameter_server:chief:0:exit".
FAULT_VAR = "TFDIST_BENCH_TEST_FAULT"
FAULT_EXIT_STATUS = 3
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BenchError(RuntimeError):
    """A measurement that could not be made (e.g. a worker process failed)."""


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _launch(row: str, workers: int, cores_per_worker: int, options: BenchOptions,
            work_dir: str, wire: tuple[str, ...] = (), breakdown: bool = False) -> dict[str, Any]:
    from tfdist import launch  # no TensorFlow import

    out_dir = tempfile.mkdtemp(prefix=f"{row.replace('+', '_')}-", dir=work_dir)
    spec = {"row": row, "cores_per_worker": cores_per_worker, "out_dir": out_dir,
            "options": dataclasses.asdict(options), "wire": list(wire), "breakdown": breakdown}
    spec_path = os.path.join(out_dir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = {"PYTHONPATH": os.pathsep.join(
               p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
    command = [sys.executable, "-m", "tfdist.bench", "--_worker", spec_path]
    results = launch.run(command, num_workers=workers, timeout=options.timeout, env=env,
                         stream=False, grace=5.0)
    failed = [r for r in results if r.returncode != 0]
    if failed:
        # The process that failed by itself, not one the launcher stopped because of it.
        first = next((r for r in failed if not r.stopped), failed[0])
        how = "was stopped (timeout)" if first.stopped else "failed"
        raise BenchError(f"{row}: {first.name} {how} ({describe_status(first.returncode)}); its "
                         f"last lines:\n{_tail(first.output)}")
    reports = []
    for path in sorted(glob.glob(os.path.join(out_dir, "worker-*.json"))):
        with open(path) as f:
            reports.append(json.load(f))
    if len(reports) != workers:
        raise BenchError(f"{row}: expected {workers} worker report(s) in {out_dir}, found "
                         f"{len(reports)}")
    rows = {row: _merge(row, reports, workers, cores_per_worker)}
    if breakdown:
        rows[row]["breakdown"] = [r.get("breakdown") for r in sorted(reports, key=lambda r: r["rank"])]
    for variant in wire:
        name = f"{row}+{variant}"
        rows[name] = _merge(name, reports, workers, cores_per_worker)
        rows[name]["wire"] = variant
    return rows


def _merge(row: str, reports: list[dict[str, Any]], workers: int,
           cores_per_worker: int) -> dict[str, Any]:
    """The chief's route timings, with the cluster's peak: the sum of every worker's."""
    chief = next(r for r in reports if r["rank"] == 0)
    peak = sum(r["peak"]["peak"] for r in reports)
    merged = chief["results"][row]
    for result in merged["routes"].values():
        result["peak_fraction"] = result["flops_per_sec"]["median"] / peak
    merged.update(workers=workers, cores_per_worker=cores_per_worker, peak_flops=peak,
                  worker_peaks=[r["peak"] for r in sorted(reports, key=lambda r: r["rank"])],
                  cores=[r["cores"] for r in sorted(reports, key=lambda r: r["rank"])])
    return merged


def run(options: BenchOptions, work_dir: str, say: Any = print,
        breakdown: bool = False) -> dict[str, dict[str, Any]]:
    """Runs the baseline and the multi-worker launch; returns rows `one_worker`, `multi_worker`
    and, in the same launch and repetitions, one `multi_worker+VARIANT` per `options.wire`
    variant (so their ratios to `multi_worker` are paired, whatever else loads the machine).
    With `breakdown`, each worker also times its local step and the all-reduce apart
    (`tfdist.bench.breakdown`): the rows get `breakdown`, one entry per rank.

    Raises:
        BenchError: A worker failed or reported nothing.
    """
    baseline = dataclasses.replace(
        options, routes=tuple(r for r in options.routes if r in BASELINE_ROUTES))
    rows = {}
    for row, workers, cores, row_options in (("one_worker", 1, options.workers, baseline),
                                             ("multi_worker", options.workers, 1, options)):
        say(f"tfdist-bench: {row}: {workers} worker process(es) x {cores} core(s), routes "
            f"{', '.join(row_options.routes)}, {options.mw_reps} reps ...")
        wire = options.wire if row == "multi_worker" else ()
        if wire:
            levered = [r for r in options.routes if r in BASELINE_ROUTES]
            say(f"tfdist-bench: {row}: also with gradient levers {', '.join(wire)} (routes "
                f"{', '.join(levered)}), interleaved in the same repetitions")
        rows.update(_launch(row, workers, cores, row_options, work_dir, wire=wire,
                            breakdown=breakdown))
    return rows


# --- the worker process --------------------------------------------------------------------------


def _pin(rank: int, cores_per_worker: int) -> list[int]:
    """Pins this process to its share of the cores (wrapping if there are too few)."""
    available = sorted(os.sched_getaffinity(0))
    cores = sorted({available[(rank * cores_per_worker + i) % len(available)]
                    for i in range(cores_per_worker)})
    os.sched_setaffinity(0, cores)
    return cores


def _inject_fault(row: str, who: int | str) -> None:
    """Hangs or exits when `FAULT_VAR` names this worker (its rank, or its task as
    `type:id`; see there); else does nothing."""
    fault = os.environ.get(FAULT_VAR, "")
    if not fault:
        return
    target_row, _, rest = fault.partition(":")
    target, _, action = rest.rpartition(":")
    if (target_row, target) != (row, str(who)):
        return
    if action == "exit":
        sys.exit(FAULT_EXIT_STATUS)
    while True:  # "hang": SIGTERM's default action ends it when the launcher times out
        time.sleep(3600)


def worker_main(spec_path: str) -> int:
    """Worker mode: pin, start the strategy, measure peak and routes, write `worker-<rank>.json`.

    Run by the launcher with TF_CONFIG set; never by users.
    """
    with open(spec_path) as f:
        spec = json.load(f)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v  # JSON lists -> tuples
                              for k, v in spec["options"].items()}
    options = BenchOptions(**fields)
    if spec["row"] == "parameter_server":  # chief + workers + ps: its own worker mode
        from tfdist.bench import parameter_server

        return parameter_server.worker_main(spec, options)
    rank = int(os.environ.get("TFDIST_RANK", "0"))
    _inject_fault(spec["row"], rank)
    # Before TensorFlow starts: it sizes its thread pools from the affinity mask.
    cores = _pin(rank, spec["cores_per_worker"])
    import keras
    import tensorflow as tf

    import tfdist
    from tfdist.bench import options as options_lib
    from tfdist.bench import peak as peak_lib
    from tfdist.bench import suite
    from tfdist.bench import workloads

    tf.config.threading.set_intra_op_parallelism_threads(len(cores))
    tf.config.threading.set_inter_op_parallelism_threads(len(cores))
    # The strategy first: collectives must be configured before TensorFlow's context starts.
    strategy = tfdist.get_strategy("multi_worker_mirrored")
    keras.utils.set_random_seed(options.seed)
    peak = peak_lib.measure(size=options.peak_size)
    workload = workloads.load(options.model, seed=options.seed)
    row = spec["row"]
    wires: dict[str, options_lib.WireVariant | None] = {row: None}
    for variant in spec.get("wire", []):
        wires[f"{row}+{variant}"] = options_lib.parse_wire(variant)
    results = suite.measure(
        {name: strategy for name in wires}, workload, route_names=options.routes,
        batch=options.batch, steps=options.steps, steps_per_call=options.steps_per_call,
        reps=options.mw_reps, peak_flops=peak["peak"] * tfdist.strategy.num_workers(strategy),
        work_dir=os.path.join(os.path.dirname(spec["out_dir"]), row), wires=wires,
        routes_of={name: BASELINE_ROUTES for name in wires if name != row})
    report = {"rank": rank, "cores": cores, "peak": peak, "results": results}
    if spec.get("breakdown"):
        from tfdist.bench import breakdown

        report["breakdown"] = breakdown.measure(
            strategy, workload, options.batch, steps=options.steps, reps=options.mw_reps,
            compressions=("none", "bfloat16"))
    path = os.path.join(spec["out_dir"], f"worker-{rank}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(path + ".tmp", path)
    return 0
