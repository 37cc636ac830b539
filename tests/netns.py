"""Simulated hosts on one machine: one network namespace per host, joined by a bridge.

`hosts(n)` creates, for this test run only (names carry this process's id):
- a "switch" namespace holding a bridge `br0`;
- per host a namespace with loopback up and `eth0` (one end of a veth pair whose other end is
  a port of the bridge), addressed 10.250.0.<i+1>/24.

Everything is created inside those namespaces (`ip -n NS ...`), so the machine's own namespace
gets no link, address or route; deleting the namespaces removes every link and the bridge. The
context manager deletes them however the block ends. Needs root and `ip netns`; `skip_reason()`
says why not, for `pytest.mark.skipif`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence

SUBNET = "10.250.0"
_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (ip netns add); CI runs them as root"
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2's `ip`"
    name = f"tfdprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"`ip netns add` fails here: {getattr(e, 'stderr', e)!s}".strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@dataclasses.dataclass(frozen=True)
class Hosts:
    """The simulated hosts: `namespaces[i]` has address `addresses[i]` on `eth0`."""

    namespaces: tuple[str, ...]
    addresses: tuple[str, ...]
    switch: str

    def exec_prefix(self, i: int) -> list[str]:
        """The argv prefix that runs a command on host `i`."""
        return ["ip", "netns", "exec", self.namespaces[i]]

    def limit_rate(self, rate: str = "1gbit") -> None:
        """Caps every host's outgoing rate on eth0 with a token bucket (tc tbf)."""
        for ns in self.namespaces:
            _ip("netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf",
                "rate", rate, "burst", "256kb", "latency", "100ms")


def existing_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@contextlib.contextmanager
def hosts(n: int) -> Iterator[Hosts]:
    """Creates `n` hosts on one bridge; removes every namespace on the way out."""
    prefix = f"tfd{os.getpid()}x{next(_counter)}"
    switch = f"{prefix}sw"
    namespaces = tuple(f"{prefix}h{i}" for i in range(n))
    created: list[str] = []
    try:
        for ns in (switch, *namespaces):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for i, ns in enumerate(namespaces):
            # Both ends are created inside namespaces: nothing appears in the machine's own.
            _ip("-n", switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _ip("-n", switch, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield Hosts(namespaces, tuple(f"{SUBNET}.{i + 1}" for i in range(n)), switch)
    finally:
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def run_on_hosts(the_hosts: Hosts, commands: Sequence[Sequence[str]], *, env: dict[str, str],
                 cwd: str, log_dir: str, timeout: float) -> list[subprocess.CompletedProcess]:
    """Runs `commands[i]` on host i, all at once, output to `log_dir/host<i>.log` (files, not
    pipes: a full pipe would stall a worker its peers wait for); kills all on timeout."""
    logs = [open(os.path.join(log_dir, f"host{i}.log"), "w") for i in range(len(commands))]
    procs = [subprocess.Popen([*the_hosts.exec_prefix(i), *cmd], env=env, cwd=cwd, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
             for i, (cmd, log) in enumerate(zip(commands, logs))]
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
        for log in logs:
            log.close()
    return [subprocess.CompletedProcess(proc.args, proc.returncode,
                                        open(os.path.join(log_dir, f"host{i}.log")).read())
            for i, proc in enumerate(procs)]
