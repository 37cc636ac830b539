"""Runs N real local worker processes with TF_CONFIG on free loopback ports.

Every multi-worker test uses this helper. It is a thin wrapper over tfdist-launch's process
group (`tfdist.launch`), so tests exercise the same start/stop/cleanup code as users: ports come
from portpicker and a clash is retried with fresh ports; when one process fails the others are
stopped (they would otherwise wait in collectives until the timeout); and every child's whole
process group is killed on the way out, whatever happened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from tfdist import launch

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every child's PYTHONPATH: the repository, and tests/startup, whose sitecustomize.py keeps
# Keras from importing scikit-learn (about 1.5 s of CPU per process; see that file).
STARTUP_DIR = REPO_ROOT / "tests" / "startup"
PYTHONPATH = os.pathsep.join([str(REPO_ROOT), str(STARTUP_DIR)])
_FAILURE_GRACE_SECS = 15.0
_STOP_GRACE_SECS = 5.0

WorkerResult = launch.ProcessResult  # task_type, task_id, returncode, output; .name is "worker:1"


class WorkersFailed(AssertionError):
    """A worker exited non-zero or the group timed out; carries every worker's output tail."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _report(results: Sequence[WorkerResult], headline: str) -> str:
    parts = [headline]
    for r in results:
        parts.append(f"--- {r.name} (exit {r.returncode}) ---\n{_tail(r.output)}")
    return "\n".join(parts)


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The variables every test process gets on top of this one's environment."""
    merged = {**os.environ, **extra}
    env = dict(extra)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", merged.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join([PYTHONPATH, merged.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child run by hand: the repo importable, TensorFlow quiet,
    no inherited TF_CONFIG (a test passes its own in `extra`)."""
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    return {**env, **extra}


def run_workers(
    argv: Sequence[str],
    num_workers: int,
    *,
    chief: bool = False,
    evaluator: bool = False,
    timeout: float = 300.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    port_retries: int = 3,
    failure_grace: float = _FAILURE_GRACE_SECS,
) -> list[WorkerResult]:
    """Starts the processes, waits for all of them, and returns their results.

    Args:
        argv: The command each process runs, e.g. `[sys.executable, "worker.py", out_dir]`.
            A leading `"python"` is replaced by this interpreter.
        num_workers: Number of `worker` tasks.
        chief: Add a `chief` task. Defaults to `False`.
        evaluator: Add an `evaluator` task (outside the training cluster). Defaults to `False`.
        timeout: Seconds for the whole group. Defaults to 300.
        env: Extra environment variables for every process.
        check: Raise `WorkersFailed` unless every process exits 0. Defaults to `True`.
        port_retries: Attempts in all when a port was taken meanwhile. Defaults to 3.
        failure_grace: Seconds the others get to exit by themselves after one fails, before
            they are stopped (a test expecting every process's own exit status may need more
            than an exit can stall). Defaults to 15.

    Returns:
        One `WorkerResult` per process, chief first, evaluator last.
    """
    argv = [sys.executable if a == "python" else a for a in argv]
    launcher = launch.Launcher(
        argv,
        launch.Topology(num_workers=num_workers, chief=chief, evaluator=evaluator),
        port_retries=max(0, port_retries - 1),
        timeout=timeout,
        grace=_STOP_GRACE_SECS,
        failure_grace=failure_grace,
        env=_child_env(env or {}),
        cwd=str(REPO_ROOT),
        output=launch.Output(capture=True),
    )
    outcome = launcher.run()
    results = list(outcome.results)
    if outcome.timed_out:
        for r in results:
            r.output += f"\n[multiworker] group timed out after {timeout:.0f}s"
    if check and any(r.returncode != 0 for r in results):
        raise WorkersFailed(_report(results, "a worker process failed"))
    return results
