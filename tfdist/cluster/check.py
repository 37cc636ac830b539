"""``python -m tfdist.cluster --check``: can this task reach every peer before a long job starts?

For each peer in the resolved cluster: does its host name resolve, and does its port accept a
TCP connection within the timeout? While it checks, this task listens on its own port (if the
cluster gives it one and the port is free), so the checks started on every host at about the
same time find each other; it keeps listening for `linger` seconds after its own check so that
slower peers can finish theirs. No TensorFlow import here (versions are the CLI's job).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable

from tfdist.cluster.spec import ClusterInfo

__all__ = ["PeerStatus", "check_peers"]


@dataclasses.dataclass(frozen=True)
class PeerStatus:
    """What the check found for one peer.

    Attributes:
        task: e.g. "worker:1".
        address: The peer's "host:port".
        resolved: Whether the host name resolved to an address.
        reachable: Whether the port accepted a TCP connection within the timeout.
        detail: The resolved address, or why it failed.
    """

    task: str
    address: str
    resolved: bool
    reachable: bool
    detail: str


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _resolve(host: str, port: int, timeout: float) -> tuple[list, str]:
    """getaddrinfo with a timeout (it has none of its own): (addresses, error)."""
    result: dict = {}

    def run() -> None:
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            result["error"] = f"does not resolve ({exc.strerror or exc})"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return [], f"does not resolve (no answer within {timeout:g} s)"
    return result.get("infos", []), result.get("error", "")


def _probe(task: str, address: str, deadline: float) -> PeerStatus:
    host, port = _split(address)
    infos, error = _resolve(host, port, max(0.1, deadline - time.monotonic()))
    if not infos:
        return PeerStatus(task, address, False, False, error)
    shown = infos[0][4][0]
    last = "no answer"
    while True:
        for family, kind, proto, _, sockaddr in infos:
            remaining = deadline - time.monotonic()
            try:
                with socket.socket(family, kind, proto) as sock:
                    sock.settimeout(max(0.05, min(1.0, remaining)))
                    sock.connect(sockaddr)
                return PeerStatus(task, address, True, True, f"{shown}, port {port} answers")
            except OSError as exc:
                last = exc.strerror or str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            return PeerStatus(task, address, True, False, f"{shown}, port {port} does not answer ({last})")
        time.sleep(0.2)


class _Listener:
    """Accepts (and closes) connections on this task's port while the check runs."""

    def __init__(self, port: int) -> None:
        self.note = ""
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            bind = ("::", port)
        except OSError:
            sock, bind = socket.socket(socket.AF_INET, socket.SOCK_STREAM), ("0.0.0.0", port)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(bind)
            sock.listen(64)
        except OSError as exc:
            sock.close()
            self.note = f"own port {port} not opened ({exc.strerror or exc}); a server may already run there"
            return
        sock.settimeout(0.2)
        self._sock = sock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        if self._sock is not None:
            self._stop.set()
            self._thread.join()
            self._sock.close()


def check_peers(info: ClusterInfo, *, timeout: float = 10.0, listen: bool = True, linger: float = 0.0,
                report: Callable[[list[PeerStatus], str], None] | None = None
                ) -> tuple[list[PeerStatus], str]:
    """Checks every peer of `info` (every cluster address but this task's own).

    Args:
        info: The resolved cluster.
        timeout: Seconds to wait, for all peers together, for names to resolve and ports to
            answer. Defaults to 10.
        listen: Listen on this task's own port meanwhile. Defaults to True.
        linger: Seconds to keep listening after the check. Defaults to 0.
        report: Called with the results before lingering (so they are seen at once).
            Defaults to None.

    Returns:
        The status of each peer, in cluster order, and a note about this task's own port ("" if
        there is nothing to say).
    """
    own = info.task_address
    peers = [(f"{job}:{i}", address) for job, addresses in info.jobs
             for i, address in enumerate(addresses) if (job, i) != (info.task_type, info.task_id)]
    listener = _Listener(_split(own)[1]) if listen and own else None
    deadline = time.monotonic() + timeout
    results: list[PeerStatus | None] = [None] * len(peers)

    def run(k: int) -> None:
        results[k] = _probe(*peers[k], deadline)

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(peers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    note = listener.note if listener else ""
    statuses = [r for r in results if r is not None]
    if report is not None:
        report(statuses, note)
    if listener is not None:
        time.sleep(max(0.0, linger))
        listener.close()
    return statuses, note
