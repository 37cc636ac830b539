"""tfdist.predict: distributed batch inference -- every worker scores its shards, exactly once, in order.

Re-exports only, loaded lazily (the binary checks its flags before TensorFlow is imported).
See docs/predict.md and `tfdist-predict --help`.
"""

import importlib

# name -> (module, attribute)
_LAZY = {
    "PostProcess": ("tfdist.predict.postprocess", "PostProcess"),
    "PredictError": ("tfdist.predict.errors", "PredictError"),
    "PredictOptions": ("tfdist.predict.options", "PredictOptions"),
    "load_model": ("tfdist.predict.model", "load"),
    "open_source": ("tfdist.predict.readers", "open_source"),
    "read_output": ("tfdist.predict.writers", "read"),
    "run": ("tfdist.predict.job", "run"),
}

__all__ = [*_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfdist.predict' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    return getattr(importlib.import_module(module_name), attribute)
