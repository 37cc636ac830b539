"""tfdist-train's route adapters: one function per route, and the run that ties them together.

Each adapter (`route_ctl.run`, `route_fit.run`, `route_estimator.run`) takes `(strategy,
build_model, train_spec, eval_spec, settings)` and returns a `RouteResult`; `job.run(options)`
picks the strategy, data and model and calls one. Arrows run one way: this package imports the
routes, the shared layers, `models` and `input_pipelines`; only the binary imports it.

This file only re-exports, lazily, so `tfdist.flags` can read `TrainOptions` without TensorFlow.
"""

import importlib

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "job": ("tfdist.runner.job", None),
    "options": ("tfdist.runner.options", None),
    "ROUTE_FUNCTIONS": ("tfdist.runner.job", "ROUTE_FUNCTIONS"),
    "configure_process": ("tfdist.runner.job", "configure_process"),
    "run": ("tfdist.runner.job", "run"),
    "TrainOptions": ("tfdist.runner.options", "TrainOptions"),
    "RouteResult": ("tfdist.runner.settings", "RouteResult"),
    "RouteSettings": ("tfdist.runner.settings", "RouteSettings"),
    "RunError": ("tfdist.runner.options", "RunError"),
}

__all__ = [*_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfdist.runner' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
