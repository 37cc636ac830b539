"""`warm_start_from`: initialise a fresh model directory's variables from another run."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

import tensorflow as tf
from absl import logging

from tfdist.estimator.variable_store import VariableStore
from tfdist.estimator.variable_store import checkpoint_names


@dataclasses.dataclass(frozen=True)
class WarmStartSettings:
    """Which variables to initialise from where.

    Args:
        ckpt_to_initialize_from: A checkpoint prefix, a directory holding checkpoints (the
            newest is used), or a SavedModel directory (e.g. a tfdist.estimator export). TF1
            name-based checkpoints (from tf.estimator) work when the names match.
        vars_to_warm_start: A regular expression matched (from the start) against the names of
            *trainable* variables; or a list of expressions matched against all variables
            (optimizer slots and batch-norm statistics included); or `None` for none.
            Defaults to `".*"` (every trainable variable).
        var_name_to_vocab_info: Not supported; must be empty.
        var_name_to_prev_var_name: New name -> name in the checkpoint, for renamed variables.
            Defaults to none.

    Raises:
        ValueError: Vocabulary remapping was asked for.
        TypeError: Arguments of the wrong type.
    """

    ckpt_to_initialize_from: str
    vars_to_warm_start: str | list[str] | tuple[str, ...] | None = ".*"
    var_name_to_vocab_info: Mapping[str, Any] | None = None
    var_name_to_prev_var_name: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.ckpt_to_initialize_from, (str, os.PathLike)):
            raise TypeError(
                "Invalid value for argument `ckpt_to_initialize_from`. Received: "
                f"{type(self.ckpt_to_initialize_from).__name__}. Pass a checkpoint path or "
                "directory."
            )
        if self.var_name_to_vocab_info:
            raise ValueError(
                "WarmStartSettings(var_name_to_vocab_info=...) is not supported: tfdist does not "
                "remap vocabularies. Remap the embedding rows yourself, or leave it out."
            )
        vars_ = self.vars_to_warm_start
        if vars_ is not None and not isinstance(vars_, str) and not (
            isinstance(vars_, (list, tuple)) and all(isinstance(v, str) for v in vars_)
        ):
            raise TypeError(
                "Invalid value for argument `vars_to_warm_start`. Received: "
                f"{vars_!r}. Pass a regular expression, a list of them, or None."
            )


def settings_from(warm_start_from: Any) -> WarmStartSettings | None:
    """Normalises an Estimator's `warm_start_from` argument.

    Raises:
        TypeError: Neither a path nor `WarmStartSettings`.
    """
    if warm_start_from is None or isinstance(warm_start_from, WarmStartSettings):
        return warm_start_from
    if isinstance(warm_start_from, (str, os.PathLike)):
        return WarmStartSettings(ckpt_to_initialize_from=os.fspath(warm_start_from))
    raise TypeError(
        "Invalid value for argument `warm_start_from`. Received: "
        f"{type(warm_start_from).__name__}. Pass a checkpoint path, a directory, or "
        "tfdist.estimator.WarmStartSettings."
    )


def resolve_checkpoint(path: str) -> str:
    """The checkpoint prefix behind a prefix, checkpoint directory or SavedModel directory.

    Raises:
        ValueError: Nothing loadable there.
    """
    path = os.fspath(path)
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            return os.path.join(path, "variables", "variables")
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise ValueError(
                f"warm_start_from={path!r} is a directory without checkpoints or a SavedModel. "
                "Pass a model_dir that was trained, a checkpoint prefix, or an export directory."
            )
        return latest
    try:
        tf.train.list_variables(path)
    except (tf.errors.OpError, ValueError):
        raise ValueError(
            f"warm_start_from={path!r} is not a checkpoint. Pass a checkpoint prefix (e.g. "
            "model_dir/ckpt-100), a directory holding checkpoints, or a SavedModel directory."
        ) from None
    return path


def warm_start(settings: WarmStartSettings, store: VariableStore) -> list[str]:
    """Assigns the selected variables their values from the checkpoint.

    Returns:
        The names of the variables loaded.

    Raises:
        ValueError: A selected variable is missing from the checkpoint or has another shape.
    """
    path = resolve_checkpoint(settings.ckpt_to_initialize_from)
    available = checkpoint_names(path)
    selector = settings.vars_to_warm_start
    candidates = store.checkpointed()
    if selector is None:
        selected: list[str] = []
    elif isinstance(selector, str):
        trainable = {k for k, v in candidates.items() if v.trainable}
        selected = [k for k in candidates if k in trainable and re.match(selector, k)]
    else:
        selected = [k for k in candidates if any(re.match(p, k) for p in selector)]
    renames = dict(settings.var_name_to_prev_var_name or {})
    reader = tf.train.load_checkpoint(path)
    missing, loaded = [], []
    for name in selected:
        previous = renames.get(name, name)
        if previous not in available:
            missing.append(previous)
            continue
        value = reader.get_tensor(available[previous])
        variable = candidates[name]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(
                f"Cannot warm-start {name!r}: it has shape {tuple(variable.shape)} but "
                f"{previous!r} in {path} has shape {tuple(value.shape)}. Exclude it from "
                "vars_to_warm_start or map it with var_name_to_prev_var_name."
            )
        variable.assign(value)
        loaded.append(name)
    if missing:
        shown = ", ".join(sorted(available)[:8])
        raise ValueError(
            f"Cannot warm-start from {path}: it has no variable(s) {missing}. It has: {shown}"
            f"{' ...' if len(available) > 8 else ''}. Narrow vars_to_warm_start or map names "
            "with var_name_to_prev_var_name."
        )
    logging.info("tfdist.estimator: warm-started %d variable(s) from %s", len(loaded), path)
    return loaded
