"""The benchmark's report: the issue-8 targets checked, and the tables printed (text or Markdown).

`targets(report)` reads only the JSON report, so a saved `--json` file can be re-checked and
re-rendered without re-running anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tfdist.bench import timing

# (threshold, what) for each target of issue 8.
CTL_VS_REFERENCE = 0.97
FIT_VS_CTL = 0.9
DENSE_PEAK_FRACTION = 0.85
PIPELINE_HEADROOM = 5.0
MIRRORED_SCALING = 0.8
MULTI_WORKER_SCALING = 0.8
# Issue 19's multi-worker targets with the gradient levers (`--wire` rows).
WIRE_SCALING = {"accumulation": 0.95, "compression": 0.9, "other": 0.75}


def _row_label(row: str, result: dict[str, Any]) -> str:
    if row == "one_worker":
        return f"1 worker x {result.get('cores_per_worker', '?')} cores"
    if row == "multi_worker":
        return f"{result.get('workers', '?')} workers x 1 core"
    if row.startswith("multi_worker+"):
        return f"{result.get('workers', '?')} workers x 1 core, {row.split('+', 1)[1]}"
    return row


def _wire_threshold(variant: str) -> float:
    parts = variant.split("+")
    if any(p.startswith("accum") for p in parts):
        return WIRE_SCALING["accumulation"]
    if any(p.split("/")[0] in ("bf16", "fp16") for p in parts):
        return WIRE_SCALING["compression"]
    return WIRE_SCALING["other"]


def _median(summary: dict[str, Any]) -> float:
    return summary["median"]


def consumption(report: dict[str, Any]) -> tuple[float, str]:
    """The fastest rate training consumed examples at (examples/s), and where."""
    best, where = 0.0, ""
    for row, result in report["results"].items():
        for name, route in result["routes"].items():
            rate = _median(route["examples_per_sec"])
            if rate > best:
                best, where = rate, f"{row}/{name}"
    return best, where


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Checks the issue-8 targets that this report has the measurements for.

    Returns:
        One dict per check: `name`, `value`, `threshold`, `met`, `detail`.
    """
    results = report["results"]
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float, threshold: float, detail: str) -> None:
        checks.append({"name": name, "value": value, "threshold": threshold,
                       "met": value >= threshold, "detail": detail})

    for row, result in results.items():
        routes = result["routes"]
        if "ctl" in routes:
            add(f"ctl >= {CTL_VS_REFERENCE}x reference ({_row_label(row, result)})",
                _median(routes["ctl"]["ratio_to_reference"]), CTL_VS_REFERENCE,
                "median of per-repetition time ratios")
    for row in ("default", "mirrored"):
        routes = results.get(row, {}).get("routes", {})
        if "fit" in routes and "ratio_to_ctl" in routes["fit"]:
            add(f"fit >= {FIT_VS_CTL}x ctl ({row})", _median(routes["fit"]["ratio_to_ctl"]),
                FIT_VS_CTL, "median of per-repetition time ratios")
    if report["model"]["name"] == "dense" and "default" in results:
        routes = results["default"]["routes"]
        best = max(routes, key=lambda n: routes[n]["peak_fraction"])
        add(f"dense model on default >= {DENSE_PEAK_FRACTION:.0%} of matmul peak",
            routes[best]["peak_fraction"], DENSE_PEAK_FRACTION,
            f"best route: {best}; 3 x forward FLOPs x examples/s / matmul peak")
    rate, where = consumption(report)
    for name, pipeline in report.get("pipelines", {}).items():
        add(f"{name} pipeline >= {PIPELINE_HEADROOM:g}x consumption",
            _median(pipeline["examples_per_sec"]) / rate, PIPELINE_HEADROOM,
            f"vs {rate:,.0f} examples/s ({where})")
    if "default" in results and "mirrored" in results:
        for route in ("reference", "ctl"):
            if route in results["mirrored"]["routes"]:
                add(f"mirrored (2 logical CPUs) >= {MIRRORED_SCALING}x default, {route}",
                    timing.paired_ratio(results["default"]["routes"][route]["seconds"]["samples"],
                                        results["mirrored"]["routes"][route]["seconds"]["samples"]
                                        )["median"],
                    MIRRORED_SCALING, "examples/s, median of per-repetition ratios")
    if "one_worker" in results and "multi_worker" in results:
        for route in ("reference", "ctl"):
            if route in results["multi_worker"]["routes"]:
                add(f"2 workers x 1 core >= {MULTI_WORKER_SCALING}x 1 worker x 2 cores, {route}",
                    _median(results["multi_worker"]["routes"][route]["examples_per_sec"])
                    / _median(results["one_worker"]["routes"][route]["examples_per_sec"]),
                    MULTI_WORKER_SCALING, "examples/s medians, two launches one after the other")
    if "one_worker" in results:
        one = results["one_worker"]["routes"]
        for row, result in results.items():
            if not row.startswith("multi_worker+"):
                continue
            threshold = _wire_threshold(result.get("wire", row.split("+", 1)[1]))
            for route in ("reference", "ctl"):
                if route in result["routes"] and route in one:
                    add(f"{_row_label(row, result)} >= {threshold}x 1 worker x 2 cores, {route}",
                        _median(result["routes"][route]["examples_per_sec"])
                        / _median(one[route]["examples_per_sec"]),
                        threshold, "examples/s medians, launches one after the other")
    for row, result in results.items():
        for route, r in result["routes"].items():
            if "ratio_to_no_levers" in r:
                add(f"{_row_label(row, result)} faster than without levers, {route}",
                    _median(r["ratio_to_no_levers"]), 1.0,
                    "same launch, median of per-repetition time ratios")
    return checks


# --- rendering -----------------------------------------------------------------------------------


def _render(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool,
            right: Sequence[bool]) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---:" if r else "---" for r in right) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def _span(summary: dict[str, Any], fmt: str) -> str:
    return f"{format(summary['min'], fmt)}–{format(summary['max'], fmt)}"


def header_lines(report: dict[str, Any]) -> list[str]:
    """Lines describing the run: model, sizes, repetitions, peaks."""
    model, options = report["model"], report["options"]
    lines = [
        f"model {model['name']} ({model['description']}): {model['params']:,} weights, "
        f"{model['flops_per_example'] / 1e6:.2f} MFLOP/example forward; training FLOPs taken as "
        f"3x forward",
        f"global batch {options['batch']}, {options['steps']} steps per timed call, "
        f"{options['steps_per_call']} steps per tf.function call; {options['reps']} interleaved "
        f"repetitions in-process, {options['mw_reps']} per multi-worker launch; warm-up excluded",
    ]
    peaks = []
    for row, result in report["results"].items():
        if "peak_flops" in result:
            peaks.append(f"{_row_label(row, result)} {result['peak_flops'] / 1e9:.0f}")
    if peaks:
        lines.append(f"matmul peak ({report['peak']['size']}^2 float32, GFLOP/s): "
                     + "; ".join(peaks))
    return lines


def routes_table(report: dict[str, Any], markdown: bool = False) -> str:
    """One line per (strategy, route)."""
    header = ["strategy", "route", "steps/s", "min–max", "examples/s", "GFLOP/s", "% peak",
              "x ref", "x ref min–max", "x ctl", "1st step s"]
    rows = []
    for row, result in report["results"].items():
        for name, r in result["routes"].items():
            ratio = r["ratio_to_reference"]
            rows.append([
                _row_label(row, result), name, f"{_median(r['steps_per_sec']):.1f}",
                _span(r["steps_per_sec"], ".1f"), f"{_median(r['examples_per_sec']):,.0f}",
                f"{_median(r['flops_per_sec']) / 1e9:.1f}", f"{100 * r['peak_fraction']:.1f}",
                f"{_median(ratio):.3f}", _span(ratio, ".3f"),
                f"{_median(r['ratio_to_ctl']):.3f}" if "ratio_to_ctl" in r else "-",
                f"{r['time_to_first_step_s']:.2f}",
            ])
    return _render(header, rows, markdown, [False, False] + [True] * 9)


def call_lengths_table(report: dict[str, Any], markdown: bool = False) -> str:
    """Seconds per call at each `--call-lengths` length; per-step time should stay flat."""
    lengths = report["options"]["call_lengths"]
    header = ["strategy", "route", *(f"{n} steps s" for n in lengths), "s/step max/min"]
    rows = []
    for row, result in report["results"].items():
        for name, by_length in result.get("call_lengths", {}).items():
            medians = [_median(by_length[str(n)]) for n in lengths]
            per_step = [m / n for m, n in zip(medians, lengths)]
            rows.append([_row_label(row, result), name, *(f"{m:.3f}" for m in medians),
                         f"{max(per_step) / min(per_step):.3f}"])
    return _render(header, rows, markdown, [False, False] + [True] * (len(lengths) + 1))


def pipelines_table(report: dict[str, Any], markdown: bool = False) -> str:
    """One line per input pipeline, against the fastest consumption."""
    rate, where = consumption(report)
    header = ["pipeline", "example shape", "examples/s", "min–max", f"x consumption ({where})"]
    rows = [[name, "x".join(map(str, p["example_shape"])),
             f"{_median(p['examples_per_sec']):,.0f}", _span(p["examples_per_sec"], ",.0f"),
             f"{_median(p['examples_per_sec']) / rate:.1f}"]
            for name, p in report.get("pipelines", {}).items()]
    return _render(header, rows, markdown, [False, False, True, True, True])


def targets_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The issue-8 targets: measured value, threshold, met or not."""
    header = ["target", "measured", "met", "how"]
    rows = [[t["name"], f"{t['value']:.3f}", "yes" if t["met"] else "NO", t["detail"]]
            for t in (report["targets"] if "targets" in report else targets(report))]
    return _render(header, rows, markdown, [False, True, False, False])


def render(report: dict[str, Any], markdown: bool = False) -> str:
    """Everything the command prints: description, routes, pipelines, targets."""
    parts = ["\n".join(header_lines(report)), routes_table(report, markdown)]
    if report["options"].get("call_lengths"):
        parts.append(call_lengths_table(report, markdown))
    if report.get("pipelines"):
        parts.append(pipelines_table(report, markdown))
    parts.append(targets_table(report, markdown))
    return "\n\n".join(parts)
