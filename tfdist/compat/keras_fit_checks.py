"""Clear errors where Keras 3 `fit` under tf.distribute fails cryptically.

Upstream, a model compiled outside its strategy's scope fails deep in `_symbolic_build` with
"Mixing different tf.distribute.Strategy objects" or "Need to be inside `with strategy.scope()`",
and a multi-worker `fit` on a dataset whose last batch may be short fails or hangs in a collective
(FINDINGS §6). A peer that dies during `fit`/`evaluate` ends it with `tfdist.peer_failure`'s
one-line `PeerUnavailableError` (issue 15). These checks run first, at the top of `fit`/`evaluate`, and say what to change.
Under `ParameterServerStrategy`, which Keras 3 `fit` does not support (keras-team/keras#18624,
FINDINGS §9), they raise at once and name the route that trains under it (issue 16). Under the
other strategies the `keras_fit` workarounds do not cover (TPU, central storage) they stay
silent, so upstream's own errors come through.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

from tfdist import peer_failure
from tfdist.compat import default_strategy
from tfdist.compat import keras_fit
from tfdist.compat import keras_optimizer_build
from tfdist.compat import strategy_workers

_Trainer = keras_tf_trainer.TensorFlowTrainer
_ORIGINALS = {"fit": _Trainer.fit, "evaluate": _Trainer.evaluate}


class FitConfigError(ValueError):
    """A Keras model, its compile step or its data do not fit the strategy."""


def _strategy_name(strategy) -> str:
    return type(strategy).__name__.lstrip("_")


def check_model_and_data(model, x) -> None:
    """Raises `FitConfigError` for a compile/scope mismatch or an unsafe multi-worker dataset."""
    model_strategy = model._distribute_strategy
    if isinstance(model_strategy, tf.distribute.ParameterServerStrategy):
        raise FitConfigError(
            "Keras 3 `fit`/`evaluate` cannot train under ParameterServerStrategy (Keras 3 dropped "
            "parameter-server training: keras-team/keras#18624). Use the custom-loop route: "
            "tfdist.loop.Trainer(strategy=strategy, ...) run by tfdist.loop.Controller, or "
            "`tfdist-train --route=ctl --strategy=parameter_server`."
        )
    if not keras_fit.handles_strategy(model_strategy):
        return
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and hasattr(optimizer, "_distribution_strategy"):
        opt_strategy = keras_optimizer_build.strategy_of(optimizer)
        if not keras_fit.handles_strategy(opt_strategy):
            return
        opt_default = default_strategy.is_default(opt_strategy)
        if model_strategy is not None and opt_strategy is not model_strategy:
            raise FitConfigError(
                f"The model was built under {_strategy_name(model_strategy)} but compiled outside "
                f"its scope (its optimizer belongs to {_strategy_name(opt_strategy)}). Call "
                "model.compile(...) inside the same `with strategy.scope():` block as the model."
            )
        if model_strategy is None and not opt_default:
            raise FitConfigError(
                f"The model was built outside any strategy scope but compiled under "
                f"{_strategy_name(opt_strategy)}. Build the model inside `with strategy.scope():` "
                "as well (or pass the built model's constructor call into that block)."
            )
    strategy = model_strategy
    if (
        strategy is not None
        and strategy_workers.num_workers(strategy) > 1
        and isinstance(x, tf.data.Dataset)
    ):
        spec = tf.nest.flatten(x.element_spec)[0]
        finite = int(x.cardinality()) != int(tf.data.INFINITE_CARDINALITY)
        if finite and spec.shape.rank and spec.shape[0] is None:
            raise FitConfigError(
                "Under multi-worker training every worker must take the same number of full "
                "batches, but this dataset is finite and its batch size is not fixed (received "
                f"element shape {spec.shape}), so its last batch may be short. Batch with "
                "drop_remainder=True, or .repeat() it and pass steps_per_epoch, or build it with "
                "tfdist.data.for_fit(strategy, spec)."
            )


def _checked(name):
    original = _ORIGINALS[name]

    @functools.wraps(original)
    def method(self, x=None, *args, **kwargs):
        check_model_and_data(self, x)
        # A dead peer ends fit with one line naming it, not a wall of collective errors.
        with peer_failure.translate():
            return original(self, x, *args, **kwargs)

    return method


def install() -> None:
    """Runs the checks at the top of `fit` and `evaluate` (idempotent)."""
    _Trainer.fit = _checked("fit")
    _Trainer.evaluate = _checked("evaluate")
