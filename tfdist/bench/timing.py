"""Repetitions, interleaved, and their summary: median, min-max and interquartile range.

Each repetition runs every timed callable once, in turn, so drift of the machine (a neighbour's
load, frequency changes) hits all of them alike; ratios are taken within a repetition.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

_Key = TypeVar("_Key", bound=Hashable)


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max, quartiles and the samples themselves (JSON-safe).

    Args:
        samples: At least one value.
    """
    values = sorted(float(s) for s in samples)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "min": values[0], "max": values[-1],
            "q1": q1, "q3": q3, "samples": [float(s) for s in samples]}


def interleaved(runs: Mapping[_Key, Callable[[], float]], reps: int) -> dict[_Key, list[float]]:
    """Calls every `runs` entry once per repetition, in order, `reps` times.

    Returns:
        key -> the values returned, one per repetition.
    """
    out: dict[_Key, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            out[name].append(run())
    return out


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """Summary of `numerator[i] / denominator[i]`: rates measured in the same repetition."""
    return summary([n / d for n, d in zip(numerator, denominator)])
