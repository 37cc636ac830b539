"""Resolve and validate where this process sits in a TensorFlow cluster.

Every way a job learns its place in a cluster -- the ``TF_CONFIG`` environment variable, a Slurm
allocation or a Kubeflow TFJob -- is resolved here into one immutable :class:`ClusterInfo`. All
input is validated up front, so a bad config fails at once with one actionable line instead of a
hang or an opaque gRPC error minutes into start-up.

The module deliberately does not import TensorFlow, so the CLI answers in milliseconds and is handy
for debugging launch scripts::

    python -m tfdist.cluster                  # reads $TF_CONFIG
    python -m tfdist.cluster --tf-config '{"cluster": {...}, "task": {...}}'
    python -m tfdist.cluster --slurm --port 9000
    python -m tfdist.cluster --kubeflow
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["JOB_NAMES", "ClusterConfigError", "ClusterInfo", "expand_hostlist", "from_kubeflow",
           "from_slurm", "hosts_to_addresses", "main", "make_tf_config", "resolve"]

JOB_NAMES = ("chief", "worker", "ps", "evaluator")  # also the canonical storage/output order

Jobs = tuple[tuple[str, tuple[str, ...]], ...]

_MISSING = object()  # renders as "received nothing" for unset variables
_ADDRESS_FIX = 'Write it as "host:port", e.g. "localhost:2222".'
_IPV6_FIX = 'Write IPv6 hosts in brackets, e.g. "[::1]:2222".'
_TASK_FIX = 'Use "task": {"type": "worker", "index": 0}.'
_KINDS = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (type(None), "null"),
          (Mapping, "an object"), ((list, tuple), "an array"))  # bool first: it is an int subclass


class ClusterConfigError(ValueError):
    """An invalid cluster description; the message is one line: what, what was received, the fix."""

    def __init__(self, message: str) -> None:
        # Launchers and log scrapers work line by line, so never let a value add a line break.
        super().__init__(message.replace("\r", " ").replace("\n", " "))


def _show(value: Any) -> str:
    """Renders a received value compactly, as it would appear in JSON."""
    if value is _MISSING:
        return "nothing"
    try:
        # Python's repr keeps raw JSON text (full of double quotes) readable; JSON otherwise.
        text = repr(value) if isinstance(value, str) and '"' in value else json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _kind(value: Any) -> str:
    """Names a value's JSON type, e.g. "an array", for "got X" messages."""
    return next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)


def _fail(source: str, what: str, received: Any, fix: str) -> ClusterConfigError:
    """Builds the standard ``<source>: <what>; received <value>. <fix>`` error."""
    return ClusterConfigError(f"{source}: {what}; received {_show(received)}. {fix}")


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """Where this process sits in the cluster. Immutable; the default is a local single process.

    Build it with :func:`resolve`, :func:`from_slurm` or :func:`from_kubeflow`, which validate; the
    constructor only normalises ``jobs`` (a mapping is accepted and frozen).

    Attributes:
        task_type: This task's job: "chief", "worker", "ps" or "evaluator".
        task_id: This task's index within its job.
        jobs: The cluster as ``((job, (address, ...)), ...)`` in canonical job order; empty for a
            local process. Read it as a dict via ``cluster_spec``.
        rpc_layer: Protocol from TF_CONFIG (e.g. "grpc"), or None.
        environment: TF_CONFIG "environment" (e.g. "cloud"), or None.
    """

    task_type: str = "worker"
    task_id: int = 0
    jobs: Jobs = ()
    rpc_layer: str | None = None
    environment: str | None = None

    def __post_init__(self) -> None:
        # Copy into tuples so no caller keeps a mutable alias; sort so equal clusters compare equal.
        raw: Any = self.jobs
        items = raw.items() if isinstance(raw, Mapping) else raw
        pairs = [(str(job), tuple(addresses)) for job, addresses in items]
        order = {name: i for i, name in enumerate(JOB_NAMES)}
        object.__setattr__(self, "jobs", tuple(sorted(pairs, key=lambda pair: order.get(pair[0], 99))))

    def _addresses(self, job: str) -> tuple[str, ...]:
        return dict(self.jobs).get(job, ())

    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """A fresh ``{job: [address, ...]}`` copy; mutating it changes nothing here."""
        return {job: list(addresses) for job, addresses in self.jobs}

    @property
    def is_local(self) -> bool:
        """True for a single process with no cluster."""
        return not self.jobs

    @property
    def num_workers(self) -> int:
        """Training replicas: chief plus workers (1 for a local process)."""
        return 1 if self.is_local else len(self.worker_addresses)

    @property
    def world_size(self) -> int:
        """Number of training replicas; same as ``num_workers``."""
        return self.num_workers

    @property
    def num_ps(self) -> int:
        """Number of parameter-server tasks."""
        return len(self._addresses("ps"))

    @property
    def is_chief(self) -> bool:
        """True for the chief, for worker 0 when there is no chief, and for a local process."""
        if self.is_local or self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_id == 0 and not self._addresses("chief")

    @property
    def is_evaluator(self) -> bool:
        """True for a side-car evaluator task."""
        return self.task_type == "evaluator"

    @property
    def is_ps(self) -> bool:
        """True for a parameter-server task."""
        return self.task_type == "ps"

    @property
    def is_multi_worker(self) -> bool:
        """True when more than one replica trains."""
        return self.num_workers > 1

    @property
    def rank(self) -> int | None:
        """Replica rank: chief 0, then workers in order; None for ps and evaluator tasks."""
        if self.task_type == "chief":
            return 0
        if self.task_type == "worker":
            return self.task_id + (1 if self._addresses("chief") else 0)
        return None

    @property
    def task_address(self) -> str | None:
        """This task's "host:port", or None if the cluster lists none (local, lone evaluator)."""
        addresses = self._addresses(self.task_type)
        return addresses[self.task_id] if 0 <= self.task_id < len(addresses) else None

    @property
    def worker_addresses(self) -> list[str]:
        """Training replica addresses, chief first, then workers."""
        return [*self._addresses("chief"), *self._addresses("worker")]

    def to_tf_config(self) -> str:
        """Returns TF_CONFIG JSON that :func:`resolve` turns back into this info."""
        if self.is_local:
            return "{}"  # TensorFlow's conventional "no cluster"
        config: dict[str, Any] = {"cluster": self.cluster_spec,
                                  "task": {"type": self.task_type, "index": self.task_id}}
        if self.rpc_layer is not None:
            config["rpc_layer"] = self.rpc_layer
        if self.environment is not None:
            config["environment"] = self.environment
        return json.dumps(config)

    def describe(self) -> str:
        """Returns a multi-line human-readable summary of this task's place in the cluster."""
        rank = "n/a (not a training replica)" if self.rank is None else f"{self.rank} of {self.world_size}"
        lines = [
            f"role:        {self.task_type}",
            f"index:       {self.task_id}",
            f"chief:       {'yes' if self.is_chief else 'no'}",
            f"rank:        {rank}",
            f"workers:     {self.num_workers}",
            f"ps:          {self.num_ps}",
            f"address:     {self.task_address or '-'}",
            "cluster:     none (local single process)" if self.is_local else "cluster:",
        ]
        lines += [f"  {job:<10} {', '.join(addresses)}" for job, addresses in self.jobs]
        if self.rpc_layer is not None:
            lines.append(f"rpc layer:   {self.rpc_layer}")
        if self.environment is not None:
            lines.append(f"environment: {self.environment}")
        return "\n".join(lines)


def resolve(tf_config: str | Mapping[str, Any] | None = None, *,
            environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves and validates a TF_CONFIG.

    Args:
        tf_config: TF_CONFIG as a JSON string or mapping; if None, ``environ["TF_CONFIG"]``.
        environ: Environment to read; defaults to ``os.environ``.

    Returns:
        The validated info. A missing, blank or ``{}`` TF_CONFIG means a local single process.

    Raises:
        ClusterConfigError: If the config is invalid in any way.
    """
    config = _load(tf_config, environ)
    return ClusterInfo() if config is None else _build(config, "TF_CONFIG")


def _load(tf_config: str | Mapping[str, Any] | None, environ: Mapping[str, str] | None) -> dict | None:
    """Parses TF_CONFIG into a fresh dict; None means "no cluster"."""
    if tf_config is None:
        tf_config = (os.environ if environ is None else environ).get("TF_CONFIG")
    if tf_config is None or (isinstance(tf_config, str) and not tf_config.strip()):
        return None
    data: Any = tf_config
    if isinstance(tf_config, str):
        try:
            data = json.loads(tf_config)
        except json.JSONDecodeError as exc:
            where = f"{exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
            raise _fail("TF_CONFIG", f"invalid JSON: {where}", tf_config,
                        "Fix the JSON syntax there; keys and strings need double quotes.") from None
    if not isinstance(data, Mapping):
        raise _fail("TF_CONFIG", f"top level must be a JSON object, got {_kind(data)}", data,
                    'Use an object like {"cluster": {...}, "task": {"type": "worker", "index": 0}}.')
    return dict(data) or None  # TensorFlow treats "{}" as "no cluster"; keep that reset working


def _build(config: Mapping[str, Any], source: str) -> ClusterInfo:
    """Validates a parsed config; ``source`` prefixes every error message."""
    jobs = _check_cluster(config, source)
    task_type, task_id = _check_task(config, jobs, source)
    rpc_layer, environment = config.get("rpc_layer"), config.get("environment")
    if "rpc_layer" in config and not (isinstance(rpc_layer, str) and rpc_layer.strip()):
        raise _fail(source, "rpc_layer must be a non-empty string", rpc_layer,
                    'Use e.g. "grpc", or remove the key for the default.')
    if "environment" in config and not isinstance(environment, str):
        raise _fail(source, f"environment must be a string, got {_kind(environment)}", environment,
                    'Use e.g. "cloud", or remove the key.')
    return ClusterInfo(task_type, task_id, tuple(jobs.items()), rpc_layer, environment)


def _check_job_name(name: Any, what: str, source: str) -> None:
    if isinstance(name, str) and name in JOB_NAMES:
        return
    if isinstance(name, str) and name.lower() == "master":
        fix = 'Rename it to "chief" (the TF2 name); from_kubeflow() does this for TFJob configs.'
    else:
        guess = difflib.get_close_matches(str(name).lower(), JOB_NAMES, n=1)
        fix = (f'Did you mean "{guess[0]}"? ' if guess else "") + f"Valid jobs: {', '.join(JOB_NAMES)}."
    raise _fail(source, what, name, fix)


def _check_cluster(config: Mapping[str, Any], source: str) -> dict[str, tuple[str, ...]]:
    if "cluster" not in config:
        raise _fail(source, '"cluster" is missing (top-level keys shown)', sorted(map(str, config)),
                    'Add "cluster": {"worker": ["host:port", ...]}, or unset TF_CONFIG to run locally.')
    cluster = config["cluster"]
    if not isinstance(cluster, Mapping):
        raise _fail(source, f"cluster must be an object of job name -> addresses, got {_kind(cluster)}",
                    cluster, 'Use e.g. "cluster": {"worker": ["host1:2222", "host2:2222"]}.')
    if not cluster:
        raise _fail(source, "cluster is empty", cluster,
                    'List at least one job, e.g. {"worker": ["localhost:2222"]}, or unset TF_CONFIG.')
    jobs: dict[str, tuple[str, ...]] = {}
    seen: dict[tuple[str, int], str] = {}  # normalised address -> first field, so both are named
    for job, addresses in cluster.items():
        _check_job_name(job, "cluster has an unknown job name", source)
        field = f"cluster.{job}"
        if not isinstance(addresses, (list, tuple)):
            fix = f"Wrap it in a list: [{_show(addresses)}]." if isinstance(addresses, str) else \
                'Use e.g. ["localhost:2222"].'
            raise _fail(source, f'{field} must be a list of "host:port" strings, got {_kind(addresses)}',
                        addresses, fix)
        if not addresses:
            raise _fail(source, f"{field} is an empty list", addresses,
                        f'Add at least one "host:port" address, or remove the "{job}" job.')
        for i, address in enumerate(addresses):
            key = _check_address(address, f"{field}[{i}]", source)
            if key in seen:
                raise _fail(source, f"{field}[{i}] has the same address as {seen[key]}", address,
                            "Give every task its own host:port.")
            seen[key] = f"{field}[{i}]"
        jobs[job] = tuple(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise _fail(source, f"cluster.chief has {len(jobs['chief'])} addresses", jobs["chief"],
                    'A cluster has at most one chief; move the others to "worker".')
    if "chief" not in jobs and "worker" not in jobs:
        raise _fail(source, 'cluster has no "chief" or "worker" job', list(jobs),
                    'Add a "worker" (or "chief") job to train on.')
    if "ps" in jobs and "chief" not in jobs:
        raise _fail(source, 'cluster has a "ps" job but no "chief"', list(jobs),
                    'Parameter-server training needs a coordinator: add "chief": ["host:port"].')
    return jobs


def _check_address(address: Any, field: str, source: str) -> tuple[str, int]:
    """Validates one "host:port"; returns (lower-cased host, port) to detect duplicates."""
    if not isinstance(address, str):
        raise _fail(source, f'{field} must be a "host:port" string, got {_kind(address)}', address,
                    'Quote it and include the host, e.g. "localhost:2222".')

    def bad(problem: str, fix: str = _ADDRESS_FIX) -> ClusterConfigError:
        return _fail(source, f"{field} {problem}", address, fix)

    if any(ch.isspace() for ch in address):
        raise bad("contains whitespace", "Remove it; " + _ADDRESS_FIX)
    if "://" in address:
        raise bad("includes a URL scheme", 'Drop the scheme; set "rpc_layer": "grpc" instead.')
    if address.startswith("["):
        host, closed, rest = address[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise bad('has no "]:port" after an IPv6 host' if closed else 'has an unclosed "["', _IPV6_FIX)
        port = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"has an invalid IPv6 host {_show(host)}", _IPV6_FIX) from None
    else:
        host, colon, port = address.rpartition(":")
        if not colon:
            raise bad("has no port")
        if not host:
            raise bad("has an empty host")
        if ":" in host:
            raise bad("has an IPv6 host without brackets", f'Bracket the host: "[{host}]:{port}".')
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
            raise bad(f"has an invalid host {_show(host)}", "Use letters, digits, dots, dashes, underscores.")
    if not re.fullmatch(r"[0-9]+", port):
        raise bad(f"has a non-numeric port {_show(port)}" if port else "has an empty port")
    if not 1 <= int(port) <= 65535:
        raise bad(f"has port {int(port)} out of range", "Use a port between 1 and 65535.")
    return host.lower(), int(port)


def _check_task(config: Mapping[str, Any], jobs: Mapping[str, tuple], source: str) -> tuple[str, int]:
    if "task" not in config:
        raise _fail(source, '"task" is missing (top-level keys shown)', sorted(map(str, config)),
                    'Add "task": {"type": "worker", "index": 0} naming this process\'s role.')
    task = config["task"]
    if not isinstance(task, Mapping):
        raise _fail(source, f"task must be an object, got {_kind(task)}", task, _TASK_FIX)
    for key in ("type", "index"):
        if key not in task:
            raise _fail(source, f"task.{key} is missing", task, _TASK_FIX)
    task_type, index = task["type"], task["index"]
    if not isinstance(task_type, str):
        raise _fail(source, f"task.type must be a string, got {_kind(task_type)}", task_type, _TASK_FIX)
    _check_job_name(task_type, "task.type is not a known job", source)
    # Only an evaluator may run outside the cluster (it joins no collective).
    if task_type not in jobs and task_type != "evaluator":
        raise _fail(source, f"task.type is not a job in cluster (cluster has {', '.join(jobs)})",
                    task_type, f'Use one of those jobs, or add "{task_type}": ["host:port"] to cluster.')
    if isinstance(index, bool) or not isinstance(index, int):
        quoted = isinstance(index, str) and re.fullmatch(r"\s*[0-9]+\s*", index)
        fix = f'Use an integer without quotes: "index": {int(index)}.' if quoted else 'Use e.g. "index": 0.'
        raise _fail(source, f"task.index must be an integer, got {_kind(index)}", index, fix)
    if index < 0:
        raise _fail(source, "task.index is negative", index, "Task indices start at 0.")
    count = len(jobs.get(task_type, ()))
    if task_type in jobs and index >= count:
        raise _fail(source, f"task.index is out of range: cluster.{task_type} has {count} task(s)", index,
                    f"Use an index between 0 and {count - 1}.")
    return task_type, index


def make_tf_config(*, workers: Sequence[str], task_type: str, task_id: int, chief: str | None = None,
                   ps: Sequence[str] = (), evaluator: str | None = None,
                   rpc_layer: str | None = None) -> str:
    """Builds a TF_CONFIG JSON string, validated exactly as :func:`resolve` would.

    Raises:
        ClusterConfigError: If the resulting config is invalid.
    """
    for name, value in (("workers", workers), ("ps", ps)):
        if isinstance(value, str):  # list("a:1") would silently split it into characters
            raise _fail("make_tf_config", f'{name} must be a sequence of "host:port" strings, got a string',
                        value, f"Wrap it in a list: [{_show(value)}].")
    cluster = {"chief": [chief] if chief is not None else [], "worker": list(workers), "ps": list(ps),
               "evaluator": [evaluator] if evaluator is not None else []}
    config: dict[str, Any] = {"cluster": {job: addrs for job, addrs in cluster.items() if addrs},
                              "task": {"type": task_type, "index": task_id}}
    if rpc_layer is not None:
        config["rpc_layer"] = rpc_layer
    _build(config, "make_tf_config")
    return json.dumps(config)


def hosts_to_addresses(hosts: Sequence[str], port: int) -> list[str]:
    """Appends ``:port`` to bare host names, leaving entries that already have a port.

    >>> hosts_to_addresses(["a", "b:9000", "::1", "[::2]"], 2222)
    ['a:2222', 'b:9000', '[::1]:2222', '[::2]:2222']
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail("hosts_to_addresses", "port is out of range", port, "Use a port between 1 and 65535.")
    if isinstance(hosts, str):
        raise _fail("hosts_to_addresses", "hosts must be a sequence of host names, got a string", hosts,
                    f"Wrap it in a list: [{_show(hosts)}].")
    addresses = []
    for host in hosts:
        if host.startswith("["):
            addresses.append(host if "]:" in host else f"{host}:{port}")
        elif host.count(":") > 1:  # a bare IPv6 literal: its colons are not a port
            addresses.append(f"[{host}]:{port}")
        else:
            addresses.append(host if ":" in host else f"{host}:{port}")
    return addresses


def expand_hostlist(hostlist: str) -> list[str]:
    """Expands a Slurm compressed hostlist, preserving zero padding.

    >>> expand_hostlist("node[01-03,07],gpu-a[1-2]")
    ['node01', 'node02', 'node03', 'node07', 'gpu-a1', 'gpu-a2']

    Raises:
        ClusterConfigError: If the hostlist is malformed.
    """
    return _expand_hostlist(hostlist, "hostlist")


def _expand_hostlist(text: str, var: str) -> list[str]:
    def bad(problem: str) -> ClusterConfigError:
        return _fail("SLURM", f"{var} {problem}", text,
                     'Use hostlist syntax, e.g. "node[01-03,07],gpu-a[1-2]".')

    # Entries are runs of plain characters and whole [...] groups, separated by top-level commas;
    # if re-joining them does not give the input back, a bracket or an entry is malformed.
    items = re.findall(r"(?:[^,\[\]]|\[[^\[\]]*\])+", text.strip())
    if not items or ",".join(items) != text.strip():
        raise bad("has unbalanced brackets or an empty entry")
    hosts: list[str] = []
    for item in items:
        names = [""]
        # re.split with a group alternates literal text (even) and bracket contents (odd).
        for n, part in enumerate(re.split(r"\[([^\]]*)\]", item)):
            options = [part]
            if n % 2:
                options = []
                for piece in part.split(","):
                    match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", piece)
                    if not match or (match[2] and int(match[2]) < int(match[1])):
                        raise bad(f"has a malformed range {_show(piece)}")
                    lo, hi = match[1], match[2] or match[1]
                    options += [str(k).zfill(len(lo)) for k in range(int(lo), int(hi) + 1)]
            names = [name + option for name in names for option in options]
        hosts += names
    return hosts


def from_slurm(environ: Mapping[str, str] | None = None, *, port: int = 8888) -> ClusterInfo:
    """Builds the cluster from a Slurm job step; every task is a worker and rank 0 is the chief.

    Tasks sharing a node get consecutive ports ``port, port + 1, ...``. ``SLURM_PROCID`` becomes
    the worker index, which assumes Slurm's default block distribution (consecutive ranks per
    node). Step variables win over job variables since they describe the running srun step.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        port: Port of the first task on each node.

    Raises:
        ClusterConfigError: Naming the variable that is missing, malformed or inconsistent.
    """
    env = os.environ if environ is None else environ

    def get(*names: str) -> tuple[str, str]:
        for name in names:
            if env.get(name, "").strip():
                return name, env[name].strip()
        raise _fail("SLURM", f"{' or '.join(names)} is not set", _MISSING,
                    "Run inside a Slurm job step (srun), or set the variable.")

    def integer(name: str, value: str, minimum: int) -> int:
        if not re.fullmatch(r"[0-9]+", value) or int(value) < minimum:
            raise _fail("SLURM", f"{name} must be an integer >= {minimum}", value,
                        "Check the srun/sbatch launch.")
        return int(value)

    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail("SLURM", "port is out of range", port, "Use a port between 1 and 65535.")
    nodes_var, nodelist = get("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
    procid = integer(*get("SLURM_PROCID"), 0)
    ntasks = integer(*get("SLURM_NTASKS"), 1)
    tpn_var, tasks_per_node = get("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    nodes = _expand_hostlist(nodelist, nodes_var)
    counts: list[int] = []
    for entry in tasks_per_node.split(","):  # "2(x3),1" means 2,2,2,1
        match = re.fullmatch(r"([0-9]+)(?:\(x([0-9]+)\))?", entry.strip())
        if not match:
            raise _fail("SLURM", f"{tpn_var} has a malformed entry {_show(entry)}", tasks_per_node,
                        'Use Slurm syntax, e.g. "2(x3),1" for 2,2,2,1 tasks.')
        counts += [int(match[1])] * int(match[2] or 1)
    if procid >= ntasks:
        raise _fail("SLURM", f"SLURM_PROCID is out of range for SLURM_NTASKS={ntasks}", str(procid),
                    f"Use a rank between 0 and {ntasks - 1}.")
    if len(counts) != len(nodes):
        raise _fail("SLURM", f"{tpn_var} describes {len(counts)} node(s) but {nodes_var} lists {len(nodes)}",
                    tasks_per_node, "Use the variables of one job step so they describe the same nodes.")
    if sum(counts) != ntasks:
        raise _fail("SLURM", f"{tpn_var} adds up to {sum(counts)} tasks but SLURM_NTASKS is {ntasks}",
                    tasks_per_node, "Use the variables of one job step so they agree.")
    if port + max(counts) - 1 > 65535:
        raise _fail("SLURM", f"port + tasks per node exceeds 65535 ({max(counts)} tasks on a node)", port,
                    "Use a lower port.")
    workers = [f"{node}:{port + k}" for node, count in zip(nodes, counts) for k in range(count)]
    return _build({"cluster": {"worker": workers}, "task": {"type": "worker", "index": procid}}, "SLURM")


def _tfjob_name(name: Any) -> Any:
    if not isinstance(name, str):
        return name  # left for validation to report
    return "chief" if name.lower() == "master" else name.lower()


def from_kubeflow(tf_config: str | Mapping[str, Any] | None = None, *,
                  environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves a Kubeflow TFJob TF_CONFIG.

    Older TFJobs call the coordinator "master" and some capitalise replica types, so job and task
    type names are lower-cased and "master" becomes "chief" before :func:`resolve`'s validation.

    Raises:
        ClusterConfigError: If the config is invalid after normalisation.
    """
    config = _load(tf_config, environ)
    if config is None:
        return ClusterInfo()
    if isinstance(config.get("cluster"), Mapping):
        renamed: dict[Any, Any] = {}
        for job, addresses in config["cluster"].items():
            if _tfjob_name(job) in renamed:
                raise _fail("TF_CONFIG", f"cluster names job {_show(_tfjob_name(job))} twice after TFJob "
                            "normalisation", list(config["cluster"]), "Keep one of the replica types.")
            renamed[_tfjob_name(job)] = addresses
        config["cluster"] = renamed
    if isinstance(config.get("task"), Mapping) and "type" in config["task"]:
        config["task"] = {**config["task"], "type": _tfjob_name(config["task"]["type"])}
    return _build(config, "TF_CONFIG")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI: prints the resolved cluster, or one ``error:`` line and returns 2."""
    parser = argparse.ArgumentParser(prog="python -m tfdist.cluster",
                                     description="Resolve, validate and describe this task's cluster.")
    parser.add_argument("--tf-config", metavar="JSON", help="TF_CONFIG to check (default: $TF_CONFIG)")
    parser.add_argument("--slurm", action="store_true", help="build the cluster from Slurm variables")
    parser.add_argument("--port", type=int, help="first port on each node with --slurm (default: 8888)")
    parser.add_argument("--kubeflow", action="store_true", help='accept TFJob "master" and any-case jobs')
    args = parser.parse_args(argv)
    if args.slurm and (args.tf_config is not None or args.kubeflow):
        parser.error("--slurm cannot be combined with --tf-config or --kubeflow")
    if args.port is not None and not args.slurm:
        parser.error("--port only applies with --slurm")
    try:
        if args.slurm:
            info = from_slurm(port=8888 if args.port is None else args.port)
        else:
            info = (from_kubeflow if args.kubeflow else resolve)(args.tf_config)
    except ClusterConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(info.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
