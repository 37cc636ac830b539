"""Runs one group of processes: start, stream output, wait, stop, reap. Knows nothing of TF.

Each child runs in its own session, so a stop reaches its whole process group (grandchildren
included) and a Ctrl-C in the launcher's terminal reaches only the launcher, which decides what
to forward. Stopping is TERM, a grace period, then KILL for every group, whatever happened.

Exits are observed with ``waitid(WNOWAIT)``: the exited child stays a zombie until the group has
been killed, so its pid -- which is also its process-group id -- cannot be recycled under us and
``killpg`` never hits an unrelated process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from tfdist.launch.errors import LaunchError
from tfdist.launch.output import Output, Sink

_JOIN_SECS = 5.0  # for reader threads after the group is dead; an escaped daemon may hold a pipe


def exit_status(returncode: int) -> int:
    """Converts a Popen return code (-N for signal N) into a shell exit status (128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def describe_status(returncode: int) -> str:
    """E.g. "exit code 3" or "killed by SIGKILL, exit status 137"."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}, exit status {exit_status(returncode)}"


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process to start: its role (a label here), command, full environment and directory."""

    task_type: str
    task_id: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None = None

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_id}"


@dataclasses.dataclass
class ProcessResult:
    """One finished process.

    Attributes:
        task_type: "chief", "worker", "ps" or "evaluator".
        task_id: Index within its job.
        returncode: As `subprocess.Popen` reports it: the exit code, or -N if signal N ended it.
        output: Captured stdout and stderr (every attempt, with a header line per restart);
            empty when output was not captured.
        stopped: True if the launcher signalled it (another process failed, a timeout, Ctrl-C,
            or the job was done and this was a parameter server) before it exited.
    """

    task_type: str
    task_id: int
    returncode: int
    output: str = ""
    stopped: bool = False

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_id}"


@dataclasses.dataclass(frozen=True)
class GroupOutcome:
    """How a group ended.

    Attributes:
        results: One result per process, in start order (output not filled in here).
        first_failure: The first process that exited non-zero on its own, or None.
        timed_out: The deadline passed while processes were still running.
        signal: The signal the launcher was asked to forward (Ctrl-C, SIGTERM), or None.
        port_clash: A process printed that its port was taken.
    """

    results: tuple[ProcessResult, ...]
    first_failure: ProcessResult | None
    timed_out: bool
    signal: int | None
    port_clash: bool

    @property
    def succeeded(self) -> bool:
        return self.first_failure is None and not self.timed_out and self.signal is None


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes the kernel SIGKILL the child if the launcher dies, on Linux.

    Covers what no handler can: the launcher itself being SIGKILLed (OOM killer, a harness).
    The call is bound before forking so the child runs no Python beyond one foreign call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig, sigkill, getppid, kill, getpid = 1, int(signal.SIGKILL), os.getppid, os.kill, os.getpid

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill)
        if getppid() != parent:  # the launcher died before prctl took effect
            kill(getpid(), sigkill)

    return preexec


class ProcessGroup:
    """Starts processes, streams their output, and waits until all have exited and been reaped.

    When one process fails, the others get `failure_grace` seconds to exit on their own (a
    preempted job exits 143 on every worker together), then TERM, `grace` seconds, KILL. A
    signal passed to `interrupt` is forwarded as TERM at once; a second one KILLs at once.

    Args:
        specs: The processes to start, in order.
        output: Where their output goes.
        primary: Indices of the processes whose success completes the job; the others
            (parameter servers, which serve forever) are then stopped. Defaults to all.
        header: A line recorded (not streamed) at the top of each process's captured output
            and log for this attempt, e.g. a restart marker.
        restartable: Indices of processes restarted alone when they fail, up to
            `restart_limit` times each, while the others carry on (the workers of a
            parameter-server job: the chief reschedules their functions). Defaults to none.
        restart_limit: Restarts allowed per restartable process. Defaults to 3.
    """

    def __init__(self, specs: Sequence[ProcessSpec], output: Output, *,
                 primary: Collection[int] | None = None, header: str | None = None,
                 restartable: Collection[int] = (), restart_limit: int = 3) -> None:
        self._specs = list(specs)
        self._restartable = set(restartable)
        self._restart_limit = restart_limit
        self._restarts: dict[int, int] = {}
        self._output = output
        self._primary = set(range(len(self._specs)) if primary is None else primary)
        self._header = header
        self._events: queue.SimpleQueue = queue.SimpleQueue()  # reentrant: safe from signal handlers
        self._procs: list[subprocess.Popen] = []
        self._sinks: list[Sink] = []
        self._threads: list[threading.Thread] = []
        self._exited: dict[int, int] = {}
        self._signalled: set[int] = set()
        self._termed_at: float | None = None
        self._signal: int | None = None

    def interrupt(self, signum: int) -> None:
        """Asks the group to stop (from a signal handler or another thread)."""
        self._events.put(("signal", signum))

    def run(self, *, deadline: float | None = None, failure_grace: float = 5.0,
            grace: float = 10.0) -> GroupOutcome:
        """Starts every process and returns once all of them are gone.

        Args:
            deadline: A `time.monotonic()` value after which everything is stopped, or None.
            failure_grace: Seconds the others get to exit by themselves after a failure.
            grace: Seconds between TERM and KILL.

        Raises:
            LaunchError: A command could not be started (the others are stopped first).
        """
        try:
            self._start_all()
            first_failure, timed_out = self._wait(deadline, failure_grace, grace)
        finally:
            self._stop(grace)
        results = tuple(
            ProcessResult(spec.task_type, spec.task_id, proc.returncode, stopped=i in self._signalled)
            for i, (spec, proc) in enumerate(zip(self._specs, self._procs)))
        return GroupOutcome(
            results=results,
            first_failure=None if first_failure is None else results[first_failure],
            timed_out=timed_out,
            signal=self._signal,
            port_clash=any(sink.port_clash for sink in self._sinks),
        )

    # --- start -----------------------------------------------------------------------------------

    def _start_all(self) -> None:
        for i, spec in enumerate(self._specs):
            sink = self._output.open(spec.name, self._header)
            try:
                proc = self._popen(spec)
            except LaunchError:
                sink.close()
                raise
            self._procs.append(proc)
            self._sinks.append(sink)
            self._watch(i)

    def _popen(self, spec: ProcessSpec) -> subprocess.Popen:
        try:
            return subprocess.Popen(
                spec.argv, env=dict(spec.env), cwd=spec.cwd, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_parent_death_signal())
        except OSError as err:
            raise LaunchError(f"cannot run {spec.argv[0]!r}: {err.strerror or err}") from None

    def _watch(self, i: int) -> None:
        for target in (self._read, self._await_exit):
            thread = threading.Thread(target=target, args=(i,), daemon=True,
                                      name=f"tfdist-launch-{target.__name__}-{self._specs[i].name}")
            thread.start()
            self._threads.append(thread)

    def _restart_alone(self, i: int, code: int) -> bool:
        """Restarts failed process `i` by itself if it may be; True if it was restarted."""
        done = self._restarts.get(i, 0)
        if i not in self._restartable or done >= self._restart_limit:
            return False
        old = self._procs[i]
        _killpg(old.pid, signal.SIGKILL)  # what it left behind in its group
        old.wait()  # reap the zombie _await_exit left
        name = self._specs[i].name
        self._output.message(f"{name} failed ({describe_status(code)}); restarting it alone "
                             f"(restart {done + 1} of {self._restart_limit}); the others carry on")
        try:
            self._procs[i] = self._popen(self._specs[i])
        except LaunchError as err:
            self._output.message(f"{name} could not be restarted: {err}")
            return False
        self._restarts[i] = done + 1
        del self._exited[i]
        self._watch(i)
        return True

    def _read(self, i: int) -> None:
        stdout = self._procs[i].stdout
        assert stdout is not None  # started with stdout=PIPE
        with stdout as pipe:
            for raw in iter(pipe.readline, b""):
                self._sinks[i].write(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _await_exit(self, i: int) -> None:
        # WNOWAIT: see the exit but leave the zombie, so the pid (= group id) stays ours.
        try:
            info = os.waitid(os.P_PID, self._procs[i].pid, os.WEXITED | os.WNOWAIT)
            assert info is not None  # None only with WNOHANG
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        except ChildProcessError:  # already reaped by _stop after a KILL
            code = self._procs[i].returncode
        self._events.put(("exit", i, code))

    # --- wait ------------------------------------------------------------------------------------

    def _wait(self, deadline: float | None, failure_grace: float,
              grace: float) -> tuple[int | None, bool]:
        """Handles exits and signals until all exit or it is time to stop them.

        Returns:
            The index of the first process that failed on its own (or None), and whether the
            deadline passed with nothing failed or signalled.
        """
        first_failure: int | None = None
        stop_at = deadline
        while len(self._exited) < len(self._procs):
            event = self._next_event(stop_at)
            if event is None:  # stop_at reached
                return first_failure, first_failure is None and self._signal is None
            if event[0] == "signal":
                if self._on_signal(event[1]):
                    stop_at = _earliest(stop_at, time.monotonic() + grace)
                continue
            _, i, code = event
            self._exited[i] = code
            if self._signal is not None or i in self._signalled:
                continue
            if first_failure is None and code != 0:
                if self._restart_alone(i, code):
                    continue
                first_failure = i
                stop_at = _earliest(stop_at, time.monotonic() + failure_grace)
                if len(self._exited) < len(self._procs) and not self._primary <= self._exited.keys():
                    self._output.message(f"{self._specs[i].name} failed ({describe_status(code)}); "
                                         f"stopping the others unless they exit within {failure_grace:g}s")
            if self._primary <= self._exited.keys():
                # Done (or failed): parameter servers, which serve until stopped, are stopped
                # below at once rather than after the failure grace.
                break
        return first_failure, False

    def _on_signal(self, signum: int) -> bool:
        """Forwards TERM on the first signal and KILL on the next; True on the first."""
        if self._signal is None:
            self._signal = signum
            self._output.message(f"got {signal.Signals(signum).name}; sending SIGTERM to every "
                                 "process (signal again to kill them at once)")
            self._terminate()
            return True
        self._output.message(f"got {signal.Signals(signum).name} again; killing every process")
        self._kill_all()
        return False

    def _next_event(self, until: float | None) -> tuple | None:
        while True:
            timeout = None if until is None else until - time.monotonic()
            if timeout is not None and timeout <= 0:
                return None
            try:
                return self._events.get(timeout=timeout)
            except queue.Empty:
                continue

    # --- stop ------------------------------------------------------------------------------------

    def _stop(self, grace: float) -> None:
        """TERM whatever runs, wait up to `grace`, KILL every process group, reap, drain output."""
        interrupted = False
        try:
            if len(self._exited) < len(self._procs):
                self._terminate()
                until = (self._termed_at or time.monotonic()) + grace
                while len(self._exited) < len(self._procs):
                    event = self._next_event(until)
                    if event is None:
                        break
                    if event[0] == "exit":
                        self._exited[event[1]] = event[2]
                    elif event[0] == "signal":
                        self._on_signal(event[1])
        except KeyboardInterrupt:  # a second Ctrl-C in a notebook: skip the grace period
            interrupted = True
        finally:
            self._kill_all()  # also takes grandchildren left behind by processes that exited
            for proc in self._procs:
                proc.wait()
            for thread in self._threads:
                thread.join(_JOIN_SECS)
            for sink in self._sinks:
                sink.close()
        if interrupted:
            raise KeyboardInterrupt

    def _terminate(self) -> None:
        if self._termed_at is None:
            self._termed_at = time.monotonic()
        for i in range(len(self._procs)):
            if i not in self._exited:
                self._signalled.add(i)
                _killpg(self._procs[i].pid, signal.SIGTERM)

    def _kill_all(self) -> None:
        for i, proc in enumerate(self._procs):
            if i not in self._exited:
                self._signalled.add(i)
            _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is gone already


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
