"""A peer that died, hangs or never started: one clear error instead of a traceback wall or a hang.

TensorFlow reports a lost peer as an `UnavailableError` (a collective's gRPC call failed, or the
coordination service's heartbeats stopped: about 10 s after the peer died) and a peer that never
started as a `DeadlineExceededError` from the start-up registration (bounded by the start-up
wait, `tfdist.get_strategy(startup_timeout=)`). Their text is long, repeated, and names tasks as
"/job:worker/replica:0/task:1". `translate()` turns them into a `PeerUnavailableError` whose
one-line message names the task and its address from the cluster layer. Every route runs its
training calls inside it (the Controller, Keras `fit` under tfdist's fixes, the Estimator), so
library users get the same error whichever route they use; binaries (`tfdist-train`) print the
message and exit with `EXIT_CODE`.

This layer only reads exception text; it imports no TensorFlow internals.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from tfdist import cluster as cluster_lib

__all__ = ["EXIT_CODE", "PeerUnavailableError", "from_error", "translate"]

# Retried by engines that retry "signal-like" codes (Kubeflow TFJob `restartPolicy: ExitCode`
# retries 128-255 and treats 1-127 as permanent), and distinct from every death by a signal
# (128+N, N <= 64 on Linux: 137 SIGKILL/OOM, 134 SIGABRT/a crash, 143 SIGTERM/preemption),
# from 255 (ssh's own failure, exit(-1)) and from systemd's 200-243 service start-up codes.
EXIT_CODE = 250

_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
# Text TensorFlow uses when the failure is a peer's, not this process's (gRPC status 14 and
# friends); an UnavailableError without any of these is left alone.
_PEER_MARKERS = ("remote target /job:", "unhealthy", "heartbeat", "Collective ops is aborted",
                 "Barrier timed out", "RegisterTask", "Connection reset", "Socket closed",
                 "failed to connect", "Connection refused")
_STARTUP_MARKERS = ("RegisterTask", "Wait_for_all_tasks_to_register")
_TIMED_OUT = "timed out task names:"
_ERROR_TYPES = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError",
                "InternalError")


class PeerUnavailableError(RuntimeError):
    """Another task of the cluster died, stopped responding, or never started.

    The message is one line, e.g. ``tfdist: worker:1 (localhost:12345) stopped responding (this
    is worker:0 (localhost:12344)) -- restart the job, it resumes from the last checkpoint``.

    Attributes:
        tasks: The failed tasks as ``(job, index)`` pairs, in the order TensorFlow named them
            (empty when TensorFlow named none).
        startup: True when the peer never joined (the start-up wait ran out).
        exit_code: The status binaries exit with: `EXIT_CODE`.
        cause: TensorFlow's original error.
    """

    exit_code = EXIT_CODE

    def __init__(self, what: str, fix: str, *, tasks: tuple[tuple[str, int], ...] = (),
                 startup: bool = False, cause: BaseException | None = None) -> None:
        self.what = what.replace("\r", " ").replace("\n", " ")
        self.fix = fix
        super().__init__(f"{self.what} -- {fix}")
        self.tasks = tasks
        self.startup = startup
        self.cause = cause

    def exit_line(self) -> str:
        """The line a binary prints before exiting with `exit_code`."""
        return f"{self.what}; exiting with status {self.exit_code} -- {self.fix}"


def _is_tf_peer_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    if not names.intersection(_ERROR_TYPES):
        return False
    text = str(error)
    return any(marker in text for marker in _PEER_MARKERS)


def _failed_tasks(text: str, me: tuple[str, int] | None) -> tuple[tuple[str, int], ...]:
    """Tasks named in TensorFlow's text, without this one, first mention first."""
    if _TIMED_OUT in text:  # the start-up barrier lists the tasks that never registered after this
        text = text.split(_TIMED_OUT, 1)[1]
    found: list[tuple[str, int]] = []
    for job, index in _TASK.findall(text):
        task = (job, int(index))
        if task != me and task not in found:
            found.append(task)
    return tuple(found)


def _name(task: tuple[str, int], cluster: cluster_lib.ClusterInfo | None) -> str:
    job, index = task
    addresses = cluster.cluster_spec.get(job, []) if cluster is not None else []
    address = f" ({addresses[index]})" if 0 <= index < len(addresses) else ""
    return f"{job}:{index}{address}"


def from_error(error: BaseException, cluster: cluster_lib.ClusterInfo | None = None,
               *, startup_timeout: float | None = None) -> PeerUnavailableError | None:
    """The `PeerUnavailableError` for a TensorFlow error caused by a peer, else None.

    Args:
        error: Any exception; only TensorFlow's peer-failure errors are translated.
        cluster: The job's cluster, for the failed tasks' addresses. Defaults to
            `tfdist.cluster.resolve()` (no addresses if TF_CONFIG is invalid).
        startup_timeout: The start-up wait in seconds, named in start-up failures.

    Returns:
        The one-line error, or None when `error` is not a peer failure.
    """
    if isinstance(error, PeerUnavailableError):
        return error
    if not _is_tf_peer_error(error):
        return None
    if cluster is None:
        try:
            cluster = cluster_lib.resolve()
        except cluster_lib.ClusterConfigError:
            cluster = None
    text = str(error)
    me = (cluster.task_type, cluster.task_id) if cluster is not None and cluster.jobs else None
    tasks = _failed_tasks(text, me)
    if any(job == "ps" for job, _ in tasks):
        # Parameter-server training: the coordinator tolerates a lost worker, so a ps named in
        # the error is the culprit; the workers named beside it only relayed its failure.
        tasks = tuple(task for task in tasks if task[0] == "ps")
    startup = any(marker in text for marker in _STARTUP_MARKERS)
    who = ", ".join(_name(t, cluster) for t in tasks) if tasks else "a peer task"
    if startup:
        wait = f" within the start-up wait ({startup_timeout:g} s)" if startup_timeout else ""
        what = f"did not join the cluster{wait} (not started, or unreachable)"
        fix = "start every task, or raise TFDIST_STARTUP_TIMEOUT"
    else:
        what = "stopped responding"
        fix = "restart the job, it resumes from the last checkpoint"
    me_text = f" (this is {_name(me, cluster)})" if me is not None else ""
    return PeerUnavailableError(f"tfdist: {who} {what}{me_text}", fix,
                                tasks=tasks, startup=startup, cause=error)


@contextlib.contextmanager
def translate(cluster: cluster_lib.ClusterInfo | None = None, *,
              startup_timeout: float | None = None) -> Iterator[None]:
    """Re-raises TensorFlow's peer-failure errors inside the block as `PeerUnavailableError`.

    Other exceptions pass through unchanged. TensorFlow's error stays on `.cause` (and is not
    chained, so an uncaught one prints a short traceback ending in the one-line message).

    Args:
        cluster: Passed to `from_error`. Defaults to `tfdist.cluster.resolve()` when needed.
        startup_timeout: Passed to `from_error`.

    Example:

    ```python
    with tfdist.peer_failure.translate():
        model.fit(dataset, epochs=3)
    ```
    """
    try:
        yield
    except PeerUnavailableError:
        raise
    except Exception as error:  # noqa: BLE001 - only peer failures are translated, others re-raised
        translated = from_error(error, cluster, startup_timeout=startup_timeout)
        if translated is None:
            raise
        raise translated from None
