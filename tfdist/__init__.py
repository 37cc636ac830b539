"""tfdist: distributed training for TensorFlow 2 / Keras 3 that works.

This file only re-exports. Submodules load lazily: `python -m tfdist.cluster` neither imports
TensorFlow nor imports itself twice.
"""

import importlib

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "cluster": ("tfdist.cluster", None),
    "compat": ("tfdist.compat", None),
    "checkpoint": ("tfdist.checkpoint", None),
    "data": ("tfdist.data", None),
    "estimator": ("tfdist.estimator", None),
    "gradients": ("tfdist.gradients", None),
    "keras": ("tfdist.keras", None),
    "launch": ("tfdist.launch", None),
    "loop": ("tfdist.loop", None),
    "outer_loop": ("tfdist.outer_loop", None),
    "parameter_server": ("tfdist.parameter_server", None),
    "predict": ("tfdist.predict", None),
    "peer_failure": ("tfdist.peer_failure", None),
    "PeerUnavailableError": ("tfdist.peer_failure", "PeerUnavailableError"),
    "strategy": ("tfdist.strategy", None),
    "get_strategy": ("tfdist.strategy", "get_strategy"),
    "describe": ("tfdist.strategy", "describe"),
}

__all__ = [*_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'tfdist' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
