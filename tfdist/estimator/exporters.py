"""Exporters run after evaluations in `train_and_evaluate`: latest, best and final SavedModels.

Each writes timestamped SavedModels into `model_dir/export/<name>/` via
`Estimator.export_saved_model`.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfdist import checks

class Exporter:
    """Base class: `export(...)` is called after each evaluation."""

    @property
    def name(self) -> str:
        raise NotImplementedError

    def export(self, estimator: Any, export_path: str, checkpoint_path: str | None,
               eval_result: Mapping[str, Any], is_the_final_export: bool) -> str | None:
        """Exports (or not); returns the export directory or `None`."""
        raise NotImplementedError


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(
            f"Invalid value for argument `name`. Received: name={name!r}. Pass a non-empty "
            "directory name (exports go to model_dir/export/<name>)."
        )
    return name


def _check_receiver(fn: Any) -> Callable[[], Any]:
    if not callable(fn):
        raise TypeError(
            "Invalid value for argument `serving_input_receiver_fn`. Received: "
            f"{type(fn).__name__}. Pass a function returning a ServingInputReceiver."
        )
    return fn


def _check_keep(exports_to_keep: Any) -> int | None:
    return checks.positive_int("exports_to_keep", exports_to_keep, allow_none=True,
                               none_means="keep all")


def _garbage_collect(export_path: str, keep: int | None) -> None:
    if keep is None or not tf.io.gfile.isdir(export_path):
        return
    stamps = sorted(int(n) for n in tf.io.gfile.listdir(export_path) if n.strip("/").isdigit())
    for stamp in stamps[:-keep]:
        tf.io.gfile.rmtree(os.path.join(export_path, str(stamp)))


class _SavedModelExporter(Exporter):
    # `None` is typed in for BestExporter's tf.estimator-compatible default; it is refused.
    def __init__(self, name: str, serving_input_receiver_fn: Callable[[], Any] | None,
                 assets_extra: Mapping[str, str] | None = None, as_text: bool = False) -> None:
        self._name = _check_name(name)
        self._receiver_fn = _check_receiver(serving_input_receiver_fn)
        self._assets_extra = assets_extra
        self._as_text = as_text

    @property
    def name(self) -> str:
        return self._name

    def _export(self, estimator: Any, export_path: str, checkpoint_path: str | None) -> str:
        return estimator.export_saved_model(
            export_path, self._receiver_fn, assets_extra=self._assets_extra,
            as_text=self._as_text, checkpoint_path=checkpoint_path,
        )


class LatestExporter(_SavedModelExporter):
    """Exports after every evaluation, keeping the newest `exports_to_keep`.

    Args:
        name: Directory under `model_dir/export/`.
        serving_input_receiver_fn: Returns a `ServingInputReceiver`.
        assets_extra: Extra files for each export. Defaults to none.
        as_text: Not supported; must be `False`.
        exports_to_keep: Exports kept; `None` keeps all. Defaults to 5.
    """

    def __init__(self, name: str, serving_input_receiver_fn: Callable[[], Any],
                 assets_extra: Mapping[str, str] | None = None, as_text: bool = False,
                 exports_to_keep: int | None = 5) -> None:
        super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
        self._keep = _check_keep(exports_to_keep)

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        path = self._export(estimator, export_path, checkpoint_path)
        _garbage_collect(export_path, self._keep)
        return path


class FinalExporter(_SavedModelExporter):
    """Exports once, after the final evaluation.

    Args:
        name: Directory under `model_dir/export/`.
        serving_input_receiver_fn: Returns a `ServingInputReceiver`.
        assets_extra: Extra files for the export. Defaults to none.
        as_text: Not supported; must be `False`.
    """

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if not is_the_final_export:
            return None
        return self._export(estimator, export_path, checkpoint_path)


def _loss_smaller(best_eval_result: Mapping[str, Any], current_eval_result: Mapping[str, Any]) -> bool:
    """The default `compare_fn`: True when the current loss is lower."""
    for result in (best_eval_result, current_eval_result):
        if "loss" not in result:
            raise ValueError(
                "BestExporter's default compare_fn compares `loss`, which the eval result lacks "
                f"(keys: {sorted(result)}). Pass compare_fn=..."
            )
    return current_eval_result["loss"] < best_eval_result["loss"]


class BestExporter(_SavedModelExporter):
    """Exports when an evaluation beats the best so far (by `compare_fn`).

    The best result survives restarts: it is read back from the eval summaries matching
    `event_file_pattern` the first time the exporter runs.

    Args:
        name: Directory under `model_dir/export/`. Defaults to `"best_exporter"`.
        serving_input_receiver_fn: Returns a `ServingInputReceiver`.
        event_file_pattern: Eval summaries, relative to `model_dir`. Defaults to
            `"eval/*.tfevents.*"`; `None` starts from no best result.
        compare_fn: `compare_fn(best_eval_result, current_eval_result)` -> True when the
            current one is better. Defaults to a smaller `loss`.
        assets_extra: Extra files for each export. Defaults to none.
        as_text: Not supported; must be `False`.
        exports_to_keep: Exports kept; `None` keeps all. Defaults to 5.
    """

    def __init__(self, name: str = "best_exporter",
                 serving_input_receiver_fn: Callable[[], Any] | None = None,
                 event_file_pattern: str | None = "eval/*.tfevents.*",
                 compare_fn: Callable[[Mapping, Mapping], bool] = _loss_smaller,
                 assets_extra: Mapping[str, str] | None = None, as_text: bool = False,
                 exports_to_keep: int | None = 5) -> None:
        super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
        if not callable(compare_fn):
            raise TypeError(
                f"Invalid value for argument `compare_fn`. Received: {type(compare_fn).__name__}. "
                "Pass compare_fn(best_eval_result, current_eval_result) -> bool."
            )
        self._compare = compare_fn
        self._pattern = event_file_pattern
        self._keep = _check_keep(exports_to_keep)
        self._best: Mapping[str, Any] | None = None
        self._loaded = False

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        if not self._loaded:
            self._loaded = True
            if self._pattern:
                pattern = os.path.join(estimator.model_dir, self._pattern)
                self._best = self._best_from_events(pattern, eval_result)
        if self._best is not None and not self._compare(self._best, eval_result):
            return None
        self._best = dict(eval_result)
        path = self._export(estimator, export_path, checkpoint_path)
        _garbage_collect(export_path, self._keep)
        return path

    def _best_from_events(self, pattern: str, current: Mapping[str, Any]) -> Mapping[str, Any] | None:
        by_step: dict[int, dict[str, float]] = {}
        for path in glob.glob(pattern):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    number = (float(tf.make_ndarray(value.tensor)) if value.HasField("tensor")
                              else value.simple_value)
                    by_step.setdefault(event.step, {})[value.tag] = number
        step = current.get("global_step")
        best = None
        for event_step, result in sorted(by_step.items()):
            if event_step == step or not set(current) - {"global_step"} <= set(result):
                continue  # the current evaluation, or a partial record
            result = {**result, "global_step": event_step}
            if best is None or self._compare(best, result):
                best = result
        if best is not None:
            logging.info("tfdist.estimator: %s starts from the best eval so far: %s", self.name, best)
        return best


def run_exporters(estimator: Any, exporters: tuple[Exporter, ...], checkpoint_path: str | None,
                  eval_result: Mapping[str, Any], is_the_final_export: bool) -> list[str]:
    """Runs every exporter into `model_dir/export/<name>`; returns the directories written."""
    written = []
    for exporter in exporters:
        path = exporter.export(
            estimator, os.path.join(estimator.model_dir, "export", exporter.name), checkpoint_path,
            {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in eval_result.items()},
            is_the_final_export,
        )
        if path is not None:
            written.append(path)
    return written
