"""Data sources for `tfdist.data`: `digits`, `tfds`, `tfrecord` and `synthetic`.

This file only re-exports, lazily: parsing a `--dataset` value (`registry.parse`) imports no
TensorFlow.

Example:

```python
import input_pipelines
data = input_pipelines.load("digits")
train_spec = data.train_spec(global_batch_size=64)
```
"""

import importlib

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "base": ("input_pipelines.base", None),
    "digits": ("input_pipelines.digits", None),
    "registry": ("input_pipelines.registry", None),
    "synthetic": ("input_pipelines.synthetic", None),
    "tfds": ("input_pipelines.tfds", None),
    "tfrecord": ("input_pipelines.tfrecord", None),
    "DatasetSources": ("input_pipelines.base", "DatasetSources"),
    "load": ("input_pipelines.registry", "load"),
    "parse": ("input_pipelines.registry", "parse"),
    "write_shards": ("input_pipelines.tfrecord", "write_shards"),
}

__all__ = [*_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'input_pipelines' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
