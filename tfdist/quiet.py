"""Quiet binaries: TensorFlow's C++ start-up noise kept out of tfdist's commands' output.

Every process that imports TensorFlow prints, before any of its own output, lines such as
"Could not find cuda drivers on your machine", "failed call to cuInit", "This TensorFlow binary
is optimized to use available CPU instructions" and absl's "All log messages before
absl::InitializeLog() is called are written to STDERR". Some come from C++ static initialisers
that ignore `TF_CPP_MIN_LOG_LEVEL`, so a log level alone cannot remove them.

`tf_log_level_env` and `importing_tensorflow` change the process's environment and its stderr
file descriptor: only binaries' entry points call them (`tfdist-train`, `tfdist-bench`), never
library code. No TensorFlow import here.

- `tf_log_level_env(verbose)`: the `TF_CPP_MIN_LOG_LEVEL` a binary sets before TensorFlow loads
  ("2": errors only; "0" when verbose), unless the user set one: theirs is kept as it is.
- `importing_tensorflow(quiet)`: imports TensorFlow and lists its devices (where the noise is
  printed) with file descriptor 2 sent to a temporary file, then writes back every line that is
  not known start-up noise.
- `child_log_settings(verbose, ...)` and `StartupNoiseFilter`: the same for a launcher's
  children (`tfdist-launch`, `tfdist.launch.run`): their environment, and a line-by-line test
  of their output.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Mapping

LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"  # C++ errors still show; info and warnings do not
VERBOSE_LEVEL = "0"

_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_CUDA_DRIVER = re.compile(r"\] Could not find cuda drivers on your machine, GPU will not be used\.")
_NOISE = (
    re.compile(re.escape(_ABSL_PREINIT)),
    _NO_CUDA_DRIVER,
    re.compile(r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"),
    re.compile(r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate "
               r"compiler flags\.$"),
    re.compile(r"\] oneDNN custom operations are on\."),
)
# Noise only on a machine without a CUDA driver (said just before): with a driver it is an error.
_NOISE_WITHOUT_DRIVER = (re.compile(r"\] failed call to cuInit: "),)


class StartupNoiseFilter:
    """Tells TensorFlow's start-up noise from real output, one line at a time (one per process).

    A failed `cuInit` counts as noise only after this process said it has no CUDA driver:
    on a machine with a driver it is a real error and is kept.
    """

    def __init__(self) -> None:
        self._no_driver = False

    def is_noise(self, line: str) -> bool:
        """True for a line of known start-up noise (also records that no driver was found)."""
        if _NO_CUDA_DRIVER.search(line):
            self._no_driver = True
        if any(pattern.search(line) for pattern in _NOISE):
            return True
        return self._no_driver and any(p.search(line) for p in _NOISE_WITHOUT_DRIVER)


def child_log_settings(verbose: bool, *environs: Mapping[str, str]) -> tuple[dict[str, str], bool]:
    """What a launcher gives its children: the log level to add, and whether to filter noise.

    Args:
        verbose: Bring TensorFlow's C++ logging back ("0").
        *environs: The environments the children inherit (e.g. `os.environ` and the launch's
            own variables); a `TF_CPP_MIN_LOG_LEVEL` set in any of them is respected as it is.

    Returns:
        The variables to add (none when the user set the level), and True when start-up noise
        should also be filtered from the children's output (quiet, at tfdist's level).
    """
    if any(LOG_LEVEL_VAR in environ for environ in environs):
        return {}, False
    return {LOG_LEVEL_VAR: VERBOSE_LEVEL if verbose else QUIET_LEVEL}, not verbose


def tf_log_level_env(verbose: bool) -> bool:
    """Sets this process's `TF_CPP_MIN_LOG_LEVEL` unless the user set it; True when quiet.

    Args:
        verbose: Bring TensorFlow's C++ logging back ("0"), e.g. for `--verbosity=1`.

    Returns:
        True when start-up noise should also be filtered: quiet, and the level is tfdist's
        choice. A level the user set is respected as it is, noise included.
    """
    added, quiet = child_log_settings(verbose, os.environ)
    os.environ.update(added)
    return quiet


@contextlib.contextmanager
def _stderr_without_noise() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file, then writes back the lines that are not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            noise = StartupNoiseFilter()
            kept = [line for line in text.splitlines() if not noise.is_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()


def importing_tensorflow(quiet: bool) -> None:
    """Imports TensorFlow and finds its devices, dropping the start-up noise when `quiet`.

    Listing physical devices does not start TensorFlow's runtime, so logical devices and
    collectives can still be configured afterwards.
    """
    context = _stderr_without_noise() if quiet else contextlib.nullcontext()
    with context:
        import tensorflow as tf

        tf.config.list_physical_devices()
