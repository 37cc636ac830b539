"""What every route adapter takes besides the strategy, model and data, and what it returns."""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from tfdist import cluster as cluster_lib
from tfdist import gradients as gradients_lib


@dataclasses.dataclass(frozen=True)
class RouteSettings:
    """How long and how to train, where to write; the same for every route.

    Args:
        model_dir: Checkpoints, summaries and exports (chief); shared by all workers.
        train_steps: Global step to train to.
        learning_rate: Adam's learning rate.
        steps_per_loop: Steps per `tf.function` call (route 1 `steps_per_loop`, route 2
            `steps_per_execution`, route 3 `RunConfig.steps_per_loop`).
        eval_every: Evaluate (and, routes 1 and 3, checkpoint) every this many steps; equal to
            `train_steps` for one evaluation at the end.
        seed: Initialisation seed (route 3's `tf_random_seed`).
        cluster: This task's place in the cluster.
        progress: Show progress (chief only). Defaults to `True`.
        on_nonfinite: The non-finite-loss policy, `"stop"` or `"restore"`. Defaults to `"stop"`.
        max_nonfinite_restores: Restores allowed with `"restore"`. Defaults to 3.
        gradients: How gradients are all-reduced (`tfdist.gradients.GradientOptions`), or
            `None` for TensorFlow's own reduction. Accumulation is the train spec's
            `accumulation_steps`. Defaults to `None`.
    """

    model_dir: str
    train_steps: int
    learning_rate: float
    steps_per_loop: int
    eval_every: int
    seed: int
    cluster: cluster_lib.ClusterInfo
    progress: bool = True
    on_nonfinite: str = "stop"
    max_nonfinite_restores: int = 3
    gradients: gradients_lib.GradientOptions | None = None


@dataclasses.dataclass(frozen=True)
class RouteResult:
    """What a route reports after training and the final evaluation.

    Attributes:
        final: Final evaluation metrics (`loss`, `accuracy`).
        train: Last training metrics the route reports (at least `loss`).
        start_step: Global step when training started (non-zero after a resume).
        steps: Global step at the end.
        train_seconds: Wall time of the training phase (periodic evaluations and the first
            call's tracing included; the final evaluation and export not).
        exports: What the chief exported, name -> path (empty elsewhere).
    """

    final: dict[str, float]
    train: dict[str, float]
    start_step: int
    steps: int
    train_seconds: float
    exports: dict[str, str] = dataclasses.field(default_factory=dict)


def loss() -> keras.losses.Loss:
    """The classification loss every route uses: models output logits."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def optimizer(learning_rate: float) -> keras.optimizers.Optimizer:
    """Adam; in a `LossScaleOptimizer` under the `mixed_float16` policy in force now.

    For the routes that take gradients themselves (tfdist's `Trainer` and Estimator apply its
    `scale_loss`); Keras's `compile` wraps `fit`'s optimizer on its own.
    """
    adam = keras.optimizers.Adam(learning_rate)
    if keras.mixed_precision.dtype_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def accuracy() -> keras.metrics.Metric:
    """The metric every route reports, as `accuracy`."""
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def floats(results: dict[str, Any], *, drop_prefix: str = "") -> dict[str, float]:
    """Plain floats (JSON-safe), keys without `drop_prefix`."""
    return {k[len(drop_prefix):] if drop_prefix and k.startswith(drop_prefix) else k: float(v)
            for k, v in results.items()}
