"""One whole benchmark: multi-worker launches, in-process strategies, peak, pipelines, targets.

Order: the multi-worker launches first (this process has not started TensorFlow yet, so it
takes no memory or threads from them), then everything in this process, where `default` and
`mirrored` routes are built side by side and timed interleaved.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from tfdist.bench import multiworker
from tfdist.bench.options import ROUTE_DESCRIPTIONS
from tfdist.bench.options import BenchOptions


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(options: BenchOptions, say: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Runs the benchmark `options` describe and returns the report (JSON-safe).

    Process-wide set-up (logical CPUs for `mirrored`, seeds) happens here: call it from a
    program's main, once, before TensorFlow has started.

    Raises:
        tfdist.bench.multiworker.BenchError: A worker process failed.
        tfdist.strategy.StrategyError: TensorFlow had started with another device layout.
    """
    work_dir = tempfile.mkdtemp(prefix="tfdist-bench-")
    try:
        rows: dict[str, Any] = {}
        if "multi_worker" in options.strategies:
            rows.update(multiworker.run(options, work_dir, say))
        return _in_process(options, work_dir, rows, say)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _in_process(options: BenchOptions, work_dir: str, remote_rows: dict[str, Any],
                say: Callable[[str], None]) -> dict[str, Any]:
    import keras

    import tfdist
    from tfdist.bench import machine
    from tfdist.bench import peak as peak_lib
    from tfdist.bench import pipeline
    from tfdist.bench import report as report_lib
    from tfdist.bench import suite
    from tfdist.bench import workloads

    local = options.local_strategies
    if "mirrored" in local:  # before TensorFlow initialises its devices
        tfdist.strategy.configure_virtual_cpus(options.virtual_cpus)
    strategies = {name: tfdist.get_strategy(
        name, virtual_cpus=options.virtual_cpus if name == "mirrored" else None) for name in local}
    keras.utils.set_random_seed(options.seed)
    workload = workloads.load(options.model, seed=options.seed)
    say("tfdist-bench: matmul peak ...")
    peak = peak_lib.measure(size=options.peak_size)
    peak_flops = peak["peak"]
    rows: dict[str, Any] = {}
    if strategies:
        say(f"tfdist-bench: {', '.join(local)}: routes {', '.join(options.routes)}, "
            f"{options.reps} reps ...")
        rows = suite.measure(
            strategies, workload, route_names=options.routes, batch=options.batch,
            steps=options.steps, steps_per_call=options.steps_per_call, reps=options.reps,
            peak_flops=peak_flops, work_dir=work_dir, call_lengths=options.call_lengths)
        for result in rows.values():
            result["peak_flops"] = peak_flops
    rows.update(remote_rows)
    say("tfdist-bench: input pipelines ...")
    pipelines = pipeline.measure(workload, options.batch, work_dir,
                                 batches=options.pipeline_batches, seed=options.seed)
    report: dict[str, Any] = {
        "machine": machine.describe(),
        "options": dataclasses.asdict(options),
        "model": {"name": workload.name, "description": workload.description,
                  "params": workload.params, "flops_per_example": workload.flops_per_example,
                  "train_flops_per_example": workload.train_flops_per_example},
        "peak": peak,
        "results": rows,
        "pipelines": pipelines,
        "routes": {name: ROUTE_DESCRIPTIONS[name] for name in options.routes},
    }
    report["targets"] = report_lib.targets(report)
    return report
