"""Exports a trained Keras model for serving, from the chief only, for every route.

`tfdist.predict` and TF Serving read what this writes: ``model_dir/model.keras`` (the Keras
format) and ``model_dir/saved_model`` (a SavedModel with a ``serve`` signature). The Estimator
route exports its own way (`tfdist.estimator.export`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfdist import checks
from tfdist import cluster as cluster_lib

KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
TEMPORARY_PREFIX = ".tmp-"  # an export being written; renamed into place once complete


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
    # Each is written under a hidden temporary name and renamed into place once complete: a
    # kill or a full disk during an export leaves the previous export, never a partial one.
    _write_then_rename(lambda path: model.save(path), paths["keras"])
    _write_then_rename(lambda path: model.export(path, verbose=False), paths["saved_model"])
    return paths


def _write_then_rename(write: Callable[[str], Any], path: str) -> None:
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f"{TEMPORARY_PREFIX}{os.getpid()}-{name}")
    try:
        write(temporary)
        if tf.io.gfile.isdir(temporary) and tf.io.gfile.exists(path):
            # A directory cannot replace another in one rename: the old one goes aside first.
            old = os.path.join(directory, f"{TEMPORARY_PREFIX}old-{os.getpid()}-{name}")
            tf.io.gfile.rename(path, old)
            tf.io.gfile.rename(temporary, path)
            tf.io.gfile.rmtree(old)
        else:
            tf.io.gfile.rename(temporary, path, overwrite=True)
    finally:
        _remove(temporary)


def _remove(path: str) -> None:
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)
