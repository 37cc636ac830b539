"""Runs N real local worker processes with TF_CONFIG on free loopback ports.

Every multi-worker test uses this helper. It holds on a loaded 2-core machine: ports come from
portpicker and a clash is retried with fresh ports; timeouts are generous; when one process fails
the others are stopped (they would otherwise wait in collectives until the timeout); and every
child's whole process group is killed on the way out, whatever happened.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import portpicker

from tfdist import cluster

REPO_ROOT = Path(__file__).resolve().parent.parent
_FAILURE_GRACE_SECS = 15.0
_PORT_CLASH_MARKERS = ("Address already in use", "Failed to add port", "failed to bind")


@dataclasses.dataclass
class WorkerResult:
    """One finished process: its role, exit code and output."""

    task_type: str
    task_id: int
    returncode: int
    output: str

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_id}"


class WorkersFailed(AssertionError):
    """A worker exited non-zero or the group timed out; carries every worker's output tail."""


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _report(results: Sequence[WorkerResult], headline: str) -> str:
    parts = [headline]
    for r in results:
        parts.append(f"--- {r.name} (exit {r.returncode}) ---\n{_tail(r.output)}")
    return "\n".join(parts)


def _stop(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """TERM every child's process group, then KILL whatever is left after `grace` seconds."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also reaps grandchildren left in the group
        except ProcessLookupError:
            pass
        p.wait()


def _roles(num_workers: int, chief: bool, evaluator: bool) -> list[tuple[str, int]]:
    roles = [("chief", 0)] if chief else []
    roles += [("worker", i) for i in range(num_workers)]
    if evaluator:
        roles.append(("evaluator", 0))
    return roles


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
        port_retries: Fresh-port attempts when a port was taken meanwhile. Defaults to 3.

    Returns:
        One `WorkerResult` per process, chief first, evaluator last.
    """
    argv = [sys.executable if a == "python" else a for a in argv]
    for attempt in range(port_retries):
        results = _run_once(argv, num_workers, chief, evaluator, timeout, env or {})
        clash = any(m in r.output for r in results for m in _PORT_CLASH_MARKERS)
        if not (clash and any(r.returncode for r in results)) or attempt == port_retries - 1:
            break
    if check and any(r.returncode != 0 for r in results):
        raise WorkersFailed(_report(results, "a worker process failed"))
    return results


def _run_once(argv, num_workers, chief, evaluator, timeout, extra_env) -> list[WorkerResult]:
    roles = _roles(num_workers, chief, evaluator)
    training = [r for r in roles if r[0] != "evaluator"]
    ports = [portpicker.pick_unused_port() for _ in training]
    addresses = {role: f"localhost:{port}" for role, port in zip(training, ports)}
    workers = [addresses[r] for r in training if r[0] == "worker"]
    chief_address = addresses.get(("chief", 0))

    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for task_type, task_id in roles:
            tf_config = cluster.make_tf_config(
                workers=workers, chief=chief_address, task_type=task_type, task_id=task_id
            )
            env = dict(os.environ)
            env.update(extra_env)
            env["TF_CONFIG"] = tf_config
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO_ROOT), env.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep)
            log = tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, killed as a whole
                )
            )
        deadline = time.monotonic() + timeout
        timed_out = False
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs):
                # One failed: the rest would hang in collectives. Give them a moment to finish
                # on their own (a preempted group exits together), then stop them.
                deadline = min(deadline, time.monotonic() + _FAILURE_GRACE_SECS)
            if time.monotonic() > deadline:
                timed_out = not any(p.poll() not in (None, 0) for p in procs)
                break
            time.sleep(0.2)
    finally:
        _stop(procs)
    results = []
    for (task_type, task_id), p, log in zip(roles, procs, logs):
        log.seek(0)
        output = log.read()
        log.close()
        if timed_out:
            output += f"\n[multiworker] group timed out after {timeout:.0f}s"
        results.append(WorkerResult(task_type, task_id, p.returncode, output))
    return results
