"""The launcher's error for bad input."""

from __future__ import annotations


class LaunchError(ValueError):
    """Bad launcher input (flags, layout, command, ports); the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
