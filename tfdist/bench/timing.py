"""Repetitions, interleaved, and their summary: median, min-max and interquartile range.

Each repetition runs every timed callable once, in turn, so drift of the machine (a neighbour's
load, frequency changes) hits all of them alike; ratios are taken within a repetition.
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

_Key = TypeVar("_Key", bound=Hashable)
_Value = TypeVar("_Value")


def cpu_seconds() -> float:
    """This process's CPU time so far, user + system, all threads (tf.data's included).

    On a shared machine a neighbour's load stretches wall time but not the work a call does, so
    FLOPs per CPU-second rank variants where wall times cannot (threads that spin while they wait
    count too, so it is not a pure work measure with several threads).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


def interleaved(runs: Mapping[_Key, Callable[[], _Value]],
                reps: int) -> dict[_Key, list[_Value]]:
    """Calls every `runs` entry once per repetition, in order, `reps` times.

    Returns:
        key -> the values returned, one per repetition.
    """
    out: dict[_Key, list[_Value]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, run in runs.items():
            out[name].append(run())
    return out


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """Summary of `numerator[i] / denominator[i]`: rates measured in the same repetition."""
    return summary([n / d for n, d in zip(numerator, denominator)])
