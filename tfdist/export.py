"""Exports a trained Keras model for serving, from the chief only, for every route.

`tfdist.predict` and TF Serving read what this writes: ``model_dir/model.keras`` (the Keras
format) and ``model_dir/saved_model`` (a SavedModel with a ``serve`` signature). The Estimator
route exports its own way (`tfdist.estimator.export`).
"""

from __future__ import annotations

import os
from typing import Any

import tensorflow as tf

from tfdist import checks
from tfdist import cluster as cluster_lib

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"


def export_model(model: Any, model_dir: str, *,
                 cluster: cluster_lib.ClusterInfo | None = None) -> dict[str, str]:
    """Saves `model` as ``model_dir/model.keras`` and a SavedModel in ``model_dir/saved_model``.

    Only the chief exports: it alone writes `model_dir`. On any other task this is a no-op that
    returns ``{}``, so the same code can call it on every worker.

    Args:
        model: A built `keras.Model`.
        model_dir: The run's directory (created if missing).
        cluster: This task's place in the cluster. Defaults to `tfdist.cluster.resolve()`.

    Returns:
        The paths written, ``{"keras": ..., "saved_model": ...}``; ``{}`` on a non-chief task.

    Raises:
        ValueError: `model_dir` is not a path.
    """
    model_dir = checks.path("model_dir", model_dir, what="a directory path")
    if not (cluster or cluster_lib.resolve()).is_chief:
        return {}
    tf.io.gfile.makedirs(model_dir)
    paths = {"keras": os.path.join(model_dir, KERAS_FILE),
             "saved_model": os.path.join(model_dir, SAVED_MODEL_DIR)}
    model.save(paths["keras"])
    model.export(paths["saved_model"], verbose=False)
    return paths
