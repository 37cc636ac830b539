"""Runs a planned launch to the end: attempts, fresh-port retries, restarts, the exit status.

A restart relaunches the whole group (fresh ports when they are picked at random): TensorFlow's
collectives cannot take a replacement worker into a running group, and every route resumes from
its checkpoints. A port taken by another program between picking and binding is retried with
fresh ports without counting as a restart. With `min_workers` below the topology's workers the
job is elastic (`tfdist.launch.elastic`): a worker slot that fails more than `max_restarts`
times is dropped and the group restarts with one worker fewer.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence

from tfdist import checks
from tfdist.launch import elastic
from tfdist.launch import layout
from tfdist.launch.errors import LaunchError
from tfdist.launch.group import (GroupOutcome, ProcessGroup, ProcessResult, ProcessSpec, describe_status,
                                 exit_status)
from tfdist.launch.output import Output

TIMEOUT_EXIT_STATUS = 124  # as coreutils `timeout`


@dataclasses.dataclass(frozen=True)
class LaunchResult:
    """How a launch ended.

    Attributes:
        exit_status: 0 when every process succeeded; else the first failing process's status
            (128 + N for signal N), 124 on a timeout, or 128 + N when the launcher was asked to
            stop by signal N.
        results: This host's processes in the last attempt, with all attempts' captured output.
        restarts: Restarts used.
        timed_out: The timeout stopped the run.
        signal: The signal that stopped the run, or None.
        resizes: The resizes of an elastic job, in order.
        num_workers: Workers in the last attempt.
    """

    exit_status: int
    results: tuple[ProcessResult, ...]
    restarts: int = 0
    timed_out: bool = False
    signal: int | None = None
    resizes: tuple[elastic.Resize, ...] = ()
    num_workers: int | None = None


class Launcher:
    """Launches `command` once per task of `topology` on this host, restarting on failure.

    Args:
        command: The program and arguments every process runs.
        topology: The cluster's layout (see `layout.Topology`).
        max_restarts: Relaunch the group this many times after a failure. Defaults to 0. In
            an elastic job, the failures each worker slot may have before it is dropped.
        min_workers: Make the job elastic: start `topology.num_workers` workers and go down to
            this many, one slot at a time, when slots fail for good. Needs launcher-picked
            ports or a `port_base`, one host and no parameter servers. Defaults to None
            (`topology.num_workers`: a fixed size).
        port_retries: Fresh-port retries after a port clash (random ports only). Defaults to 3.
        timeout: Seconds for the whole launch, restarts included; None waits forever.
        grace: Seconds between SIGTERM and SIGKILL when stopping. Defaults to 10.
        failure_grace: Seconds the others get to exit on their own after one fails.
            Defaults to `grace`.
        env: Variables added to this process's environment for every child.
        cwd: Working directory of the children. Defaults to this process's.
        output: Where output goes. Defaults to nowhere (output is only captured if asked).

    Raises:
        LaunchError: An argument is invalid (as ``tfdist-launch`` rejects the same values), or
            the topology's ports or addresses do not work out.

    Example:

    ```python
    launcher = Launcher(["python", "train.py"], layout.Topology(num_workers=2),
                        output=Output(stream=sys.stdout, messages=sys.stderr))
    sys.exit(launcher.run().exit_status)
    ```
    """

    def __init__(self, command: Sequence[str], topology: layout.Topology, *, max_restarts: int = 0,
                 port_retries: int = 3, timeout: float | None = None, grace: float = 10.0,
                 failure_grace: float | None = None, env: Mapping[str, str] | None = None,
                 cwd: str | None = None, output: Output | None = None,
                 min_workers: int | None = None) -> None:
        # The checks the command line makes with argparse, for callers from Python.
        if (isinstance(command, (str, bytes)) or not command
                or not all(isinstance(arg, (str, os.PathLike)) for arg in command)):
            raise LaunchError(f"Invalid value for argument `command`. Received: command={command!r}. "
                              "Pass the program and its arguments as a list of strings, e.g. "
                              "['python', 'train.py'].")
        checks.instance("topology", topology, layout.Topology, what="a tfdist.launch.Topology",
                        error=LaunchError)
        checks.non_negative_int("max_restarts", max_restarts, error=LaunchError)
        checks.non_negative_int("port_retries", port_retries, error=LaunchError)
        checks.seconds("timeout", timeout, allow_zero=True, allow_none=True, none_means="no limit",
                       error=LaunchError)
        checks.seconds("grace", grace, allow_zero=True, error=LaunchError)
        checks.seconds("failure_grace", failure_grace, allow_zero=True, allow_none=True,
                       none_means="`grace`", error=LaunchError)
        self.command = tuple(os.fspath(arg) for arg in command)
        self.topology = topology
        self.max_restarts = max_restarts
        self.port_retries = port_retries
        self.timeout = timeout
        self.grace = grace
        self.failure_grace = grace if failure_grace is None else failure_grace
        self.env = dict(env or {})
        self.cwd = cwd
        self.output = output or Output()
        self.workers = _worker_range(topology, min_workers)
        self.slots = elastic.Slots(self.workers, max_restarts)
        self.plan = layout.make_plan(topology)  # validated now: bad input fails before anything runs
        self._signals: list[int] = []
        self._group: ProcessGroup | None = None

    def interrupt(self, signum: int) -> None:
        """Stops the launch as if by `signum` (safe to call from a signal handler)."""
        self._signals.append(signum)
        group = self._group
        if group is not None:
            group.interrupt(signum)

    def specs(self, plan: layout.Plan, restart: int = 0) -> list[ProcessSpec]:
        """This host's processes for one attempt of `plan`."""
        specs = []
        for task in plan.local_tasks:
            env = layout.child_env(os.environ, self.env, task, restart)
            if task.task_type == "worker":  # stable across resizes; task ids are renumbered
                slot = self.slots.slot_of(task.task_type, task.task_id) if self.workers.elastic else task.task_id
                env["TFDIST_SLOT"] = str(slot)
            specs.append(ProcessSpec(task.task_type, task.task_id, self.command, env, self.cwd))
        return specs

    def run(self) -> LaunchResult:
        """Runs until success, a failure with no restarts left, a timeout or a signal."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        plan, restarts, retries, header = self.plan, 0, 0, None
        results: tuple[ProcessResult, ...] = ()
        while True:
            outcome = self._attempt(plan, restarts, header, deadline)
            if outcome is None:  # a signal arrived between attempts
                return self._finish(results, restarts, signal=self._signals[0])
            results = outcome.results
            if outcome.signal is not None:
                return self._finish(results, restarts, signal=outcome.signal)
            if outcome.timed_out or (deadline is not None and time.monotonic() >= deadline):
                self.output.message(f"timed out after {self.timeout:g}s; stopped every process")
                return self._finish(results, restarts, timed_out=True)
            if outcome.succeeded:
                return self._finish(results, restarts)
            failed = outcome.first_failure
            # Not succeeded, not timed out, no signal (all returned above): a process failed.
            assert failed is not None
            if outcome.port_clash and self.topology.picks_ports and retries < self.port_retries:
                retries += 1
                header = f"--- tfdist-launch: port retry {retries} ---"
                self.output.message(f"a port was taken meanwhile; retrying with fresh ports "
                                    f"(retry {retries} of {self.port_retries})")
            elif self.workers.elastic:
                decision = self.slots.on_failure(failed.task_type, failed.task_id,
                                                 describe_status(failed.returncode))
                self.output.message(decision.message)
                if decision.action == "give_up":
                    return self._finish(results, restarts, failed=failed)
                restarts += 1
                header = f"--- tfdist-launch: restart {restarts} ({decision.action}) ---"
                if decision.resize is not None:
                    plan = layout.make_plan(self._topology())
                    continue
            elif restarts < self.max_restarts:
                restarts += 1
                header = f"--- tfdist-launch: restart {restarts} ---"
                self.output.message(f"{failed.name} failed ({describe_status(failed.returncode)}); "
                                    f"restarting the group (restart {restarts} of {self.max_restarts})")
            else:
                return self._finish(results, restarts, failed=failed)
            if self.topology.picks_ports:
                plan = layout.make_plan(self._topology())

    def _topology(self) -> layout.Topology:
        """The topology at the current size (smaller than the one given after resizes)."""
        if self.slots.size == self.topology.num_workers:
            return self.topology
        return dataclasses.replace(self.topology, num_workers=self.slots.size)

    def _attempt(self, plan: layout.Plan, restart: int, header: str | None,
                 deadline: float | None) -> GroupOutcome | None:
        """Runs one attempt; None if a signal came first, so nothing was started."""
        group = ProcessGroup(self.specs(plan, restart), self.output, header=header,
                             primary=self._primary(plan), restartable=self._restartable(plan))
        self._group = group
        try:
            if self._signals:
                return None
            return group.run(deadline=deadline, failure_grace=self.failure_grace, grace=self.grace)
        finally:
            self._group = None

    def _primary(self, plan: layout.Plan) -> list[int] | None:
        """The local processes whose success completes the job; None means all of them.

        With parameter servers that is the chief and the evaluator: workers and parameter
        servers serve until they are stopped.
        """
        if not any(task.task_type == "ps" for task in plan.tasks):
            return None
        primary = [i for i, task in enumerate(plan.local_tasks)
                   if task.task_type in ("chief", "evaluator")]
        return primary or None  # a host with only servers runs until stopped

    def _restartable(self, plan: layout.Plan) -> list[int]:
        """With parameter servers, the workers: one that dies is restarted alone (the chief
        reschedules its functions on the others meanwhile)."""
        if not any(task.task_type == "ps" for task in plan.tasks):
            return []
        return [i for i, task in enumerate(plan.local_tasks) if task.task_type == "worker"]

    def _finish(self, results: tuple[ProcessResult, ...], restarts: int, *,
                failed: ProcessResult | None = None, timed_out: bool = False,
                signal: int | None = None) -> LaunchResult:
        results = tuple(dataclasses.replace(r, output=self.output.captured(r.name)) for r in results)
        if signal is not None:
            status = 128 + signal
        elif timed_out:
            status = TIMEOUT_EXIT_STATUS
        elif failed is not None:
            status = exit_status(failed.returncode)
        else:
            status = 0
        return LaunchResult(status, results, restarts, timed_out, signal,
                            tuple(self.slots.resizes), self.slots.size)


def _worker_range(topology: layout.Topology, min_workers: int | None) -> elastic.WorkerRange:
    """The job's worker range; an elastic one only where a smaller group can be planned."""
    if min_workers is None:
        return elastic.WorkerRange(topology.num_workers, topology.num_workers)
    checks.positive_int("min_workers", min_workers, error=LaunchError)
    workers = elastic.WorkerRange(min_workers, topology.num_workers)
    if workers.elastic:
        if topology.num_ps:
            raise LaunchError("elastic worker counts (--workers MIN:MAX) are for all-reduce jobs; a "
                              "parameter-server job already carries on without a failed worker. "
                              "Pass a fixed --workers N with --ps.")
        if topology.hosts is not None:
            raise LaunchError("elastic worker counts (--workers MIN:MAX) need one host: launchers on "
                              "several hosts do not agree on a new size. Resize through the "
                              "scheduler instead (docs/elastic.md).")
        if topology.ports is not None:
            raise LaunchError("elastic worker counts (--workers MIN:MAX) need ports the launcher "
                              "can re-plan for a smaller group: drop --ports (or use --port-base).")
    return workers
