"""Running an absl binary's `main` from Python (a notebook cell, Colab, a test) without sys.argv.

`absl.app.run` parses `sys.argv`, which inside a Jupyter/Colab kernel is the kernel's own
command line (`-f /path/kernel.json`), so absl raises `UnrecognizedFlagError`
(googlecolab/colabtools#1323), and it defines flags on the process-global `FLAGS`, so a second
call (or a second binary in the same kernel) hits `DuplicateFlagError`. `call` instead defines
the binary's flags on a fresh `absl.flags.FlagValues` each time, parses only the arguments it is
given, and returns the exit status instead of exiting. `tfdist.train.run_from_notebook` and
`tfdist.predict_main.run_from_notebook` use it. No TensorFlow import.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import flags

USAGE_ERROR = 2


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """Keyword flags as command-line arguments.

    `name=value` becomes `--name=value`; `True`/`False` become `--name`/`--noname`; a list or
    tuple is joined with commas; `None` leaves the flag at its default.

    Args:
        values: Flag names (without dashes) and their values.

    Returns:
        The arguments, in the order given.
    """
    argv = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, (list, tuple)):
            argv.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            argv.append(f"--{name}={value}")
    return argv


def call(prog: str, define_flags: Callable[[flags.FlagValues], None],
         main: Callable[[Sequence[str], flags.FlagValues], int], argv: Sequence[str]) -> int:
    """Defines `prog`'s flags on a fresh `FlagValues`, parses `argv` (never `sys.argv`), runs `main`.

    Args:
        prog: The binary's name, for messages (`tfdist-train`).
        define_flags: Defines the binary's flags on the `FlagValues` it is given.
        main: The binary's main, called with the left-over arguments and the parsed flags.
        argv: The arguments, without the program name (`["--route=fit", ...]`).

    Returns:
        `main`'s exit status; 2 (with one `prog: error:` line on stderr) when `argv` does not
        parse, 0 after printing the help for `--help`.
    """
    if isinstance(argv, str):
        raise TypeError(f"Invalid value for argument `argv`. Received: argv={argv!r} (a string). "
                        f"Pass a list of arguments, e.g. ['--model_dir=/tmp/run'].")
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    # The binaries' verbosity is absl's logging flag on the global FLAGS; here it is our own.
    flags.DEFINE_integer("verbosity", -1, "Logging verbosity (1: keep TensorFlow's C++ start-up "
                         "noise and info logs).", short_name="v", flag_values=flag_values)
    argv = [str(a) for a in argv]
    if "--help" in argv or "-h" in argv:
        print(f"{prog} flags:\n{flag_values.get_help()}")
        return 0
    try:
        remaining = flag_values([prog, *argv])
    except flags.Error as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    return main(remaining, flag_values)
