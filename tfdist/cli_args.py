"""An argparse parser for tfdist's commands: bad input becomes one line, not usage text and an exit.

`tfdist-launch` and `tfdist-bench` catch `UsageError` and print `PROG: error: <message>` on
stderr with exit status 2; `--help` raises `ParserExit` carrying the status to return. Kept free
of TensorFlow imports: commands check their input before TensorFlow loads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UsageError(Exception):
    """argparse's complaint (or the command's own), kept to one line."""


class ParserExit(Exception):
    """argparse wanted to exit (`--help`) with this code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class OneLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message, file=sys.stderr, end="")
        raise ParserExit(status)


def int_at_least(minimum: int, example: int | None = None) -> Callable[[str], int]:
    """An argparse `type` accepting integers >= `minimum`; the error shows `example` if given."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            hint = f" (e.g. {example})" if example is not None else ""
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}; received {text!r}{hint}")
        return value

    return parse


def seconds(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse `type` accepting a number of seconds, > 0 (or >= 0 with `allow_zero`)."""
    bound = ">= 0" if allow_zero else "> 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (value >= 0 if allow_zero else value > 0):  # also rejects nan
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds {bound}; received {text!r}")
        return value

    return parse
