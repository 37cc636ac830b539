"""Post-processing on the chief, shard by shard while merging: top-k, argmax, thresholds, a user function.

All steps read one model output (`output`: the only one unless named) and add columns:

- `argmax`: `class_id` (and `class_name` with `class_names`);
- `top_k=K`: `top_k_ids` and `top_k_scores` (K per record, best first; `top_k_names` with
  `class_names`);
- `threshold=T`: `label`, 1 where the score is >= T (one per output unit; a single unit is a
  scalar label);
- `function="module:function"`: `fn(columns) -> columns`, called on each chunk of records with
  every column so far (numpy arrays, the key included), returning the columns to write.

`keep_outputs=False` drops the raw model outputs from what is written.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tfdist import checks
from tfdist.predict.errors import PredictError


@dataclasses.dataclass(frozen=True)
class PostProcess:
    """What the chief adds to the model outputs before writing them.

    Args:
        output: The model output the steps read. Defaults to the only one.
        argmax: Add `class_id` (and `class_name`). Defaults to False.
        top_k: Add the `top_k` best classes and scores; 0 for none. Defaults to 0.
        class_names: Names of the output units, for `class_name` / `top_k_names`.
        threshold: Add `label` = score >= threshold. Defaults to none.
        function: A `"module:function"` applied last. Defaults to none.
        keep_outputs: Write the raw model outputs too. Defaults to True.
    """

    output: str | None = None
    argmax: bool = False
    top_k: int = 0
    class_names: tuple[str, ...] = ()
    threshold: float | None = None
    function: str | None = None
    keep_outputs: bool = True

    @property
    def active(self) -> bool:
        return self.argmax or self.top_k > 0 or self.threshold is not None

    def check(self, output_shapes: Mapping[str, Sequence[int | None]]) -> None:
        """Checks the settings against the model's outputs (name -> per-record shape).

        Raises:
            PredictError: Nothing fits (one line, naming the argument).
        """
        checks.non_negative_int("top_k", self.top_k, hint="0 for none", error=PredictError)
        if self.function is not None:
            load_function(self.function)
        if not self.active:
            return
        name = self.target(output_shapes)
        shape = list(output_shapes[name])
        units = shape[-1] if shape else 1
        if (self.argmax or self.top_k) and len(shape) != 1:
            raise PredictError(f"argmax/top_k need an output of shape [classes]; output {name!r} "
                               f"has shape {shape}.")
        if self.top_k and units is not None and self.top_k > units:
            raise PredictError(f"Invalid value for argument `top_k`. Received: top_k={self.top_k}, "
                               f"but output {name!r} has only {units} classes.")
        if self.class_names and units is not None and len(self.class_names) != units:
            raise PredictError(f"Invalid value for argument `class_names`. Received "
                               f"{len(self.class_names)} names for output {name!r} with {units} "
                               "classes. Pass one name per class.")

    def target(self, outputs: Mapping[str, Any]) -> str:
        if self.output is not None:
            if self.output not in outputs:
                raise PredictError(f"Invalid value for argument `output`. Received: output="
                                   f"{self.output!r}; the model's outputs are {sorted(outputs)}.")
            return self.output
        if len(outputs) != 1:
            raise PredictError(f"The model has {len(outputs)} outputs ({sorted(outputs)}); pass "
                               "--output=NAME to choose the one to post-process.")
        return next(iter(outputs))

    def apply(self, key_name: str, keys: np.ndarray,
              outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The columns to write for one chunk of records, key first."""
        columns: dict[str, np.ndarray] = {key_name: keys}
        if self.keep_outputs:
            columns.update(outputs)
        if self.active:
            scores = outputs[self.target(outputs)]
            names = np.asarray(self.class_names) if self.class_names else None
            if self.argmax:
                columns["class_id"] = np.argmax(scores, axis=-1).astype(np.int64)
                if names is not None:
                    columns["class_name"] = names[columns["class_id"]]
            if self.top_k:
                ids = np.argsort(-scores, axis=-1, kind="stable")[:, : self.top_k].astype(np.int64)
                columns["top_k_ids"] = ids
                columns["top_k_scores"] = np.take_along_axis(scores, ids, axis=-1)
                if names is not None:
                    columns["top_k_names"] = names[ids]
            if self.threshold is not None:
                label = (scores >= self.threshold).astype(np.int64)
                columns["label"] = label[..., 0] if label.ndim == 2 and label.shape[1] == 1 else label
        if self.function is not None:
            columns = _call(load_function(self.function), columns, self.function)
        return columns


_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def load_function(ref: str) -> Callable[..., Any]:
    """Imports `"module:function"` (once).

    Raises:
        PredictError: It is not of that form, or cannot be imported or found.
    """
    if ref in _FUNCTIONS:
        return _FUNCTIONS[ref]
    module, _, name = ref.partition(":")
    if not module or not name:
        raise PredictError(f"Invalid value for argument `postprocess`. Received: postprocess={ref!r}."
                           ' Pass "module:function".')
    try:
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as e:
        raise PredictError(f"Invalid value for argument `postprocess`. Received: postprocess={ref!r}"
                           f", which cannot be loaded ({type(e).__name__}: {e}).") from None
    if not callable(target):
        raise PredictError(f"Invalid value for argument `postprocess`. Received: postprocess={ref!r}"
                           f", a {type(target).__name__}, not a function.")
    _FUNCTIONS[ref] = target
    return target


def _call(fn: Callable[..., Any], columns: dict[str, np.ndarray], ref: str) -> dict[str, np.ndarray]:
    result = fn(dict(columns))
    if not isinstance(result, Mapping):
        raise PredictError(f"The postprocess function {ref} returned a {type(result).__name__}; it "
                           "must return a dict of column name -> array.")
    rows = len(next(iter(columns.values())))
    out = {}
    for name, value in result.items():
        value = np.asarray(value)
        if value.ndim == 0 or len(value) != rows:
            raise PredictError(f"The postprocess function {ref} returned column {name!r} with "
                               f"shape {list(value.shape)}; it needs one value per record ({rows}).")
        out[str(name)] = value
    return out
