"""The run's report: what `metrics.json` holds and what `tfdist-train` prints."""

from __future__ import annotations

import json
import os
from typing import Any

import keras
import tensorflow as tf

import models
from tfdist import cluster as cluster_lib
from tfdist import strategy as strategy_lib
from tfdist.runner.options import TrainOptions
from tfdist.runner.settings import RouteResult

METRICS_FILE = "metrics.json"
def model_info(family: Any, config: Any) -> dict[str, Any]:
    """Parameter count and FLOPs per example, from a throwaway build of the model."""
    model = family.build(config)
    return {"params": models.count_params(model), "flops_per_example": models.flops_per_example(model)}


def build(
    options: TrainOptions,
    strategy: tf.distribute.Strategy,
    cluster: cluster_lib.ClusterInfo,
    data: Any,
    info: dict[str, Any],
    result: RouteResult,
) -> dict[str, Any]:
    """The report of one run (JSON-safe).

    `examples_per_sec` counts the global batches of the steps this run trained over
    `train_seconds`, which includes the first call's tracing and periodic evaluations.
    """
    steps_run = result.steps - result.start_step
    seconds = result.train_seconds
    gbs = options.global_batch_size
    policy = keras.mixed_precision.dtype_policy().name
    return {
        "route": options.route,
        "strategy": strategy_lib.name_of(strategy),
        "strategy_flag": options.strategy,
        "strategy_description": strategy_lib.describe(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "workers": strategy_lib.num_workers(strategy),
        "task": "local" if cluster.is_local else f"{cluster.task_type}:{cluster.task_id}",
        "model": options.model,
        **info,
        "dataset": data.name,
        "train_examples": data.train_examples,
        "eval_examples": data.eval_examples,
        "global_batch_size": gbs,
        "learning_rate": options.learning_rate,
        "steps": result.steps,
        "start_step": result.start_step,
        "epochs": round(result.steps * gbs / data.train_examples, 3) if data.train_examples else None,
        "final": result.final,
        "train": result.train,
        "model_dir": options.model_dir,
        "train_seconds": round(seconds, 3),
        "examples_per_sec": (round(steps_run * gbs / seconds, 1)
                             if seconds > 0 and steps_run > 0 else None),
        "seed": options.seed,
        "deterministic": options.deterministic,
        "mixed_precision": policy if policy.startswith("mixed") else None,
        "remat": options.remat,
        "exports": result.exports,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def write(report: dict[str, Any], model_dir: str) -> str:
    """Writes `model_dir/metrics.json` atomically; returns its path."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, METRICS_FILE)
    with tf.io.gfile.GFile(path + ".tmp", "w") as f:
        json.dump(report, f, indent=2, sort_keys=False)
        f.write("\n")
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    return path


class Printer:
    """Prints on the chief (and an evaluator's final result); other workers stay quiet."""

    def __init__(self, cluster: cluster_lib.ClusterInfo) -> None:
        self._cluster = cluster

    def __call__(self, line: str, *, force: bool = False) -> None:
        if force or self._cluster.is_chief:
            print(line, flush=True)

    def final(self, report: dict[str, Any], *, evaluator: bool = False) -> None:
        final = report["final"]
        metrics = " ".join(f"{k}={v:.4f}" for k, v in final.items())
        who = "evaluator: " if evaluator else ""
        self(f"tfdist-train: {who}final evaluation at step {report['steps']}: {metrics}",
             force=evaluator)
        if evaluator:
            return
        if "accuracy" in final:
            self(f"tfdist-train: test accuracy {final['accuracy']:.4f}")
        speed = report["examples_per_sec"]
        if speed:
            self(f"tfdist-train: trained {report['steps'] - report['start_step']} steps in "
                 f"{report['train_seconds']:.1f} s ({speed:,.0f} examples/s); "
                 f"metrics in {os.path.join(report.get('model_dir', ''), METRICS_FILE)}")
