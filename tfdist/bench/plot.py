"""An optional PNG of the report: examples/s per route and strategy (medians, min–max bars).

matplotlib is optional (`pip install tfdist[bench]`); without it `write` returns a one-line
reason instead of a file, and the table and JSON are written as usual.
"""

from __future__ import annotations

from typing import Any

from tfdist.bench import report as report_lib


def write(report: dict[str, Any], path: str) -> str | None:
    """Draws the report to `path`.

    Returns:
        `None` when written, else one line saying why not (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return (f"matplotlib is not installed, so no plot was written to {path} "
                "(pip install 'tfdist[bench]'); the table and JSON are complete.")
    rows = list(report["results"])
    routes = list(dict.fromkeys(n for r in rows for n in report["results"][r]["routes"]))
    width = 0.8 / max(1, len(routes))
    fig, (ax, ax_peak) = plt.subplots(1, 2, figsize=(13, 4.5))
    for i, name in enumerate(routes):
        xs, meds, lows, highs, fractions = [], [], [], [], []
        for j, row in enumerate(rows):
            route = report["results"][row]["routes"].get(name)
            if route is None:
                continue
            rate = route["examples_per_sec"]
            xs.append(j + (i - (len(routes) - 1) / 2) * width)
            meds.append(rate["median"])
            lows.append(rate["median"] - rate["min"])
            highs.append(rate["max"] - rate["median"])
            fractions.append(100 * route["peak_fraction"])
        ax.bar(xs, meds, width, yerr=[lows, highs], capsize=2, label=name)
        ax_peak.bar(xs, fractions, width, label=name)
    labels = [report_lib._row_label(r, report["results"][r]) for r in rows]
    for axis, title in ((ax, "examples/s (median, min–max)"),
                        (ax_peak, "% of matmul peak (3 x forward FLOPs)")):
        axis.set_xticks(range(len(rows)), labels, fontsize=8)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    model = report["model"]
    fig.suptitle(f"tfdist-bench: {model['name']}, global batch {report['options']['batch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
