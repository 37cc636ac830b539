"""The machine's float32 matrix-multiply peak, measured in this process with its threads.

A chain `c = a @ c` of large square float32 matmuls runs in a `tf.range` loop inside one
`tf.function` (each product depends on the last, so nothing can be hoisted or skipped), timed
after a warm-up call. `a` is scaled by `1/sqrt(n)` so values neither overflow nor turn denormal.
Each product is `2 n^3` FLOPs.
"""

from __future__ import annotations

import time
from typing import Any

import tensorflow as tf

from tfdist.bench import timing

DEFAULT_SIZE = 2048


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
    a = tf.cast(tf.random.stateless_normal([size, size], seed=[1, 2]) / size**0.5, dtype)
    c0 = tf.cast(tf.random.stateless_normal([size, size], seed=[3, 4]), dtype)

    @tf.function
    def chain(c: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        for _ in tf.range(n):
            c = tf.matmul(a, c)
        return c

    chain(c0, tf.constant(2)).numpy()  # trace and warm up

    def once() -> float:
        started = time.perf_counter()
        chain(c0, tf.constant(products)).numpy()
        return 2 * size**3 * products / (time.perf_counter() - started)

    samples = [once() for _ in range(reps)]
    return {"flops_per_sec": timing.summary(samples), "peak": max(samples), "size": size,
            "products": products, "dtype": dtype}
