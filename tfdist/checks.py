"""Argument checks with one wording, shared by every layer.

Every check raises ``error`` (a `ValueError` by default; a layer passes its own subclass) with
the Keras-style message ``Invalid value for argument `x`. Received: x=.... Pass ...``: the
culprit, what was received, and what to pass instead. Booleans are never integers or numbers
here (``True`` is an `int` to Python, never a step count to a user). Kept free of TensorFlow
imports: the command lines check their input before TensorFlow loads.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

# "Run until the input ends": a step bound no loop reaches, far from int64's edge so that adding
# a few steps to it cannot overflow.
UNTIL_END = 2**62


def _where(name: str, owner: str | None) -> str:
    return f"`{name}`" + (f" of {owner}" if owner else "")


def _fail(name: str, received: str, expected: str, *, owner: str | None,
          error: type[Exception]) -> Exception:
    return error(f"Invalid value for argument {_where(name, owner)}. Received: {received}. "
                 f"Pass {expected}.")


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers; False for booleans."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _integer_range(minimum: int, maximum: int | None) -> str:
    if maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum == 0:
        return "a non-negative integer"
    return f"an integer >= {minimum}"


def _or_none(allow_none: bool, none_means: str | None) -> str:
    if not allow_none:
        return ""
    return " or None" + (f" ({none_means})" if none_means else "")


def integer(name: str, value: Any, *, minimum: int = 1, maximum: int | None = None,
            allow_none: bool = False, none_means: str | None = None, hint: str | None = None,
            owner: str | None = None, error: type[Exception] = ValueError) -> Any:
    """Checks that `value` is an integer in ``[minimum, maximum]`` (or None when allowed).

    Args:
        name: The argument's name, as the user wrote it.
        value: What the user passed.
        minimum: Smallest valid value. Defaults to 1.
        maximum: Largest valid value; None for no bound. Defaults to None.
        allow_none: Whether None is valid. Defaults to False.
        none_means: What None does, shown in the message (e.g. "keep all"). Defaults to None.
        hint: More advice, shown after what to pass (e.g. "use BinaryClassHead for 2 classes").
        owner: The class or function the argument belongs to, when the name alone is ambiguous.
        error: The exception class raised. Defaults to `ValueError`.

    Returns:
        `value` as an `int`, or None.

    Raises:
        error: `value` is not an integer in range (booleans never are).
    """
    if value is None and allow_none:
        return None
    if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
        expected = _integer_range(minimum, maximum) + _or_none(allow_none, none_means)
        raise _fail(name, f"{name}={value!r}", expected + (f"; {hint}" if hint else ""),
                    owner=owner, error=error)
    return int(value)


def positive_int(name: str, value: Any, **kwargs: Any) -> Any:
    """`integer` with ``minimum=1``: a count of steps, items, workers, ..."""
    return integer(name, value, minimum=1, **kwargs)


def non_negative_int(name: str, value: Any, **kwargs: Any) -> Any:
    """`integer` with ``minimum=0``: a number of retries, an index, ..."""
    return integer(name, value, minimum=0, **kwargs)


def seconds(name: str, value: Any, *, allow_zero: bool = False, allow_none: bool = False,
            none_means: str | None = None, example: float | None = None,
            owner: str | None = None, error: type[Exception] = ValueError) -> Any:
    """Checks that `value` is a finite number of seconds, > 0 (>= 0 with `allow_zero`).

    Args:
        name: The argument's name.
        value: What the user passed.
        allow_zero: Whether 0 is valid. Defaults to False.
        allow_none: Whether None is valid. Defaults to False.
        none_means: What None does, shown in the message. Defaults to None.
        example: A typical value shown in the message. Defaults to None.
        owner: The class or function the argument belongs to.
        error: The exception class raised. Defaults to `ValueError`.

    Returns:
        `value` as a `float`, or None.

    Raises:
        error: `value` is not a finite number in range (booleans never are).
    """
    if value is None and allow_none:
        return None
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not (math.isfinite(number) and (number >= 0 if allow_zero else number > 0)):
        expected = f"a number of seconds {'>= 0' if allow_zero else '> 0'}"
        expected += _or_none(allow_none, none_means)
        if example is not None:
            expected += f", e.g. {example:g}"
        raise _fail(name, f"{name}={value!r}", expected, owner=owner, error=error)
    return number


def one_of(name: str, value: T, choices: Iterable[Any], *, owner: str | None = None,
           error: type[Exception] = ValueError) -> T:
    """Checks that `value` is one of `choices` (compared with ``==``; booleans never match ints).

    Returns:
        `value`.

    Raises:
        error: `value` is not one of `choices`; the message lists them.
    """
    choices = tuple(choices)
    if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
        found = False
    else:
        try:
            found = value in choices
        except TypeError:  # an unhashable or incomparable value
            found = False
    if not found:
        raise error(f"Invalid value for argument {_where(name, owner)}. Received: "
                    f"{name}={value!r}. Valid values: {', '.join(map(str, choices))}.")
    return value


def path(name: str, value: Any, *, what: str = "a path", allow_none: bool = False,
         owner: str | None = None, error: type[Exception] = ValueError) -> Any:
    """Checks that `value` is a non-empty path (a `str` or `os.PathLike`); does not touch the disk.

    Args:
        name: The argument's name.
        value: What the user passed.
        what: What the path names, for the message (e.g. "a directory path").
        allow_none: Whether None is valid. Defaults to False.
        owner: The class or function the argument belongs to.
        error: The exception class raised. Defaults to `ValueError`.

    Returns:
        `value` as a `str` (``os.fspath``), or None.

    Raises:
        error: `value` is empty or not a path.
    """
    if value is None and allow_none:
        return None
    text = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(text, str) or not text:
        raise _fail(name, f"{name}={value!r}", what + _or_none(allow_none, None),
                    owner=owner, error=error)
    return text


def function(name: str, value: Any, *, what: str = "a function", allow_none: bool = False,
             owner: str | None = None, error: type[Exception] = TypeError) -> Any:
    """Checks that `value` is callable (or None when allowed).

    Returns:
        `value`.

    Raises:
        error: `value` is not callable; a `TypeError` by default.
    """
    if (value is None and allow_none) or callable(value):
        return value
    raise _fail(name, f"{name}={value!r} ({type(value).__name__})", what + _or_none(allow_none, None),
                owner=owner, error=error)


def instance(name: str, value: Any, types: type | tuple[type, ...], *, what: str,
             allow_none: bool = False, owner: str | None = None,
             error: type[Exception] = TypeError) -> Any:
    """Checks that `value` is an instance of `types` (or None when allowed).

    Args:
        name: The argument's name.
        value: What the user passed.
        types: The accepted class or classes.
        what: What to pass, for the message (e.g. "a tf.distribute.Strategy").
        allow_none: Whether None is valid. Defaults to False.
        owner: The class or function the argument belongs to.
        error: The exception class raised. Defaults to `TypeError`.

    Returns:
        `value`.

    Raises:
        error: `value` has another type; the message names the type received.
    """
    if (value is None and allow_none) or isinstance(value, types):
        return value
    raise _fail(name, type(value).__name__, what + _or_none(allow_none, None),
                owner=owner, error=error)

