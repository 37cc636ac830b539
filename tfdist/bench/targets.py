"""`tfdist-bench --targets`: every target of issue 19 measured in one run, side by side.

One run, in this order (child processes before this process starts TensorFlow):

1. recomputation: `levers.measure_remat` (`none` and `full`, one fresh process per mode and
   repetition, interleaved);
2. multi-worker: `multiworker.run` with the `reference` route (and `ctl` if `options.routes`
   has it), the wire variants `bf16` and
   `accum4` interleaved in the same launch as the row without levers, and each worker's
   breakdown (local step alone, all-reduce alone: `tfdist.bench.breakdown`);
3. in this process: `default` and `mirrored` (2 logical CPUs) on the `reference` route,
   interleaved (`suite.measure`) with one call of the float32 matmul peak in every repetition
   (the dense share of peak is paired per repetition: a neighbour's load hits both alike),
   their breakdowns, and `levers.measure_precision` (float32 against `mixed_bfloat16`,
   interleaved).

Each target is a ratio; where both sides ran in the same process it is the median of the
per-repetition ratios (paired), and the spread is their min-max. The 1 worker x 2 cores
baseline is a separate launch (one process cannot be both), so those ratios divide medians of
launches run one after the other; the spread there is the min-max of the repetitions' rates
over the baseline's median.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from typing import Any

from tfdist.bench import levers
from tfdist.bench import multiworker
from tfdist.bench import timing
from tfdist.bench.options import BenchOptions

WIRE = ("bf16", "accum4")
ROUTE = "reference"
COMPRESSION_SCALING = 0.9
PLAIN_SCALING = 0.75
ACCUMULATION_SCALING = 0.95
MIRRORED_SCALING = 0.95
EXACT_PEAK_FRACTION = 0.85
REMAT_MODES = ("none", "full")


def exact_train_flops(model: Any) -> int:
    """Matmul FLOPs of one training example of a Dense-only model, counted exactly.

    Forward `2 i o` per layer, the weight gradient `2 i o` per layer, the input gradient
    `2 i o` per layer except the first (its input is data: nobody asks for that gradient).
    Biases and activations are left out (element-wise, < 0.1% here).

    Raises:
        ValueError: The model has a layer with weights that is not `Dense`.
    """
    import keras

    total, first = 0, True
    for layer in model.layers:
        if not layer.weights:
            continue
        if not isinstance(layer, keras.layers.Dense):
            raise ValueError(f"Invalid value for argument `model`. Received a {type(layer).__name__}"
                             " layer; exact training FLOPs are counted for Dense-only models.")
        inputs, outputs = layer.kernel.shape
        total += 2 * inputs * outputs * (2 if first else 3)
        first = False
    return total


def run(options: BenchOptions, *, remat_workload: levers.RematWorkload, work_dir: str,
        say: Callable[[str], None]) -> dict[str, Any]:
    """Measures every issue-19 target (see the module docstring); returns the JSON-safe report.

    Raises:
        tfdist.bench.multiworker.BenchError: A worker or recomputation process failed.
    """
    section: dict[str, Any] = {"options": dataclasses.asdict(options)}
    section["remat"] = levers.measure_remat(REMAT_MODES, remat_workload, reps=options.mw_reps,
                                            seed=options.seed, timeout=options.timeout, say=say)
    routes = (ROUTE, *(r for r in options.routes if r in multiworker.BASELINE_ROUTES and r != ROUTE))
    mw_options = dataclasses.replace(options, routes=routes, wire=WIRE,
                                     strategies=("multi_worker",))
    section["multi_worker"] = multiworker.run(mw_options, work_dir, say, breakdown=True)
    section.update(_in_process(options, work_dir, say))
    section["targets"] = targets(section)
    return section


def _in_process(options: BenchOptions, work_dir: str,
                say: Callable[[str], None]) -> dict[str, Any]:
    import keras

    import tfdist
    from tfdist.bench import breakdown
    from tfdist.bench import machine
    from tfdist.bench import peak as peak_lib
    from tfdist.bench import suite
    from tfdist.bench import workloads

    tfdist.strategy.configure_virtual_cpus(options.virtual_cpus)
    strategies = {"default": tfdist.get_strategy("default"),
                  "mirrored": tfdist.get_strategy("mirrored", virtual_cpus=options.virtual_cpus)}
    keras.utils.set_random_seed(options.seed)
    workload = workloads.load(options.model, seed=options.seed)
    say("tfdist-bench: matmul peak ...")
    peak = peak_lib.measure(size=options.peak_size)
    say(f"tfdist-bench: default, mirrored: route {ROUTE}, {options.reps} reps, a peak call in "
        "each ...")
    rows = suite.measure(strategies, workload, route_names=(ROUTE,), batch=options.batch,
                         steps=options.steps, steps_per_call=options.steps_per_call,
                         reps=options.reps, peak_flops=peak["peak"], work_dir=work_dir,
                         peak_call=peak_lib.chain(size=options.peak_size))
    say("tfdist-bench: default, mirrored: local step and all-reduce apart ...")
    parts = {name: breakdown.measure(strategy, workload, options.batch, steps=options.steps,
                                     reps=options.reps)
             for name, strategy in strategies.items()}
    precision = levers.measure_precision(
        options.model, batch=options.batch, steps=options.steps,
        steps_per_call=options.steps_per_call, reps=options.reps, peak_size=options.peak_size,
        seed=options.seed, work_dir=work_dir, say=say)
    exact = None
    if options.model == "dense":
        exact = exact_train_flops(workload.build())
    return {"machine": machine.describe(), "peak": peak, "in_process": rows,
            "breakdown": parts, "precision": precision,
            "model": {"name": workload.name, "description": workload.description,
                      "flops_per_example": workload.flops_per_example,
                      "exact_train_flops_per_example": exact}}


# --- the targets, from the report alone ------------------------------------------------------


def _target(name: str, goal: str, value: float, met: bool, spread: tuple[float, float], n: int,
            where: str, how: str) -> dict[str, Any]:
    return {"name": name, "goal": goal, "value": value, "met": bool(met),
            "spread": list(spread), "n": n, "where": where, "how": how}


def _ms(summary: dict[str, Any]) -> float:
    return float(summary["median"])


def _workers(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in row.get("breakdown", []) if b]


def _mw_where(section: dict[str, Any], wire: str | None) -> str:
    """Per worker: local step, all-reduce (float32 or bf16); the bound they set."""
    rows = section["multi_worker"]
    workers = _workers(rows["multi_worker"])
    one = _workers(rows["one_worker"])
    if not workers or not one:
        return "no breakdown in this report"
    compression = "bfloat16" if wire == "bf16" else "none"
    local = [_ms(w["local_step_ms"]) for w in workers]
    reduce = [_ms(w["all_reduce_ms"][compression]) for w in workers]
    base = _ms(one[0]["local_step_ms"])
    micro = 4 if wire == "accum4" else 1
    bound = micro * base / (micro * max(local) + max(reduce))
    dtype = "bf16" if compression == "bfloat16" else "float32"
    return (f"per worker: local step {'/'.join(f'{x:.1f}' for x in local)} ms, {dtype} "
            f"all-reduce {'/'.join(f'{x:.1f}' for x in reduce)} ms"
            + (f" once per {micro} micro-batches" if micro > 1 else "")
            + f"; 1 worker x 2 cores local step {base:.1f} ms: bound {bound:.2f}x if nothing "
            "overlaps")


def targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Every issue-19 target this report has the numbers for, in the issue's order."""
    out: list[dict[str, Any]] = []
    mw = section.get("multi_worker", {})
    one = mw.get("one_worker", {}).get("routes", {}).get(ROUTE)
    for wire, goal in ((WIRE[0], COMPRESSION_SCALING), (None, PLAIN_SCALING),
                       (WIRE[1], ACCUMULATION_SCALING)):
        row = mw.get(f"multi_worker+{wire}" if wire else "multi_worker", {}).get("routes", {})
        if one is None or ROUTE not in row:
            continue
        base = _ms(one["examples_per_sec"])
        rates = row[ROUTE]["examples_per_sec"]
        value = _ms(rates) / base
        label = {"bf16": "with bf16 gradient compression", None: "without levers",
                 "accum4": "with accumulation of 4 micro-batches"}[wire]
        how = "examples/s medians of two launches, one after the other"
        if wire:
            paired = row[ROUTE]["ratio_to_no_levers"]["median"]
            how += f"; {paired:.2f}x no levers, paired in the same launch"
        out.append(_target(f"2 workers x 1 core {label} >= {goal}x 1 worker x 2 cores", f">= {goal}",
                           value, value >= goal, (rates["min"] / base, rates["max"] / base),
                           len(rates["samples"]), _mw_where(section, wire), how))
    prec = section.get("precision")
    if prec:
        ratio = prec["policies"]["mixed_bfloat16"]["ratio_to_float32"]
        peaks = {p: prec["policies"][p]["peak"] for p in prec["policies"]}
        where = (f"bf16 matmul peak {peaks['mixed_bfloat16'] / 1e9:.0f} GFLOP/s vs float32 "
                 f"{peaks['float32'] / 1e9:.0f} ({peaks['mixed_bfloat16'] / peaks['float32']:.2f}x); "
                 f"native bf16 here: {prec['fast_bfloat16'] or 'none (emulated)'}; the 1.6x needs "
                 "AMX/AVX512_BF16 or a GPU of cc >= 8.0")
        goal = levers.BFLOAT16_SPEEDUP
        out.append(_target(f"mixed_bfloat16 {prec['model']} >= {goal}x float32 examples/s, one "
                           "device", f">= {goal}", ratio["median"], ratio["median"] >= goal,
                           (ratio["min"], ratio["max"]), len(ratio["samples"]), where,
                           "reference route, default strategy, paired per repetition; accuracy "
                           "within 1 point: tests/test_precision.py"))
    local = section.get("in_process", {})
    if "default" in local and "mirrored" in local:
        ratio = timing.paired_ratio(local["default"]["routes"][ROUTE]["seconds"]["samples"],
                                    local["mirrored"]["routes"][ROUTE]["seconds"]["samples"])
        parts = section.get("breakdown", {})
        where = "no breakdown in this report"
        if "mirrored" in parts and "default" in parts:
            m, d = parts["mirrored"], parts["default"]
            reduce = m["all_reduce_ms"].get("none")
            where = (f"local step: default {_ms(d['local_step_ms']):.1f} ms, mirrored "
                     f"{_ms(m['local_step_ms']):.1f} ms; mirrored all-reduce "
                     + (f"{_ms(reduce):.1f} ms" if reduce else "-"))
        out.append(_target(f"mirrored (2 logical CPUs) >= {MIRRORED_SCALING}x default",
                           f">= {MIRRORED_SCALING}", ratio["median"],
                           ratio["median"] >= MIRRORED_SCALING, (ratio["min"], ratio["max"]),
                           len(ratio["samples"]), where,
                           "reference route, examples/s, paired per repetition"))
        exact = section.get("model", {}).get("exact_train_flops_per_example")
        if exact:
            out.append(_exact_share(section, local["default"], exact))
    remat = section.get("remat")
    if remat and "none" in remat["modes"] and "full" in remat["modes"]:
        base, full = remat["modes"]["none"], remat["modes"]["full"]
        peak_ratio = _ms(full["peak_rss_mb"]) / _ms(base["peak_rss_mb"])
        above = _ms(full["training_mb"]) / _ms(base["training_mb"])
        step = _ms(full["step_seconds"]) / _ms(base["step_seconds"])
        goal = levers.REMAT_PEAK_FRACTION
        n = len(full["peak_rss_mb"]["samples"])
        where = (f"peak RSS {_ms(full['peak_rss_mb']):,.0f} vs {_ms(base['peak_rss_mb']):,.0f} MB; "
                 f"above the built model {above:.2f}x ({_ms(full['training_mb']):,.0f} vs "
                 f"{_ms(base['training_mb']):,.0f} MB); step time {step:.2f}x "
                 f"(<= {levers.REMAT_STEP_RATIO}){levers.cpu_ratio(full, base)}")
        spread = (full["peak_rss_mb"]["min"] / base["peak_rss_mb"]["max"],
                  full["peak_rss_mb"]["max"] / base["peak_rss_mb"]["min"])
        out.append(_target(
            f"recomputation: peak memory <= {goal}x at <= {levers.REMAT_STEP_RATIO}x step time",
            f"<= {goal}", peak_ratio, peak_ratio <= goal and step <= levers.REMAT_STEP_RATIO,
            spread, n, where, f"{remat['description']}; whole-process peak RSS, one process per "
            "mode and repetition"))
    return out


def exact_shares(row: dict[str, Any], exact: int) -> dict[str, Any] | None:
    """The reference route's share of the peak call made in the same repetition (`row`: one
    `suite.measure` row with `peak_calls`), by wall time and by CPU time; `None` without them.

    Returns:
        `{"wall": summary, "cpu": summary}` of the per-repetition shares (`"cpu"` only when the
        route's CPU seconds were recorded).
    """
    calls = row.get("peak_calls")
    if not calls:
        return None
    route = row["routes"][ROUTE]
    walls, rates = route["seconds"]["samples"], route["examples_per_sec"]["samples"]
    out = {"wall": timing.summary([rate * exact / call["flops_per_sec"]
                                   for rate, call in zip(rates, calls)])}
    if "cpu_seconds" in route:  # examples per call = rate x wall seconds
        out["cpu"] = timing.summary([
            rate * wall * exact / cpu / call["flops_per_cpu_sec"]
            for rate, wall, cpu, call in zip(rates, walls, route["cpu_seconds"]["samples"], calls)])
    return out


def _exact_share(section: dict[str, Any], row: dict[str, Any], exact: int) -> dict[str, Any]:
    rates = row["routes"][ROUTE]["examples_per_sec"]
    fwd = section["model"]["flops_per_example"]
    size = section["peak"]["size"]
    name = (f"dense >= {EXACT_PEAK_FRACTION:.0%} of the float32 matmul peak, exact training "
            "FLOPs")
    shares = exact_shares(row, exact)
    if shares is None:  # a report from before the peak was paired: against its best call
        peak = section["peak"]["peak"]
        value = _ms(rates) * exact / peak
        return _target(name, f">= {EXACT_PEAK_FRACTION}", value, value >= EXACT_PEAK_FRACTION,
                       (rates["min"] * exact / peak, rates["max"] * exact / peak),
                       len(rates["samples"]),
                       f"{_ms(rates) * exact / 1e9:.1f} of {peak / 1e9:.1f} GFLOP/s ({size}^2 "
                       f"matmul chain, best call); exact = {exact / fwd:.2f}x forward",
                       "default strategy, reference route")
    wall = shares["wall"]
    peaks = [c["flops_per_sec"] for c in row["peak_calls"]]
    where = (f"{_ms(rates) * exact / 1e9:.1f} of {statistics.median(peaks) / 1e9:.1f} GFLOP/s "
             f"({size}^2 matmul chain, a call in each repetition); exact = {exact / fwd:.2f}x "
             "forward")
    how = "default strategy, reference route; paired per repetition with the peak call"
    if "cpu" in shares:
        # Shown met or not: under load the wall share can read far off (the chain, split
        # statically over the threads, loses more to a neighbour than the step does), while
        # the share per CPU-second stays close to the work done.
        cpu = shares["cpu"]
        by_cpu = (f"per CPU-second {_ms(cpu):.3f} ({cpu['min']:.3f}-{cpu['max']:.3f}) of the "
                  "chain's")
        # The table shows `how` alone for a met row, `where (how)` for a miss: say it once.
        if _ms(wall) >= EXACT_PEAK_FRACTION:
            how += f"; {by_cpu}"
        else:
            where += f"; {by_cpu}"
    return _target(name, f">= {EXACT_PEAK_FRACTION}", _ms(wall), _ms(wall) >= EXACT_PEAK_FRACTION,
                   (wall["min"], wall["max"]), len(wall["samples"]), where, how)


TARGET_COUNT = 7  # rows a whole report has (the tests check it)


def render(section: dict[str, Any], markdown: bool = False) -> str:
    """The targets table: target, measured, spread, met, where the time goes (or how)."""
    from tfdist.bench import report as report_lib

    options = section.get("options", {})
    head = (f"issue 19 targets: model {options.get('model')}, global batch {options.get('batch')}, "
            f"{options.get('steps')} steps per timed call; {options.get('reps')} interleaved reps "
            f"in-process, {options.get('mw_reps')} per multi-worker launch and per "
            "recomputation mode")
    rows = []
    for t in section["targets"]:
        low, high = t["spread"]
        rows.append([t["name"], f"{t['value']:.3f}",
                     f"{low:.3f}–{high:.3f} (n={t['n']})" if math.isfinite(low) else "-",
                     "yes" if t["met"] else "NO",
                     t["how"] if t["met"] else f"{t['where']} ({t['how']})"])
    table = report_lib._render(["target", "measured", "spread", "met", "where the time goes / how"],
                               rows, markdown, [False, True, True, False, False])
    return head + "\n\n" + table
