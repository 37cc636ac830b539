"""Datasets by name, as `tfdist-train --dataset` spells them.

    digits                                     scikit-learn's 8x8 digits (the default)
    synthetic[:shape=32x32x3,classes=10,size=4096,eval_size=1024,vocab=1000,seed=0]
    tfds:NAME[,train_split=train,eval_split=test,data_dir=DIR,download=true]
    tfrecord:DIR[,train_prefix=train,eval_prefix=eval]

`parse` checks the text without importing TensorFlow (flag validation runs it); `load` builds
the sources.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _shape(text: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in text.split("x"))
    if not dims or min(dims) < 1:
        raise ValueError
    return dims


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise ValueError
    return value


def _bool(text: str) -> bool:
    return _BOOL[text.lower()]


# kind -> (positional argument name or None, {option: (parser, what it takes)})
_KINDS: dict[str, tuple[str | None, dict[str, tuple[Any, str]]]] = {
    "digits": (None, {}),
    "synthetic": (None, {
        "shape": (_shape, "dimensions joined by 'x', e.g. 32x32x3"),
        "classes": (_at_least_two, "an integer >= 2"),
        "size": (_positive, "a positive integer"),
        "eval_size": (_positive, "a positive integer"),
        "vocab": (_at_least_two, "an integer >= 2"),
        "seed": (int, "an integer"),
    }),
    "tfds": ("name", {
        "train_split": (str, "a split, e.g. train or train[:90%]"),
        "eval_split": (str, "a split, e.g. test"),
        "data_dir": (str, "a directory"),
        "download": (_bool, "true or false"),
    }),
    "tfrecord": ("directory", {
        "train_prefix": (str, "a file prefix"),
        "eval_prefix": (str, "a file prefix"),
    }),
}
_MODULES = {"digits": "input_pipelines.digits", "synthetic": "input_pipelines.synthetic",
            "tfds": "input_pipelines.tfds", "tfrecord": "input_pipelines.tfrecord"}
_SYNTHETIC_ARGS = {"classes": "num_classes", "vocab": "vocab_size"}


@dataclasses.dataclass(frozen=True)
class DatasetRequest:
    """A parsed `--dataset` value.

    Attributes:
        kind: `"digits"`, `"synthetic"`, `"tfds"` or `"tfrecord"`.
        argument: The positional argument (TFDS name, TFRecord directory), or `None`.
        options: Parsed `key=value` options.
    """

    kind: str
    argument: str | None = None
    options: tuple[tuple[str, Any], ...] = ()


def parse(text: str) -> DatasetRequest:
    """Parses `KIND[:ARGUMENT][,key=value...]` (see the module docstring) without importing TF.

    Raises:
        ValueError: One line saying what is wrong and what is accepted.
    """
    kind, _, rest = text.strip().partition(":")
    if kind not in _KINDS:
        raise ValueError(f"unknown dataset {kind!r}; valid: {', '.join(_KINDS)} "
                         "(e.g. digits, synthetic:shape=32x32x3, tfds:mnist, tfrecord:DIR)")
    positional, accepted = _KINDS[kind]
    argument, options = None, {}
    for i, item in enumerate(part for part in rest.split(",") if part) if rest else ():
        key, eq, value = item.partition("=")
        if not eq:
            if i == 0 and positional:
                argument = item
                continue
            raise ValueError(f"{kind}: unexpected {item!r}; options are key=value "
                             f"({', '.join(accepted) or 'none'})")
        if key not in accepted:
            raise ValueError(f"{kind}: unknown option {key!r}; valid: {', '.join(accepted) or 'none'}")
        parser, takes = accepted[key]
        try:
            options[key] = parser(value)
        except (ValueError, KeyError):
            raise ValueError(f"{kind}: option {key}={value!r} must be {takes}") from None
    if positional and not argument:
        raise ValueError(f"{kind} needs a {positional}, e.g. "
                         f"{'tfds:mnist' if kind == 'tfds' else 'tfrecord:/data/digits'}")
    return DatasetRequest(kind, argument, tuple(options.items()))


def load(text: str, *, seed: int = 0) -> Any:
    """Parses `text` and builds the dataset's `DatasetSources`.

    Args:
        text: A `--dataset` value.
        seed: Default seed for generated data and TFDS file shuffling. Defaults to 0.

    Raises:
        ValueError: `text` does not parse, or the dataset does not fit (see each pipeline).
    """
    request = parse(text)
    module = importlib.import_module(_MODULES[request.kind])
    options = dict(request.options)
    if request.kind == "digits":
        return module.sources()
    if request.kind == "synthetic":
        options.setdefault("seed", seed)
        return module.sources(**{_SYNTHETIC_ARGS.get(k, k): v for k, v in options.items()})
    if request.kind == "tfds":
        return module.sources(request.argument, seed=seed, **options)
    return module.sources(request.argument, **options)
