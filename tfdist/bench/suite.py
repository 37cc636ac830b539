"""Measures routes under strategies in this process: build each, warm up, time interleaved.

`measure` is what the parent process runs for `default` and `mirrored`, and what each worker
process runs for `multi_worker`; it returns the per-route results the report shows.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfdist.bench import peak as peak_lib
from tfdist.bench import routes as routes_lib
from tfdist.bench import teardown
from tfdist.bench import timing
from tfdist.bench.options import WireVariant
from tfdist.bench.workloads import Workload


def measure(
    strategies: dict[str, tf.distribute.Strategy],
    workload: Workload,
    *,
    route_names: tuple[str, ...],
    batch: int,
    steps: int,
    steps_per_call: int,
    reps: int,
    peak_flops: float,
    work_dir: str,
    call_lengths: tuple[int, ...] = (),
    wires: dict[str, WireVariant | None] | None = None,
    routes_of: dict[str, tuple[str, ...]] | None = None,
    peak_call: Callable[[], peak_lib.Call] | None = None,
) -> dict[str, dict[str, Any]]:
    """Times every route under every strategy, all interleaved in each repetition.

    Args:
        strategies: Row name (e.g. `"default"`) -> strategy.
        workload: Model and data.
        route_names: Routes to run; `"reference"` must be among them.
        batch: Global batch size.
        steps: Steps per timed call.
        steps_per_call: Steps per `tf.function` call.
        reps: Timed repetitions, after the first call and one warm-up call of each route.
        peak_flops: The matmul peak (FLOP/s) to compare achieved FLOP/s with.
        work_dir: Checkpoints go below it.
        call_lengths: Also time every route at each of these steps per call, interleaved
            (after the main timing, `reps` times). Defaults to none.
        wires: Row -> the gradient levers its routes train with. Defaults to none.
        routes_of: Row -> the routes it runs, where not `route_names` (those in
            `route_names` only; `"reference"` always). Defaults to `route_names` everywhere.
        peak_call: One timed call of the matmul peak (`tfdist.bench.peak.chain`), made once
            in every repetition after the routes, so a share of the peak can be paired per
            repetition. Defaults to none.

    Returns:
        row -> `{"routes": {route: result}}` (see `route_result`), plus, with `call_lengths`,
        `"call_lengths": {route: {str(steps): seconds summary}}`, and with `peak_call`,
        `"peak_calls": [{"flops_per_sec", "flops_per_cpu_sec"}, ...]` (one per repetition, the
        same list in every row).
    """
    built: dict[tuple[str, str], routes_lib.Route] = {}
    teardown.keep(built)  # their iterators must not be destroyed mid-run (see teardown)
    wires = wires or {}
    names = {row: tuple(n for n in route_names
                        if n == "reference" or n in (routes_of or {}).get(row, route_names))
             for row in strategies}
    # Accumulation keeps the micro-batch at `batch`: a step then trains N x `batch` examples
    # with one all-reduce, which is what the lever buys.
    batches = {row: batch * (wires[row].accumulation_steps if wires.get(row) else 1)  # type: ignore[union-attr]
               for row in strategies}
    for row, strategy in strategies.items():
        for name in names[row]:
            built[row, name] = routes_lib.build(name, strategy, workload, batches[row],
                                                steps_per_call,
                                                os.path.join(work_dir, row.replace("+", "_")),
                                                wire=wires.get(row))
    runs: dict[Any, Callable[[], Any]] = {
        key: functools.partial(_with_cpu, route.run, steps) for key, route in built.items()}
    if peak_call is not None:
        runs["peak"] = peak_call
    for route in built.values():  # warm-up, not counted: one more tf.function call each
        route.run(steps_per_call)
    timed = timing.interleaved(runs, reps)
    peak_calls = [{"flops_per_sec": call.flops / call.seconds,
                   "flops_per_cpu_sec": call.flops / call.cpu_seconds}
                  for call in timed.pop("peak", [])]
    seconds = {key: [wall for wall, _ in samples] for key, samples in timed.items()}
    cpu = {key: [used for _, used in samples] for key, samples in timed.items()}
    results: dict[str, dict[str, Any]] = {}
    for row in strategies:
        reference = seconds[row, "reference"]
        ctl = seconds.get((row, "ctl"))
        results[row] = {"routes": {
            name: route_result(built[row, name], seconds[row, name], reference, ctl,
                               steps=steps, batch=batches[row], workload=workload,
                               peak_flops=peak_flops, cpu_seconds=cpu[row, name])
            for name in names[row]
        }}
        if peak_calls:
            results[row]["peak_calls"] = peak_calls
    plain = next((row for row in strategies if wires.get(row) is None), None)
    for row in strategies:
        if wires.get(row) is None or plain is None:
            continue
        for name in names[row]:  # paired with the same route without levers, same repetitions
            # Examples per second, paired: time per example without over time per example with.
            scale = batches[row] / batches[plain]
            results[row]["routes"][name]["ratio_to_no_levers"] = timing.paired_ratio(
                seconds[plain, name], [s / scale for s in seconds[row, name]])
    if call_lengths:
        by_length = timing.interleaved(
            {(key, n): functools.partial(route.run, n)
             for key, route in built.items() for n in call_lengths}, reps)
        for row in strategies:
            results[row]["call_lengths"] = {
                name: {str(n): timing.summary(by_length[(row, name), n]) for n in call_lengths}
                for name in names[row]}
    return results


def _with_cpu(run: Callable[[int], float], steps: int) -> tuple[float, float]:
    """`run(steps)`'s wall seconds and this process's CPU seconds over it."""
    started = timing.cpu_seconds()
    wall = run(steps)
    return wall, timing.cpu_seconds() - started


def route_result(route: routes_lib.Route, seconds: list[float], reference: list[float],
                 ctl: list[float] | None, *, steps: int, batch: int, workload: Workload,
                 peak_flops: float, cpu_seconds: list[float] | None = None) -> dict[str, Any]:
    """One route's numbers (JSON-safe).

    Rates are summaries over the repetitions; ratios are taken per repetition (route and
    reference timed in the same repetition) and summarised. `time_to_first_step_s` is the
    first call's time less the steady-state time of any extra steps it ran (fit's first call
    is a whole execution). `cpu_seconds` (the process's CPU time over each timed call, all
    threads) is summarised when given.
    """
    steps_per_sec = [steps / s for s in seconds]
    median_rate = timing.summary(steps_per_sec)["median"]
    flops = [r * batch * workload.train_flops_per_example for r in steps_per_sec]
    first_step = route.first_call_seconds - (route.first_call_steps - 1) / median_rate
    result = {
        "seconds": timing.summary(seconds),
        "steps_per_sec": timing.summary(steps_per_sec),
        "examples_per_sec": timing.summary([r * batch for r in steps_per_sec]),
        "flops_per_sec": timing.summary(flops),
        "peak_fraction": timing.summary(flops)["median"] / peak_flops,
        "ratio_to_reference": timing.paired_ratio(reference, seconds),
        "time_to_first_step_s": first_step,
        "first_call_seconds": route.first_call_seconds,
        "first_call_steps": route.first_call_steps,
    }
    if ctl is not None:
        result["ratio_to_ctl"] = timing.paired_ratio(ctl, seconds)
    if cpu_seconds is not None:
        result["cpu_seconds"] = timing.summary(cpu_seconds)
    return result
