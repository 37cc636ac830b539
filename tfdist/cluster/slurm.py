"""Source: a Slurm job step (``srun``), parsed with python-hostlist.

The one Slurm parser of tfdist: `from_slurm` (one TensorFlow task per Slurm task) and
``tfdist-launch --slurm`` (one launcher per node, `nodes`) both read the environment here.

Unlike TensorFlow's ``SlurmClusterResolver`` (FINDINGS §11), hosts stay in Slurm's order (no
lexicographic sort, so ``n9`` comes before ``n10`` as Slurm ranks them), any number of bracket
groups per name is expanded (``rack[1-2]-n[01-04]``), zero padding is kept, and nothing probes
for GPUs (no ``nvidia-smi``), so CPU-only nodes work.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import hostlist

from tfdist.cluster.spec import MISSING, ClusterInfo, build, fail, show

__all__ = ["expand_hostlist", "from_slurm", "node_index", "nodes", "tasks_per_node"]

_HOSTLIST_FIX = 'Use hostlist syntax, e.g. "node[01-03,07],gpu-a[1-2]".'
_TASKS_FIX = 'Use Slurm syntax, e.g. "2(x3),1" for 2,2,2,1 tasks.'
# python-hostlist's reasons, in our wording.
_REASONS = {"unbalanced brackets": "has unbalanced brackets", "nested brackets": "has nested brackets",
            "bad range": "has a malformed range", "start > stop": "has a range that runs backwards"}


def expand_hostlist(text: str, var: str = "hostlist") -> list[str]:
    """Expands a Slurm compressed hostlist in Slurm's order, preserving zero padding.

    >>> expand_hostlist("node[01-03,07],gpu-a[1-2]")
    ['node01', 'node02', 'node03', 'node07', 'gpu-a1', 'gpu-a2']

    Args:
        text: The hostlist, e.g. the value of ``SLURM_JOB_NODELIST``.
        var: Names the hostlist in error messages. Defaults to "hostlist".

    Raises:
        ClusterConfigError: If the hostlist is malformed.
    """
    text = text.strip()
    if any(not entry.strip() for entry in _top_level_entries(text)):
        raise fail("SLURM", f"{var} has an empty entry", text, _HOSTLIST_FIX)
    try:
        # Duplicates kept so validation names them; sort=False keeps Slurm's rank order.
        return hostlist.expand_hostlist(text, allow_duplicates=True, sort=False)
    except hostlist.BadHostlist as exc:
        reason = _REASONS.get(str(exc), f"is malformed ({exc})")
        raise fail("SLURM", f"{var} {reason}", text, _HOSTLIST_FIX) from None


def _top_level_entries(text: str) -> list[str]:
    """Splits at commas outside brackets (python-hostlist skips empty entries; we reject them)."""
    entries, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            entries.append(text[start:i])
            start = i + 1
    return [*entries, text[start:]]


def _get(env: Mapping[str, str], *names: str) -> tuple[str, str]:
    """The first of `names` that is set and not blank, as (name, stripped value)."""
    for name in names:
        if env.get(name, "").strip():
            return name, env[name].strip()
    raise fail("SLURM", f"{' or '.join(names)} is not set", MISSING,
               "Run inside a Slurm job step (srun), or set the variable.")


def _integer(name: str, value: str, minimum: int) -> int:
    if not re.fullmatch(r"[0-9]+", value) or int(value) < minimum:
        raise fail("SLURM", f"{name} must be an integer >= {minimum}", value, "Check the srun/sbatch launch.")
    return int(value)


def nodes(environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """This step's nodes in Slurm's order, as (variable read, host names).

    Raises:
        ClusterConfigError: Neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is usable.
    """
    env = os.environ if environ is None else environ
    var, text = _get(env, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
    return var, expand_hostlist(text, var)


def node_index(environ: Mapping[str, str] | None = None) -> tuple[str, list[str], int]:
    """This step's nodes and this node's index in them, as (variable read, host names, index).

    Raises:
        ClusterConfigError: The node list is unusable, or SLURM_NODEID is missing, malformed or
            out of range for it.
    """
    env = os.environ if environ is None else environ
    var, hosts = nodes(env)
    index = _integer(*_get(env, "SLURM_NODEID"), 0)
    if index >= len(hosts):
        raise fail("SLURM", f"SLURM_NODEID does not index the {len(hosts)} host(s) of {var}", str(index),
                   "Use the variables of one job step so they describe the same nodes.")
    return var, hosts, index


def tasks_per_node(environ: Mapping[str, str] | None = None) -> tuple[str, list[int]]:
    """Tasks on each node, as (variable read, counts): ``"3(x2),2,1"`` gives ``[3, 3, 2, 1]``.

    Raises:
        ClusterConfigError: The variable is missing or malformed.
    """
    env = os.environ if environ is None else environ
    var, text = _get(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
    try:
        counts = hostlist.parse_slurm_tasks_per_node(text)
    except hostlist.BadHostlist:
        counts = None
    if counts is None or not counts or min(counts) < 1:
        entry = re.compile(r"\s*[1-9][0-9]*(\(x[1-9][0-9]*\))?\s*")  # to name the bad one
        bad = next((e for e in text.split(",") if not entry.fullmatch(e)), text)
        raise fail("SLURM", f"{var} has a malformed entry {show(bad)}", text, _TASKS_FIX)
    return var, counts


def from_slurm(environ: Mapping[str, str] | None = None, *, port: int = 8888) -> ClusterInfo:
    """Builds the cluster from a Slurm job step; every task is a worker and rank 0 is the chief.

    Tasks sharing a node get consecutive ports ``port, port + 1, ...``. ``SLURM_PROCID`` becomes
    the worker index, so TensorFlow's ranks are Slurm's. That needs Slurm's default block
    distribution (consecutive ranks per node); when ``SLURM_NODEID`` shows another distribution
    the error says so. Step variables win over job variables since they describe the running
    srun step.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        port: Port of the first task on each node. Defaults to 8888.

    Raises:
        ClusterConfigError: Naming the variable that is missing, malformed or inconsistent.
    """
    env = os.environ if environ is None else environ
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise fail("SLURM", "port is out of range", port, "Use a port between 1 and 65535.")
    nodes_var, hosts = nodes(env)
    procid = _integer(*_get(env, "SLURM_PROCID"), 0)
    ntasks = _integer(*_get(env, "SLURM_NTASKS"), 1)
    tpn_var, counts = tasks_per_node(env)
    if procid >= ntasks:
        raise fail("SLURM", f"SLURM_PROCID is out of range for SLURM_NTASKS={ntasks}", str(procid),
                   f"Use a rank between 0 and {ntasks - 1}.")
    if len(counts) != len(hosts):
        raise fail("SLURM", f"{tpn_var} describes {len(counts)} node(s) but {nodes_var} lists {len(hosts)}",
                   env[tpn_var].strip(), "Use the variables of one job step so they describe the same nodes.")
    if sum(counts) != ntasks:
        raise fail("SLURM", f"{tpn_var} adds up to {sum(counts)} tasks but SLURM_NTASKS is {ntasks}",
                   env[tpn_var].strip(), "Use the variables of one job step so they agree.")
    if port + max(counts) - 1 > 65535:
        raise fail("SLURM", f"port + tasks per node exceeds 65535 ({max(counts)} tasks on a node)", port,
                   "Use a lower port.")
    owners = [node for node, count in enumerate(counts) for _ in range(count)]  # block distribution
    if env.get("SLURM_NODEID", "").strip():
        _, _, node_id = node_index(env)
        if node_id != owners[procid]:
            raise fail("SLURM", f"SLURM_NODEID is {node_id} but rank {procid} belongs on node "
                       f"{owners[procid]} ({hosts[owners[procid]]}) under block distribution",
                       str(node_id), "Run srun with --distribution=block (SLURM_DISTRIBUTION is "
                       f"{show(env.get('SLURM_DISTRIBUTION', MISSING))}) so each node's ranks are "
                       "consecutive.")
    workers = [f"{host}:{port + k}" for host, count in zip(hosts, counts) for k in range(count)]
    return build({"cluster": {"worker": workers}, "task": {"type": "worker", "index": procid}}, "SLURM")

