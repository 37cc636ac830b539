"""The benchmark's models and the synthetic data they train on.

Every model comes from the `models` registry, so its FLOPs are counted by
`models.flops_per_example` (forward pass, multiply-adds x 2). A training step costs about 3x the
forward FLOPs (forward, plus two matrix products per layer backward); achieved FLOP/s are
`3 * flops_per_example * examples/s`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import models

NUM_CLASSES = 10
NUM_EXAMPLES = 4096  # in memory, repeated: the routes measure compute, not I/O
TRAIN_FLOPS_FACTOR = 3
EMBEDDING_IDS = 16  # ids per example of the `embedding` model
ZIPF_EXPONENT = 1.1  # id frequency ~ 1 / rank**s: a few hot rows, a long tail (as in click logs)

# name -> (registry family, config overrides, description)
_MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    # The dense benchmark model of FINDINGS §2.
    "dense": ("mlp", {"input_shape": (784,), "hidden": (1024, 1024)}, "MLP 784-1024-1024-10"),
    "cnn": ("cnn", {"input_shape": (28, 28, 1)}, "registry CNN on 28x28x1 images"),
    "resnet": ("resnet", {"input_shape": (32, 32, 3), "depth": 20},
               "registry ResNet-20 on 32x32x3 images"),
    # The parameter-server layout's natural model: the table holds >99% of the weights.
    # The lookup gathers where the table lives (only looked-up rows move; models/embedding.py).
    "embedding": ("embedding", {"input_shape": (EMBEDDING_IDS,), "vocab_size": 100_000,
                                "embed_dim": 64, "hidden": (64,), "lookup": "rows"},
                  f"{EMBEDDING_IDS} ids -> 100,000x64 embedding, mean-pool -> 64 -> 10"),
}


@dataclasses.dataclass(frozen=True)
class Workload:
    """A model to benchmark and its training data.

    Attributes:
        name: A `tfdist.bench.options.MODELS` name.
        description: For the report, e.g. `"MLP 784-1024-1024-10"`.
        build: Builds a fresh, uncompiled model that outputs logits (call it under a scope).
        features: `NUM_EXAMPLES` examples of the model's input shape: float32, or int32 ids
            for `embedding`.
        labels: int32 class ids.
        flops_per_example: Forward-pass FLOPs of one example.
        params: Number of weights.
        table: `(rows, dim)` of the embedding table (`embedding` only), else `None`.
    """

    name: str
    description: str
    build: Callable[[], Any]
    features: np.ndarray
    labels: np.ndarray
    flops_per_example: int
    params: int
    table: tuple[int, int] | None = None

    def spec(self, global_batch_size: int) -> Any:
        """The in-memory examples as a `tfdist.data.DataSpec`: repeated, not shuffled, read by
        index (`tfdist.data.Arrays`, as users with arrays in memory should)."""
        from tfdist import data as data_lib

        return data_lib.DataSpec(source=data_lib.Arrays((self.features, self.labels)),
                                 global_batch_size=global_batch_size, shuffle_buffer=0)

    @property
    def train_flops_per_example(self) -> int:
        """Approximate FLOPs of one training example: 3x the forward pass."""
        return TRAIN_FLOPS_FACTOR * self.flops_per_example

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.features.shape[1:])


def load(name: str, *, seed: int = 0, **config_overrides: Any) -> Workload:
    """Builds the workload `name` (one throwaway model build to count FLOPs and weights).

    Args:
        name: One of `tfdist.bench.options.MODELS`.
        seed: Seed for the synthetic data. Defaults to 0.
        **config_overrides: Model config fields to change, e.g. `lookup="keras"`.

    Raises:
        KeyError: Unknown name.
    """
    family_name, overrides, description = _MODELS[name]
    family = models.get(family_name)
    config = family.make_config(num_classes=NUM_CLASSES, **{**overrides, **config_overrides})
    rng = np.random.default_rng(seed)
    table = None
    if family_name == "embedding":
        table = (config.vocab_size, config.embed_dim)
        features = skewed_ids(rng, (NUM_EXAMPLES, *config.input_shape), config.vocab_size)
    else:
        features = rng.normal(size=(NUM_EXAMPLES, *config.input_shape)).astype(np.float32)
    labels = rng.integers(0, NUM_CLASSES, size=NUM_EXAMPLES).astype(np.int32)
    probe = family.build(config)
    return Workload(
        name=name,
        description=description,
        build=lambda: family.build(config),
        features=features,
        labels=labels,
        flops_per_example=models.flops_per_example(probe),
        params=models.count_params(probe),
        table=table,
    )


def dense_head(workload: Workload, *, seed: int = 0) -> Workload:
    """The dense head of the `embedding` workload alone: the same layers on `embed_dim` float
    inputs (what the table's mean-pool feeds them), so timing both splits a step's time.

    Raises:
        ValueError: `workload` has no embedding table.
    """
    family_name, overrides, _ = _MODELS[workload.name]
    if family_name != "embedding":
        raise ValueError(f"Invalid value for argument `workload`. Received: workload="
                         f"{workload.name!r}. Pass the embedding workload.")
    table = models.get("embedding").make_config(num_classes=NUM_CLASSES, **overrides)
    mlp = models.get("mlp")
    config = mlp.make_config(input_shape=(table.embed_dim,), num_classes=NUM_CLASSES,
                             hidden=table.hidden)
    rng = np.random.default_rng(seed)
    probe = mlp.build(config)
    return dataclasses.replace(
        workload, name=f"{workload.name}-head", description=f"{workload.description}: head only",
        build=lambda: mlp.build(config),
        features=rng.normal(size=(len(workload.features), table.embed_dim)).astype(np.float32),
        flops_per_example=models.flops_per_example(probe), params=models.count_params(probe),
        table=None)


def skewed_ids(rng: np.random.Generator, shape: tuple[int, ...], vocab_size: int) -> np.ndarray:
    """int32 ids in `[0, vocab_size)`, Zipf-distributed (`ZIPF_EXPONENT`) over a random
    permutation of the rows, so the hot rows are spread over the table (and its ps shards)."""
    weights = 1.0 / np.arange(1, vocab_size + 1) ** ZIPF_EXPONENT
    ranks = rng.choice(vocab_size, size=shape, p=weights / weights.sum())
    return rng.permutation(vocab_size)[ranks].astype(np.int32)
