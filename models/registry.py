"""The model registry: model families by name, each a config class and a `build(config)`.

The built-in families are imported only when first asked for, so listing names (for flags and
error messages) needs neither Keras nor TensorFlow.

Example:

```python
from models import registry
family = registry.get("cnn")
config = family.make_config(input_shape=(8, 8, 1), num_classes=10)
model = family.build(config)
```
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

# name -> module that defines `FAMILY`; imported on first use.
_BUILTIN = {
    "mlp": "models.mlp",
    "cnn": "models.cnn",
    "resnet": "models.resnet",
    "transformer": "models.transformer",
    "embedding": "models.embedding",
}
_REGISTERED: dict[str, ModelFamily] = {}


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """One registered model family.

    Attributes:
        name: Registry name, e.g. `"cnn"`.
        config_class: Frozen dataclass of the family's options. It must have `input_shape`
            and `num_classes` fields (the data decides them) and check its values on creation.
        build: `build(config) -> keras.Model` returning an uncompiled model that outputs logits
            (float32 even under a mixed-precision policy).
        description: One line for `--help` and listings.
    """

    name: str
    config_class: type
    build: Callable[[Any], Any]
    description: str = ""

    def make_config(self, **overrides: Any) -> Any:
        """The family's default config with `overrides` applied (checked on creation).

        Raises:
            ValueError: An unknown field or a value the family cannot build.
        """
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(
                f"Model {self.name!r} has no option(s) {', '.join(unknown)}. "
                f"Valid options: {', '.join(sorted(fields))}."
            )
        return self.config_class(**overrides)


def parse_options(text: str) -> dict[str, Any]:
    """Parses `"depth=56,width=32,hidden=512x256,vocab_size=none"` into config overrides.

    Values: integers, floats, `true`/`false`, `none`, or integers joined by `x` (tuples).
    Needs no Keras, so flag validation can run it.

    Raises:
        ValueError: An item is not `key=value`.
    """
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"expected key=value items separated by commas; received {item!r}")
        options[key] = _parse_value(value)
    return options


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if "x" in text:
        try:
            return tuple(int(part) for part in text.split("x"))
        except ValueError:
            pass
    return text


def register(family: ModelFamily, *, replace: bool = False) -> ModelFamily:
    """Adds a model family to the registry.

    Args:
        family: The family.
        replace: Allow replacing a family of the same name. Defaults to `False`.

    Returns:
        `family`, so a module can write `FAMILY = register(ModelFamily(...))`.

    Raises:
        ValueError: The name is taken and `replace` is false.
    """
    if not replace and family.name in _REGISTERED and _REGISTERED[family.name] is not family:
        raise ValueError(
            f"A model family named {family.name!r} is already registered. Pick another name or "
            "pass replace=True."
        )
    _REGISTERED[family.name] = family
    return family


def names() -> list[str]:
    """Every registered model name (built-ins included), sorted; imports no model code."""
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get(name: str) -> ModelFamily:
    """The family registered under `name`.

    Raises:
        UnknownModelError: No such family; the message lists the valid names.
    """
    if name not in _REGISTERED and name in _BUILTIN:
        importlib.import_module(_BUILTIN[name])  # registers it
    if name not in _REGISTERED:
        raise UnknownModelError(
            f"Unknown model {name!r}. Valid models: {', '.join(names())}."
        )
    return _REGISTERED[name]


def build(name: str, **config: Any) -> Any:
    """Builds model `name` from its default config with `config` applied."""
    family = get(name)
    return family.build(family.make_config(**config))
