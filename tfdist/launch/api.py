"""`run()`: launch N worker processes from Python (a notebook cell, a script, a test)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tfdist import quiet
from tfdist.launch import layout
from tfdist.launch.errors import LaunchError
from tfdist.launch.group import ProcessResult
from tfdist.launch.launcher import Launcher
from tfdist.launch.output import Output

# Runs "module:function" in the child: imports it, calls it with the string arguments, and exits
# with its return value if that is an int (0 otherwise).
_CALL_FUNCTION = """\
import importlib, sys
module, _, name = sys.argv[1].partition(":")
target = importlib.import_module(module)
for part in name.split("."):
    target = getattr(target, part)
result = target(*sys.argv[2:])
sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
"""
_FUNCTION_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def run(
    target: str | Callable[..., Any] | Sequence[str],
    num_workers: int = 2,
    *,
    chief: bool = False,
    evaluator: bool = False,
    num_ps: int = 0,
    args: Sequence[str] = (),
    timeout: float | None = None,
    max_restarts: int = 0,
    env: Mapping[str, str] | None = None,
    stream: bool = True,
    log_dir: str | os.PathLike | None = None,
    grace: float = 10.0,
    verbose: bool = False,
) -> list[ProcessResult]:
    """Runs `target` in one process per task, each with its TF_CONFIG, and waits for all of them.

    The processes use this Python interpreter and loopback ports. When one fails the others are
    stopped; with `max_restarts` the whole group is relaunched (training resumes from its
    checkpoints). Ctrl-C (KeyboardInterrupt) stops every process before it propagates.

    Args:
        target: A script path (``"train.py"``), an importable ``"module:function"`` string, an
            importable function object (not one defined in the notebook itself: its module must
            be importable by the children), or a full command as a list of strings.
        num_workers: Worker processes. Defaults to 2.
        chief: Add a chief process. Defaults to False.
        evaluator: Add an evaluator process. Defaults to False.
        num_ps: Parameter-server processes (needs `chief`); they serve until the chief (and
            evaluator) have finished, then are stopped. Defaults to 0.
        args: String arguments for the script or function. Defaults to none.
        timeout: Seconds for the whole run; None waits as long as it takes.
        max_restarts: Relaunch the group up to this many times after a failure. Defaults to 0.
        env: Extra environment variables for every process.
        stream: Print output live with a ``[worker:1]`` prefix (and launcher messages to
            stderr). Defaults to True.
        log_dir: Also write ``<task>-<id>.log`` files here. Defaults to None.
        grace: Seconds between SIGTERM and SIGKILL when stopping. Defaults to 10.
        verbose: Keep TensorFlow's C++ start-up noise and info logs in the children's output.
            Defaults to False (a `TF_CPP_MIN_LOG_LEVEL` you set is kept either way).

    Returns:
        One `ProcessResult` per process (chief first, evaluator last) with its return code
        (negative for a signal, as `subprocess`) and all of its captured output.

    Raises:
        LaunchError: The target cannot be found or imported, or an argument is invalid.

    Example:

    ```python
    results = tfdist.launch.run("train:main", num_workers=2, args=["--steps", "100"])
    assert all(r.returncode == 0 for r in results), results[0].output[-2000:]
    ```
    """
    command, extra_env = _command(target, args)
    extra_env.update(env or {})
    log_env, drop_noise = quiet.child_log_settings(verbose, os.environ, extra_env)
    output = Output(stream=sys.stdout if stream else None, capture=True, log_dir=log_dir,
                    messages=sys.stderr if stream else None, drop_startup_noise=drop_noise)
    topology = layout.Topology(num_workers=num_workers, chief=chief, evaluator=evaluator,
                               num_ps=num_ps)
    launcher = Launcher(command, topology, max_restarts=max_restarts, timeout=timeout, grace=grace,
                        env={**log_env, **extra_env}, output=output)
    return list(launcher.run().results)


def _command(target: Any, args: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The argv for `target`, and environment variables it needs."""
    args = [str(a) for a in args]
    if isinstance(target, (list, tuple)):
        if not target:
            raise LaunchError("run() got an empty command.")
        return [str(a) for a in target] + args, {}
    if callable(target):
        return _function_command(target, args)
    if not isinstance(target, (str, os.PathLike)):
        raise LaunchError(f"Invalid value for argument `target`. Received: {type(target).__name__}. "
                          'Pass a script path, "module:function", a function or a command list.')
    text = os.fspath(target)
    if os.path.isfile(text) or text.endswith(".py"):
        if not os.path.isfile(text):
            raise LaunchError(f"script not found: {text!r}")
        return [sys.executable, text, *args], {}
    if _FUNCTION_REF.fullmatch(text):
        _check_importable(text.partition(":")[0])
        return [sys.executable, "-c", _CALL_FUNCTION, text, *args], _inherited_path()
    raise LaunchError(f'target {text!r} is neither an existing script nor "module:function".')


def _function_command(fn: Callable[..., Any], args: list[str]) -> tuple[list[str], dict[str, str]]:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__") or "<" in qualname:
        raise LaunchError(
            f"run() starts new processes, which cannot import {qualname or fn!r} defined in "
            f"{module or 'no module'}{' (a local function)' if '<' in qualname else ''}. Put it in a "
            'module file (in a notebook: %%writefile train.py) and pass "train:main" or the '
            "imported function.")
    return [sys.executable, "-c", _CALL_FUNCTION, f"{module}:{qualname}", *args], _inherited_path()


def _check_importable(module: str) -> None:
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise LaunchError(f"cannot import module {module!r}; check the name and that its directory "
                          "is the current one or on sys.path.")


def _inherited_path() -> dict[str, str]:
    """PYTHONPATH so the children import what this process imports (e.g. a notebook's modules)."""
    entries = [os.path.abspath(p or os.curdir) for p in sys.path]
    entries += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(p for p in entries if os.path.isdir(p)))}
