"""The machine's float32 matrix-multiply peak, measured in this process with its threads.

A chain `c = a @ c` of large square float32 matmuls runs in a `tf.range` loop inside one
`tf.function` (each product depends on the last, so nothing can be hoisted or skipped), timed
after a warm-up call. `a` is scaled by `1/sqrt(n)` so values neither overflow nor turn denormal.
Each product is `2 n^3` FLOPs.

`chain` builds one timed call, to be interleaved with other measurements (the issue-19 dense
share pairs a peak call with each repetition of the route); `measure` times a few on their own.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfdist.bench import timing

DEFAULT_SIZE = 2048


@dataclasses.dataclass(frozen=True)
class Call:
    """One timed call of the chain.

    Attributes:
        flops: FLOPs the call did.
        seconds: Its wall time.
        cpu_seconds: This process's CPU time over it (user + system, all threads).
    """

    flops: int
    seconds: float
    cpu_seconds: float

    @property
    def flops_per_sec(self) -> float:
        return self.flops / self.seconds


def chain(*, size: int = DEFAULT_SIZE, products: int = 8,
          dtype: str = "float32") -> Callable[[], Call]:
    """Builds the matmul chain and warms it up; returns `once()`, one timed call.

    Args:
        size: Matrix side. Defaults to 2048.
        products: Matmuls per timed call. Defaults to 8.
        dtype: `"float32"` or `"bfloat16"`. Defaults to `"float32"`.
    """
    a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2]) / size**0.5, dtype)
    c0 = tf.cast(tf.random.stateless_normal([size, size], seed=[3, 4]), dtype)

    @tf.function
    def products_of(c: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        for _ in tf.range(n):
            c = tf.matmul(a, c)
        return c

    products_of(c0, tf.constant(2)).numpy()  # trace and warm up

    def once() -> Call:
        cpu, started = timing.cpu_seconds(), time.perf_counter()
        products_of(c0, tf.constant(products)).numpy()
        return Call(flops=2 * size**3 * products, seconds=time.perf_counter() - started,
                    cpu_seconds=timing.cpu_seconds() - cpu)

    return once


def measure(*, size: int = DEFAULT_SIZE, products: int = 8, reps: int = 5,
            dtype: str = "float32") -> dict[str, Any]:
    """Measures the matmul peak.

    Args:
        size: Matrix side. Defaults to 2048.
        products: Matmuls per timed call. Defaults to 8.
        reps: Timed calls. Defaults to 5.
        dtype: `"float32"`, or `"bfloat16"` for the peak a `mixed_bfloat16` model runs
            against. Defaults to `"float32"`.

    Returns:
        `{"flops_per_sec": summary, "peak": best, "size": size, "products": products}`: `peak`,
        the best timed call, is what the report divides by (a neighbour's load only slows calls
        down, so the fastest is the closest to what the machine can do).
    """
    once = chain(size=size, products=products, dtype=dtype)
    samples = [once().flops_per_sec for _ in range(reps)]
    return {"flops_per_sec": timing.summary(samples), "peak": max(samples), "size": size,
            "products": products, "dtype": dtype}
