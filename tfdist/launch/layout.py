"""Plans a launch: the tasks, where they run, their ports, TF_CONFIG and TFDIST_* variables.

Plain data, no processes and no TensorFlow, so ``--dry-run`` can print a plan. TF_CONFIG comes
from `tfdist.cluster.make_tf_config`, which validates it exactly as a worker's `resolve()` will.

Layout: chief (if any) first, then workers, then parameter servers, then the evaluator, which
gets no address (it joins no collective). With several hosts, ``num_workers`` and ``num_ps`` are
per host, the chief and the evaluator run on the first host, and each host numbers its tasks'
ports up from its base port, so every host derives the same cluster without talking to the others.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import re
import socket
from collections.abc import Mapping

import portpicker

from tfdist import checks
from tfdist import cluster
from tfdist.cluster import slurm
from tfdist.launch.errors import LaunchError

DEFAULT_PORT_BASE = 8888  # as tfdist.cluster.from_slurm
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})
# Set per task; inherited copies (a launcher started from a launched process) are dropped.
TASK_VARIABLES = ("TF_CONFIG", "TFDIST_TASK_TYPE", "TFDIST_TASK_ID", "TFDIST_RANK",
                  "TFDIST_WORLD_SIZE", "TFDIST_RESTART", "TFDIST_SLOT")


@dataclasses.dataclass(frozen=True)
class Topology:
    """What to launch: the cluster's shape and where its tasks run.

    Attributes:
        num_workers: Worker tasks (per host when `hosts` is given). Defaults to 1.
        chief: Add a chief task (on the first host). Defaults to False.
        num_ps: Parameter-server tasks (per host when `hosts` is given); needs `chief`.
            Defaults to 0.
        evaluator: Add an evaluator task (on the first host), outside the training cluster.
            Defaults to False.
        hosts: The hosts of a multi-host job, each "name" or "name:port" (a per-host base port);
            None runs everything on this machine on loopback addresses. Defaults to None.
        host_index: This machine's index in `hosts`. Defaults to 0.
        ports: Explicit ports (single host) for the tasks with addresses: chief, workers, ps.
        port_base: First port; a host's tasks use consecutive ports. Defaults to free ports
            picked at random on a single host, and 8888 with `hosts`.
    """

    num_workers: int = 1
    chief: bool = False
    num_ps: int = 0
    evaluator: bool = False
    hosts: tuple[str, ...] | None = None
    host_index: int = 0
    ports: tuple[int, ...] | None = None
    port_base: int | None = None

    def __post_init__(self) -> None:
        checks.positive_int("num_workers", self.num_workers, error=LaunchError)
        checks.non_negative_int("num_ps", self.num_ps, error=LaunchError)
        if self.num_ps and not self.chief:
            raise LaunchError("parameter servers (--ps, num_ps) need a chief (--chief, chief=True): "
                              "it coordinates parameter-server training.")
        if self.hosts is not None:
            if isinstance(self.hosts, str) or not self.hosts:
                raise LaunchError(
                    f"hosts must be a non-empty list of host names; received {self.hosts!r}.")
            object.__setattr__(self, "hosts", tuple(self.hosts))
            checks.non_negative_int("host_index", self.host_index, error=LaunchError)
            if self.host_index >= len(self.hosts):
                raise LaunchError(f"host index {self.host_index} is out of range for {len(self.hosts)} "
                                  f"host(s); use 0 to {len(self.hosts) - 1}.")
            if self.ports is not None:
                raise LaunchError("explicit ports (--ports) work on a single host; with several hosts "
                                  'give a base port (--port-base) or "host:port" entries.')
        if self.ports is not None:
            object.__setattr__(self, "ports", tuple(self.ports))
            for port in self.ports:
                _check_port(port)
            if len(set(self.ports)) != len(self.ports):
                raise LaunchError(f"ports must differ; received {','.join(map(str, self.ports))}.")
            if self.port_base is not None:
                raise LaunchError(
                    "give either explicit ports (--ports) or a base port (--port-base), not both.")
        if self.port_base is not None:
            _check_port(self.port_base)

    @property
    def picks_ports(self) -> bool:
        """True when ports are picked at random, so a restart can take fresh ones."""
        return self.hosts is None and self.ports is None and self.port_base is None


@dataclasses.dataclass(frozen=True)
class Task:
    """One planned process: its role, host, address and TF_CONFIG."""

    task_type: str
    task_id: int
    host_index: int
    address: str | None
    tf_config: str
    rank: int | None
    world_size: int

    @property
    def name(self) -> str:
        return f"{self.task_type}:{self.task_id}"

    def env(self, restart: int) -> dict[str, str]:
        """The variables the launcher sets for this task (TFDIST_RANK only for training replicas)."""
        env = {"TF_CONFIG": self.tf_config, "TFDIST_TASK_TYPE": self.task_type,
               "TFDIST_TASK_ID": str(self.task_id), "TFDIST_WORLD_SIZE": str(self.world_size),
               "TFDIST_RESTART": str(restart)}
        if self.rank is not None:
            env["TFDIST_RANK"] = str(self.rank)
        return env


@dataclasses.dataclass(frozen=True)
class Plan:
    """The whole cluster's tasks, and which of them this host runs."""

    tasks: tuple[Task, ...]
    host_index: int

    @property
    def local_tasks(self) -> tuple[Task, ...]:
        return tuple(task for task in self.tasks if task.host_index == self.host_index)

    def non_loopback_addresses(self) -> list[str]:
        """Cluster addresses whose host is not a loopback name or address."""
        return [t.address for t in self.tasks if t.address and not is_loopback(t.address)]


def make_plan(topology: Topology) -> Plan:
    """Plans every task of `topology`; random ports are picked afresh on each call.

    Raises:
        LaunchError: The ports or addresses do not work out.
    """
    roles = _roles(topology)
    addressed = [role for role in roles if role[0] != "evaluator"]
    addresses = dict(zip(addressed, _addresses(topology, addressed)))

    def of(job: str) -> list[str]:
        return [addresses[role] for role in addressed if role[0] == job]

    tasks = []
    for role in roles:
        task_type, task_id, host = role
        try:
            tf_config = cluster.make_tf_config(
                workers=of("worker"), chief=next(iter(of("chief")), None), ps=of("ps"),
                task_type=task_type, task_id=task_id)
        except cluster.ClusterConfigError as err:
            raise LaunchError(str(err)) from None
        info = cluster.resolve(tf_config)
        tasks.append(Task(task_type, task_id, host, addresses.get(role), tf_config, info.rank,
                          info.world_size))
    return Plan(tuple(tasks), topology.host_index)


def child_env(base: Mapping[str, str], extra: Mapping[str, str], task: Task,
              restart: int) -> dict[str, str]:
    """A child's environment: `base` minus inherited task variables, then `extra`, then the task's."""
    env = {k: v for k, v in base.items() if k not in TASK_VARIABLES}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the launcher as they are printed
    env.update(task.env(restart))
    return env


def check_ports_free(plan: Plan) -> None:
    """Raises `LaunchError` naming the first port of this host's tasks that cannot be bound."""
    for task in plan.local_tasks:
        if task.address is not None:
            port = int(task.address.rpartition(":")[2])
            if not _port_free(port):
                raise LaunchError(f"port {port} ({task.name}) is already in use on this machine; choose "
                                  "other ports (--ports, --port-base) or stop the program using it.")


def is_loopback(address: str) -> bool:
    """True for "localhost:1", "127.0.0.5:1", "[::1]:1" and the like (no DNS lookups)."""
    host = address.rpartition(":")[0] if re.search(r":[0-9]+$", address) else address
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_warning(addresses: list[str]) -> str:
    """The one-time warning for non-loopback addresses."""
    shown = ", ".join(addresses[:4]) + (", ..." if len(addresses) > 4 else "")
    return ("warning: TensorFlow's gRPC workers accept unauthenticated connections; run them only "
            f"on a private network or behind a firewall (non-loopback addresses: {shown}).")


def slurm_hosts(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], int]:
    """This job step's hosts and this node's index, for one launcher per node under ``srun``.

    The variables are read by `tfdist.cluster.slurm`, the one Slurm parser (python-hostlist).

    Raises:
        LaunchError: A variable is missing or malformed, or the step runs several tasks per node.
    """
    env = os.environ if environ is None else environ
    var = next((n for n in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST") if env.get(n)), None)
    if var is None or not env.get("SLURM_NODEID", "").strip():
        raise LaunchError("--slurm needs SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST) and SLURM_NODEID; "
                          "run it under srun with one task per node (srun --ntasks-per-node=1).")
    try:
        _, hosts, node_id = slurm.node_index(env)
        per_node = slurm.tasks_per_node(env) if env.get("SLURM_STEP_TASKS_PER_NODE", "").strip() else None
    except cluster.ClusterConfigError as err:
        raise LaunchError(str(err)) from None
    if per_node is not None and set(per_node[1]) != {1}:
        raise LaunchError(f"SLURM_STEP_TASKS_PER_NODE={env['SLURM_STEP_TASKS_PER_NODE'].strip()!r}: run one "
                          "tfdist-launch per node (srun --ntasks-per-node=1) and set processes per node "
                          "with --workers.")
    return tuple(hosts), node_id


def _roles(topology: Topology) -> list[tuple[str, int, int]]:
    """(task_type, task_id, host_index) for every task, in canonical order."""
    num_hosts = len(topology.hosts) if topology.hosts else 1
    roles = [("chief", 0, 0)] if topology.chief else []
    for job, count in (("worker", topology.num_workers), ("ps", topology.num_ps)):
        roles += [(job, host * count + k, host) for host in range(num_hosts) for k in range(count)]
    if topology.evaluator:
        roles.append(("evaluator", 0, 0))
    return roles


def _addresses(topology: Topology, roles: list[tuple[str, int, int]]) -> list[str]:
    """The "host:port" of each role with an address."""
    if topology.hosts is None:
        return [f"localhost:{port}" for port in _local_ports(topology, len(roles))]
    addresses: list[str] = []
    used: dict[int, int] = {}  # host index -> tasks given a port on it so far
    for _, _, host in roles:
        default = topology.port_base or DEFAULT_PORT_BASE
        base = cluster.hosts_to_addresses([topology.hosts[host]], default)[0]
        name, _, port = base.rpartition(":")
        offset = used.get(host, 0)
        used[host] = offset + 1
        if int(port) + offset > 65535:
            raise LaunchError(f"host {topology.hosts[host]!r} runs {offset + 1} tasks from port {port}, "
                              "past 65535; use a lower --port-base.")
        addresses.append(f"{name}:{int(port) + offset}")
    return addresses


def _local_ports(topology: Topology, count: int) -> list[int]:
    if topology.ports is not None:
        if len(topology.ports) != count:
            raise LaunchError(f"--ports lists {len(topology.ports)} port(s) but {count} task(s) need "
                              "one (chief, workers and parameter servers; not the evaluator).")
        return list(topology.ports)
    if topology.port_base is not None:
        if topology.port_base + count - 1 > 65535:
            raise LaunchError(f"{count} ports from --port-base {topology.port_base} go past 65535.")
        return [topology.port_base + k for k in range(count)]
    ports: list[int] = []
    while len(ports) < count:  # portpicker reserves nothing: two calls may return the same port
        port = portpicker.pick_unused_port()
        if port not in ports:
            ports.append(port)
    return ports


def _port_free(port: int) -> bool:
    """Whether a TCP listener could bind `port` on all interfaces, as TF's gRPC server does."""
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC: TIME_WAIT is fine
            try:
                sock.bind((host, port))
            except OSError as err:
                if err.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
    return True


def _check_port(port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LaunchError(f"port {port!r} is out of range; use 1 to 65535.")
