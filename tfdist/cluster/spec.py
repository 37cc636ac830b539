"""The cluster model: `ClusterInfo`, its validation, and `make_tf_config`.

Every source (TF_CONFIG, Slurm, Kubernetes, Ray) turns what it reads into a TF_CONFIG-shaped dict
and calls `build`, so all of them are validated by the same code and fail with the same one-line
`ClusterConfigError`: what is wrong, what was received, how to fix it. No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["JOB_NAMES", "MISSING", "ClusterConfigError", "ClusterInfo", "build", "fail",
           "hosts_to_addresses", "kind", "make_tf_config", "show"]

JOB_NAMES = ("chief", "worker", "ps", "evaluator")  # also the canonical storage/output order

Jobs = tuple[tuple[str, tuple[str, ...]], ...]

MISSING = object()  # renders as "received nothing" for unset variables
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


def show(value: Any) -> str:
    """Renders a received value compactly, as it would appear in JSON."""
    if value is MISSING:
        return "nothing"
    try:
        # Python's repr keeps raw JSON text (full of double quotes) readable; JSON otherwise.
        text = repr(value) if isinstance(value, str) and '"' in value else json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def kind(value: Any) -> str:
    """Names a value's JSON type, e.g. "an array", for "got X" messages."""
    return next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)


def fail(source: str, what: str, received: Any, fix: str) -> ClusterConfigError:
    """Builds the standard ``<source>: <what>; received <value>. <fix>`` error."""
    return ClusterConfigError(f"{source}: {what}; received {show(received)}. {fix}")


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

    def refuse_ps(self, route: str, *, error: type[Exception] = ValueError) -> None:
        """Raises `error` on a parameter-server task: the one refusal for the routes without one.

        Args:
            route: Who refuses, for the message (e.g. "tfdist.estimator", "tfdist-train").
            error: The exception class raised. Defaults to `ValueError`.
        """
        if self.is_ps:
            raise error(
                f"this task is ps:{self.task_id}; {route} has no parameter-server training: drop "
                "the ps tasks from TF_CONFIG and train with chief and worker tasks "
                "(MultiWorkerMirroredStrategy).")

    def without_evaluator(self) -> ClusterInfo:
        """This info with any "evaluator" job dropped from the cluster (the task is kept).

        A side-car evaluator joins no collective; listed in the training cluster it can hang a
        parameter-server coordinator (tensorflow/tensorflow#46169), so engines that list it
        (a Kubeflow TFJob) are normalised with this before TF_CONFIG reaches TensorFlow.
        """
        return dataclasses.replace(self, jobs=tuple(p for p in self.jobs if p[0] != "evaluator"))

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




def build(config: Mapping[str, Any], source: str) -> ClusterInfo:
    """Validates a parsed config; ``source`` prefixes every error message."""
    jobs = _check_cluster(config, source)
    task_type, task_id = _check_task(config, jobs, source)
    rpc_layer, environment = config.get("rpc_layer"), config.get("environment")
    if "rpc_layer" in config and not (isinstance(rpc_layer, str) and rpc_layer.strip()):
        raise fail(source, "rpc_layer must be a non-empty string", rpc_layer,
                    'Use e.g. "grpc", or remove the key for the default.')
    if "environment" in config and not isinstance(environment, str):
        raise fail(source, f"environment must be a string, got {kind(environment)}", environment,
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
    raise fail(source, what, name, fix)


def _check_cluster(config: Mapping[str, Any], source: str) -> dict[str, tuple[str, ...]]:
    if "cluster" not in config:
        raise fail(source, '"cluster" is missing (top-level keys shown)', sorted(map(str, config)),
                    'Add "cluster": {"worker": ["host:port", ...]}, or unset TF_CONFIG to run locally.')
    cluster = config["cluster"]
    if not isinstance(cluster, Mapping):
        raise fail(source, f"cluster must be an object of job name -> addresses, got {kind(cluster)}",
                    cluster, 'Use e.g. "cluster": {"worker": ["host1:2222", "host2:2222"]}.')
    if not cluster:
        raise fail(source, "cluster is empty", cluster,
                    'List at least one job, e.g. {"worker": ["localhost:2222"]}, or unset TF_CONFIG.')
    jobs: dict[str, tuple[str, ...]] = {}
    seen: dict[tuple[str, int], str] = {}  # normalised address -> first field, so both are named
    for job, addresses in cluster.items():
        _check_job_name(job, "cluster has an unknown job name", source)
        field = f"cluster.{job}"
        if not isinstance(addresses, (list, tuple)):
            fix = f"Wrap it in a list: [{show(addresses)}]." if isinstance(addresses, str) else \
                'Use e.g. ["localhost:2222"].'
            raise fail(source, f'{field} must be a list of "host:port" strings, got {kind(addresses)}',
                        addresses, fix)
        if not addresses:
            raise fail(source, f"{field} is an empty list", addresses,
                        f'Add at least one "host:port" address, or remove the "{job}" job.')
        for i, address in enumerate(addresses):
            key = _check_address(address, f"{field}[{i}]", source)
            if key in seen:
                raise fail(source, f"{field}[{i}] has the same address as {seen[key]}", address,
                            "Give every task its own host:port.")
            seen[key] = f"{field}[{i}]"
        jobs[job] = tuple(addresses)
    if len(jobs.get("chief", ())) > 1:
        raise fail(source, f"cluster.chief has {len(jobs['chief'])} addresses", jobs["chief"],
                    'A cluster has at most one chief; move the others to "worker".')
    if "chief" not in jobs and "worker" not in jobs:
        raise fail(source, 'cluster has no "chief" or "worker" job', list(jobs),
                    'Add a "worker" (or "chief") job to train on.')
    if "ps" in jobs and "chief" not in jobs:
        raise fail(source, 'cluster has a "ps" job but no "chief"', list(jobs),
                    'Parameter-server training needs a coordinator: add "chief": ["host:port"].')
    return jobs


def _check_address(address: Any, field: str, source: str) -> tuple[str, int]:
    """Validates one "host:port"; returns (lower-cased host, port) to detect duplicates."""
    if not isinstance(address, str):
        raise fail(source, f'{field} must be a "host:port" string, got {kind(address)}', address,
                    'Quote it and include the host, e.g. "localhost:2222".')

    def bad(problem: str, fix: str = _ADDRESS_FIX) -> ClusterConfigError:
        return fail(source, f"{field} {problem}", address, fix)

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
            raise bad(f"has an invalid IPv6 host {show(host)}", _IPV6_FIX) from None
    else:
        host, colon, port = address.rpartition(":")
        if not colon:
            raise bad("has no port")
        if not host:
            raise bad("has an empty host")
        if ":" in host:
            raise bad("has an IPv6 host without brackets", f'Bracket the host: "[{host}]:{port}".')
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", host):
            raise bad(f"has an invalid host {show(host)}", "Use letters, digits, dots, dashes, underscores.")
    if not re.fullmatch(r"[0-9]+", port):
        raise bad(f"has a non-numeric port {show(port)}" if port else "has an empty port")
    if not 1 <= int(port) <= 65535:
        raise bad(f"has port {int(port)} out of range", "Use a port between 1 and 65535.")
    return host.lower(), int(port)


def _check_task(config: Mapping[str, Any], jobs: Mapping[str, tuple], source: str) -> tuple[str, int]:
    if "task" not in config:
        raise fail(source, '"task" is missing (top-level keys shown)', sorted(map(str, config)),
                    'Add "task": {"type": "worker", "index": 0} naming this process\'s role.')
    task = config["task"]
    if not isinstance(task, Mapping):
        raise fail(source, f"task must be an object, got {kind(task)}", task, _TASK_FIX)
    for key in ("type", "index"):
        if key not in task:
            raise fail(source, f"task.{key} is missing", task, _TASK_FIX)
    task_type, index = task["type"], task["index"]
    if not isinstance(task_type, str):
        raise fail(source, f"task.type must be a string, got {kind(task_type)}", task_type, _TASK_FIX)
    _check_job_name(task_type, "task.type is not a known job", source)
    # Only an evaluator may run outside the cluster (it joins no collective).
    if task_type not in jobs and task_type != "evaluator":
        raise fail(source, f"task.type is not a job in cluster (cluster has {', '.join(jobs)})",
                    task_type, f'Use one of those jobs, or add "{task_type}": ["host:port"] to cluster.')
    if isinstance(index, bool) or not isinstance(index, int):
        quoted = isinstance(index, str) and re.fullmatch(r"\s*[0-9]+\s*", index)
        fix = f'Use an integer without quotes: "index": {int(index)}.' if quoted else 'Use e.g. "index": 0.'
        raise fail(source, f"task.index must be an integer, got {kind(index)}", index, fix)
    if index < 0:
        raise fail(source, "task.index is negative", index, "Task indices start at 0.")
    count = len(jobs.get(task_type, ()))
    if task_type in jobs and index >= count:
        raise fail(source, f"task.index is out of range: cluster.{task_type} has {count} task(s)", index,
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
            raise fail("make_tf_config", f'{name} must be a sequence of "host:port" strings, got a string',
                        value, f"Wrap it in a list: [{show(value)}].")
    cluster = {"chief": [chief] if chief is not None else [], "worker": list(workers), "ps": list(ps),
               "evaluator": [evaluator] if evaluator is not None else []}
    config: dict[str, Any] = {"cluster": {job: addrs for job, addrs in cluster.items() if addrs},
                              "task": {"type": task_type, "index": task_id}}
    if rpc_layer is not None:
        config["rpc_layer"] = rpc_layer
    build(config, "make_tf_config")
    return json.dumps(config)


def hosts_to_addresses(hosts: Sequence[str], port: int) -> list[str]:
    """Appends ``:port`` to bare host names, leaving entries that already have a port.

    >>> hosts_to_addresses(["a", "b:9000", "::1", "[::2]"], 2222)
    ['a:2222', 'b:9000', '[::1]:2222', '[::2]:2222']
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail("hosts_to_addresses", "port is out of range", port, "Use a port between 1 and 65535.")
    if isinstance(hosts, str):
        raise fail("hosts_to_addresses", "hosts must be a sequence of host names, got a string", hosts,
                    f"Wrap it in a list: [{show(hosts)}].")
    addresses = []
    for host in hosts:
        if host.startswith("["):
            addresses.append(host if "]:" in host else f"{host}:{port}")
        elif host.count(":") > 1:  # a bare IPv6 literal: its colons are not a port
            addresses.append(f"[{host}]:{port}")
        else:
            addresses.append(host if ":" in host else f"{host}:{port}")
    return addresses

