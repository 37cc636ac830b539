"""Shaped random data of any size, for benchmarks (nothing to learn; labels are random).

Examples are generated on the fly from `(seed, index)` with stateless random ops, so any size
costs no memory, every run sees the same data, and sharding by example is cheap: the source is
`Dataset.range(size)` and the generating `map_fn` runs after the data layer has sharded it.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from input_pipelines.base import DatasetSources


def sources(
    shape: Sequence[int] = (8, 8, 1),
    num_classes: int = 10,
    size: int = 4096,
    seed: int = 0,
    *,
    eval_size: int | None = None,
    vocab_size: int | None = None,
) -> DatasetSources:
    """Random `(features, label)` examples.

    Args:
        shape: Shape of one example's features. Defaults to `(8, 8, 1)`.
        num_classes: Label classes. Defaults to 10.
        size: Training examples. Defaults to 4096.
        seed: Generator seed. Defaults to 0.
        eval_size: Evaluation examples (different from the training ones). Defaults to
            `min(size, 1024)`.
        vocab_size: Make features int32 token ids below this; `None` gives float32 features
            from a standard normal. Defaults to `None`.

    Returns:
        The sources.

    Raises:
        ValueError: A non-positive size, shape or class count.
    """
    shape = tuple(int(d) for d in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"Invalid value for argument `shape`. Received: shape={shape!r}. "
                         "Pass positive dimensions, e.g. (32, 32, 3).")
    for name, value in (("num_classes", num_classes), ("size", size), ("eval_size", eval_size),
                        ("vocab_size", vocab_size)):
        if value is not None and value < (2 if name in ("num_classes", "vocab_size") else 1):
            raise ValueError(f"Invalid value for argument `{name}`. Received: {name}={value!r}.")
    eval_size = min(size, 1024) if eval_size is None else eval_size

    def make_example(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        key = tf.stack([tf.constant(seed, tf.int64), index])
        if vocab_size:
            x = tf.random.stateless_uniform(shape, key, 0, vocab_size, dtype=tf.int32)
        else:
            x = tf.random.stateless_normal(shape, key)
        y = tf.random.stateless_uniform([], key + [0, 1 << 40], 0, num_classes, dtype=tf.int32)
        return x, y

    return DatasetSources(
        name="synthetic",
        train=tf.data.Dataset.range(size),
        eval=tf.data.Dataset.range(size, size + eval_size),
        input_shape=shape,
        num_classes=num_classes,
        train_examples=size,
        eval_examples=eval_size,
        map_fn=make_example,
        vocab_size=vocab_size,
    )
