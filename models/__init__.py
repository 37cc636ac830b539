"""Keras 3 model builders by name: `mlp`, `cnn`, `resnet`, `transformer`, `embedding`.

This file only re-exports, lazily: listing model names (`models.names()`) imports no Keras.

Example:

```python
import models
model = models.build("cnn", input_shape=(8, 8, 1), num_classes=10)
models.count_params(model), models.flops_per_example(model)
```
"""

import importlib

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "registry": ("models.registry", None),
    "ModelFamily": ("models.registry", "ModelFamily"),
    "UnknownModelError": ("models.registry", "UnknownModelError"),
    "build": ("models.registry", "build"),
    "get": ("models.registry", "get"),
    "names": ("models.registry", "names"),
    "parse_options": ("models.registry", "parse_options"),
    "register": ("models.registry", "register"),
    "count_params": ("models.flops", "count_params"),
    "flops_per_example": ("models.flops", "flops_per_example"),
    "MLPConfig": ("models.mlp", "MLPConfig"),
    "CNNConfig": ("models.cnn", "CNNConfig"),
    "ResNetConfig": ("models.resnet", "ResNetConfig"),
    "TransformerConfig": ("models.transformer", "TransformerConfig"),
    "EmbeddingConfig": ("models.embedding", "EmbeddingConfig"),
}

__all__ = [*_LAZY]


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)
