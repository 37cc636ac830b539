"""Calling `input_fn` in the forms tf.estimator users wrote, and distributing what it returns.

- Arguments are filled by name: `mode`, `params`, `config`, `input_context` (all optional).
- It returns a `tf.data.Dataset` of `(features, labels)` pairs or of features alone, or a
  `(features, labels)` tuple of tensors (one batch; repeated for training).
- An `input_fn` that takes `input_context` builds one input pipeline per worker and shards
  itself: it goes to `strategy.distribute_datasets_from_function` and its batches are
  per-replica. Any other `input_fn` returns global batches: they go to
  `strategy.experimental_distribute_dataset`, which splits them over the replicas (and
  auto-shards across workers). `tfdist.data.input_fn(DataSpec(...))` is an `input_fn` of the
  first kind.

Also the public input helpers of `tf.compat.v1.estimator.inputs`: `numpy_input_fn` and
`pandas_input_fn` (in `array_inputs`), which return `input_fn`s of the first kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfdist.estimator import spec as spec_lib
from tfdist.estimator.array_inputs import numpy_input_fn  # noqa: F401  (public API)
from tfdist.estimator.array_inputs import pandas_input_fn  # noqa: F401  (public API)
from tfdist.estimator.model_fn import function_args

_INPUT_FN_ARGS = ("mode", "params", "config", "input_context")
_TENSOR_SPECS = (tf.TensorSpec, tf.SparseTensorSpec, tf.RaggedTensorSpec)


@dataclasses.dataclass
class InputInfo:
    """What one call of `input_fn` produced (per input pipeline).

    Attributes:
        element_spec: The dataset's element spec, batch dimension relaxed to `None`.
        has_labels: Elements are `(features, labels)` pairs.
        finite: The dataset may end (its cardinality is not infinite).
    """

    element_spec: Any = None
    has_labels: bool = False
    finite: bool = True

    @property
    def feature_spec(self) -> Any:
        return self.element_spec[0] if self.has_labels else self.element_spec

    @property
    def label_spec(self) -> Any:
        return self.element_spec[1] if self.has_labels else None


def split(element: Any, has_labels: bool) -> tuple[Any, Any]:
    """`(features, labels)` of one element (labels `None` for features-only data)."""
    return (element[0], element[1]) if has_labels else (element, None)


def _relax(spec: Any) -> Any:
    if isinstance(spec, tf.TensorSpec) and spec.shape.rank:
        return tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)
    return spec


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class InputFn:
    """One user `input_fn`, callable the way tf.estimator called it.

    Raises:
        TypeError: It takes arguments tfdist cannot fill.
    """

    def __init__(self, input_fn: Callable[..., Any], *, params: dict | None, config: Any) -> None:
        if not callable(input_fn):
            raise TypeError(
                f"Invalid value for argument `input_fn`. Received: {type(input_fn).__name__}. "
                "Pass a function returning a tf.data.Dataset of (features, labels)."
            )
        self.fn = input_fn
        self.args = function_args(input_fn)
        unknown = [a for a in self.args if a not in _INPUT_FN_ARGS]
        if unknown:
            raise TypeError(
                f"input_fn ({_fn_name(input_fn)}) takes arguments tfdist cannot fill: {unknown}. "
                f"Valid arguments: {', '.join(_INPUT_FN_ARGS)} (all optional)."
            )
        self.params = params
        self.config = config
        # The datasets `distribute` built, by (mode, input pipeline): a resumed `train` moves
        # its input to the restored step without calling the user's input_fn a second time.
        self._built: dict[tuple[str, int], tuple[tf.data.Dataset, InputInfo]] = {}

    def _dataset_once(self, mode: str, input_context: tf.distribute.InputContext | None = None
                      ) -> tuple[tf.data.Dataset, InputInfo]:
        key = (mode, input_context.input_pipeline_id if input_context else -1)
        if key not in self._built:
            self._built[key] = self.dataset(mode, input_context)
        return self._built[key]

    @property
    def takes_input_context(self) -> bool:
        return "input_context" in self.args

    def dataset(self, mode: str, input_context: tf.distribute.InputContext | None = None
                ) -> tuple[tf.data.Dataset, InputInfo]:
        """Calls the function and returns its data as a dataset, with what it holds.

        Raises:
            TypeError: It returned neither a dataset nor a (features, labels) tuple.
            ValueError: Its dataset's elements are tuples of another length than 2.
        """
        dataset = self.call(mode, input_context)
        return dataset, self._describe(dataset, f"input_fn ({_fn_name(self.fn)})")

    def call(self, mode: str, input_context: tf.distribute.InputContext | None = None
             ) -> tf.data.Dataset:
        """Calls the function and returns its data as a dataset (also inside a `tf.function`).

        Raises:
            TypeError: It returned neither a dataset nor a (features, labels) tuple.
        """
        kwargs: dict[str, Any] = {}
        if "mode" in self.args:
            kwargs["mode"] = mode
        if "params" in self.args:
            kwargs["params"] = dict(self.params or {})
        if "config" in self.args:
            kwargs["config"] = self.config
        if "input_context" in self.args:
            kwargs["input_context"] = input_context
        result = self.fn(**kwargs)
        where = f"input_fn ({_fn_name(self.fn)})"
        if isinstance(result, tf.data.Dataset):
            dataset = result
        elif isinstance(result, (tuple, list)):
            if len(result) != 2:
                raise ValueError(
                    f"{where} returned a {type(result).__name__} of {len(result)} items; return "
                    "a (features, labels) pair or a tf.data.Dataset of such pairs."
                )
            dataset = self._from_tensors(tuple(result), mode, where)
        elif isinstance(result, (dict, tf.Tensor, tf.SparseTensor)):
            dataset = self._from_tensors(result, mode, where)
        else:
            raise TypeError(
                f"{where} returned {type(result).__name__}; return a tf.data.Dataset of "
                "(features, labels) pairs, or a (features, labels) tuple of tensors."
            )
        return dataset

    @staticmethod
    def _from_tensors(value: Any, mode: str, where: str) -> tf.data.Dataset:
        try:
            dataset = tf.data.Dataset.from_tensors(value)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"{where} returned values that are not tensors ({err}). Return tensors, "
                "arrays or dicts of them, or a tf.data.Dataset."
            ) from None
        return dataset.repeat() if mode == spec_lib.ModeKeys.TRAIN else dataset

    @staticmethod
    def _describe(dataset: tf.data.Dataset, where: str) -> InputInfo:
        element = dataset.element_spec
        if isinstance(element, (tuple, list)):
            if len(element) != 2:
                raise ValueError(
                    f"{where} returned a dataset whose elements are {len(element)}-tuples "
                    f"({element}). Yield (features, labels) pairs; put extra inputs such as "
                    "weights in the features dict."
                )
            has_labels = True
        else:
            has_labels = False
        for spec in tf.nest.flatten(element):
            if not isinstance(spec, _TENSOR_SPECS):
                raise TypeError(
                    f"{where} returned a dataset with a {type(spec).__name__} component; "
                    "features and labels must be tensors or dicts of tensors."
                )
        cardinality = int(dataset.cardinality())
        return InputInfo(
            element_spec=tf.nest.map_structure(_relax, element),
            has_labels=has_labels,
            finite=cardinality != tf.data.INFINITE_CARDINALITY,
        )

    def distribute(self, strategy: tf.distribute.Strategy, mode: str, *,
                   start_step: int = 0) -> tuple[Any, InputInfo]:
        """The data for `strategy.run` loops, and what one pipeline holds.

        Args:
            strategy: The strategy that will consume it.
            mode: A `ModeKeys` value.
            start_step: Steps to skip: each pipeline drops the elements its replicas would have
                taken in that many steps (one per replica and step). Defaults to 0. A second
                call (a resume moving the input to the restored step) reuses the datasets the
                first built: the user's input_fn runs once per pipeline and mode.

        Returns:
            A distributed dataset (a plain dataset under the default strategy) and its info.
        """
        if self.takes_input_context:
            infos: list[InputInfo] = []

            def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
                dataset, info = self._dataset_once(mode, input_context)
                infos.append(info)
                per_pipeline = (input_context.num_replicas_in_sync
                                // max(1, input_context.num_input_pipelines))
                return dataset.skip(start_step * per_pipeline) if start_step else dataset

            distributed = strategy.distribute_datasets_from_function(dataset_fn)
            if not infos:  # some strategies build pipelines lazily
                replicas = strategy.num_replicas_in_sync
                dataset_fn(tf.distribute.InputContext(num_replicas_in_sync=replicas))
            return distributed, infos[0]
        dataset, info = self._dataset_once(mode)
        if start_step:
            dataset = dataset.skip(start_step)  # elements are global batches here
        return strategy.experimental_distribute_dataset(dataset), info
