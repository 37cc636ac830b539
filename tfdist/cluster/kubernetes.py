"""Sources on Kubernetes: a Kubeflow TFJob's TF_CONFIG, and a plain Indexed Job.

**TFJob** (kubeflow.org/v1): the operator writes TF_CONFIG into the container named
``tensorflow`` with hosts ``<job>-<type>-<i>.<namespace>.svc:<port>`` (FINDINGS §10);
`from_kubeflow` accepts its spellings ("Master", capitalised types).

**Indexed Job + headless Service** (no operator needed): Kubernetes gives each pod
``JOB_COMPLETION_INDEX`` and, with ``subdomain: <service>``, the DNS name
``<job>-<index>.<service>.<namespace>.svc``. The manifest (``tfdist-launch --emit
kubernetes-job``) sets the variables below, and `from_indexed_job` turns them into the cluster:
indexes run over the tasks in canonical order (chief, workers, ps, evaluator), and the
evaluator, if any, gets no address (it is kept out of the training cluster).

=====================  ==================================================================
``JOB_COMPLETION_INDEX``  this pod's index (set by Kubernetes)
``TFDIST_K8S_TASKS``      the layout, e.g. ``chief:1,worker:3,evaluator:1``
``TFDIST_K8S_JOB``        the Job's name (pod host names are ``<job>-<index>``)
``TFDIST_K8S_SERVICE``    the headless Service (the pods' subdomain)
``TFDIST_K8S_NAMESPACE``  the namespace (the manifest reads it through the downward API)
``TFDIST_K8S_PORT``       the gRPC port of every task; defaults to 2222
=====================  ==================================================================
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from tfdist.cluster.spec import JOB_NAMES, MISSING, ClusterInfo, build, fail, show
from tfdist.cluster.tf_config import load

__all__ = ["DEFAULT_PORT", "INDEX_VAR", "JOB_VAR", "NAMESPACE_VAR", "PORT_VAR", "SERVICE_VAR",
           "TASKS_VAR", "format_tasks", "from_indexed_job", "from_kubeflow", "is_indexed_job",
           "parse_tasks", "pod_roles"]

DEFAULT_PORT = 2222  # Kubeflow's TFJob port, used for the Indexed Job too
INDEX_VAR = "JOB_COMPLETION_INDEX"
TASKS_VAR = "TFDIST_K8S_TASKS"
JOB_VAR = "TFDIST_K8S_JOB"
SERVICE_VAR = "TFDIST_K8S_SERVICE"
NAMESPACE_VAR = "TFDIST_K8S_NAMESPACE"
PORT_VAR = "TFDIST_K8S_PORT"
_SOURCE = "KUBERNETES"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_TASKS_FIX = 'Use e.g. "chief:1,worker:3,evaluator:1" (jobs chief, worker, ps, evaluator).'


def _tfjob_name(name: Any) -> Any:
    if not isinstance(name, str):
        return name  # left for validation to report
    return "chief" if name.lower() == "master" else name.lower()


def from_kubeflow(tf_config: str | Mapping[str, Any] | None = None, *,
                  environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves a Kubeflow TFJob TF_CONFIG.

    Older TFJobs call the coordinator "master" and some capitalise replica types, so job and task
    type names are lower-cased and "master" becomes "chief" before validation.

    Raises:
        ClusterConfigError: If the config is invalid after normalisation.
    """
    config = load(tf_config, environ)
    if config is None:
        return ClusterInfo()
    if isinstance(config.get("cluster"), Mapping):
        renamed: dict[Any, Any] = {}
        for job, addresses in config["cluster"].items():
            if _tfjob_name(job) in renamed:
                raise fail("TF_CONFIG", f"cluster names job {show(_tfjob_name(job))} twice after TFJob "
                           "normalisation", list(config["cluster"]), "Keep one of the replica types.")
            renamed[_tfjob_name(job)] = addresses
        config["cluster"] = renamed
    if isinstance(config.get("task"), Mapping) and "type" in config["task"]:
        config["task"] = {**config["task"], "type": _tfjob_name(config["task"]["type"])}
    return build(config, "TF_CONFIG")


def format_tasks(counts: Mapping[str, int]) -> str:
    """The ``TFDIST_K8S_TASKS`` value for `counts`, e.g. ``{"chief": 1, "worker": 2}``."""
    return ",".join(f"{job}:{counts[job]}" for job in JOB_NAMES if counts.get(job))


def parse_tasks(text: str, var: str = TASKS_VAR) -> dict[str, int]:
    """Parses a ``TFDIST_K8S_TASKS`` value into task counts in canonical job order.

    Raises:
        ClusterConfigError: Naming `var`, for a malformed entry, an unknown or repeated job,
            more than one chief or evaluator, or no chief and no worker.
    """
    counts: dict[str, int] = {}
    for entry in text.split(","):
        match = re.fullmatch(r"\s*([a-z]+)\s*:\s*([0-9]+)\s*", entry)
        if not match:
            raise fail(_SOURCE, f"{var} has a malformed entry {show(entry)}", text, _TASKS_FIX)
        job, count = match[1], int(match[2])
        if job not in JOB_NAMES:
            raise fail(_SOURCE, f"{var} names an unknown job {show(job)}", text, _TASKS_FIX)
        if job in counts:
            raise fail(_SOURCE, f"{var} names job {show(job)} twice", text, _TASKS_FIX)
        counts[job] = count
    for job in ("chief", "evaluator"):
        if counts.get(job, 0) > 1:
            raise fail(_SOURCE, f"{var} asks for {counts[job]} {job} tasks", text,
                       f"A job has at most one {job}.")
    if not counts.get("chief") and not counts.get("worker"):
        raise fail(_SOURCE, f"{var} has no chief and no worker", text, _TASKS_FIX)
    return {job: counts[job] for job in JOB_NAMES if counts.get(job)}


def pod_roles(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """(task type, task index) of each pod index: chief, workers, ps, then the evaluator."""
    return [(job, i) for job in JOB_NAMES for i in range(counts.get(job, 0))]


def is_indexed_job(environ: Mapping[str, str] | None = None) -> bool:
    """True when the tfdist Indexed Job variables are present (``TFDIST_K8S_TASKS`` is set)."""
    env = os.environ if environ is None else environ
    return bool(env.get(TASKS_VAR, "").strip())


def from_indexed_job(environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Builds the cluster of a pod of a tfdist Indexed Job from its environment.

    Args:
        environ: Environment to read; defaults to ``os.environ``.

    Returns:
        This pod's place: addresses ``<job>-<index>.<service>.<namespace>.svc:<port>`` for every
        task but the evaluator.

    Raises:
        ClusterConfigError: Naming the variable that is missing or malformed.
    """
    env = os.environ if environ is None else environ

    def get(name: str, default: str | None = None) -> str:
        value = env.get(name, "").strip()
        if value:
            return value
        if default is not None:
            return default
        raise fail(_SOURCE, f"{name} is not set", MISSING,
                   "Run in a pod of the tfdist Indexed Job manifest (tfdist-launch --emit "
                   "kubernetes-job), or set the variable.")

    counts = parse_tasks(get(TASKS_VAR))
    roles = pod_roles(counts)
    index_text = get(INDEX_VAR)
    if not re.fullmatch(r"[0-9]+", index_text) or int(index_text) >= len(roles):
        raise fail(_SOURCE, f"{INDEX_VAR} must be an integer from 0 to {len(roles) - 1} for "
                   f"{TASKS_VAR}={format_tasks(counts)}", index_text,
                   "Set completions and parallelism to the number of tasks and completionMode: Indexed.")
    names = {}
    for var in (JOB_VAR, SERVICE_VAR, NAMESPACE_VAR):
        names[var] = get(var)
        if len(names[var]) > 63 or not _DNS_LABEL.fullmatch(names[var]):
            raise fail(_SOURCE, f"{var} is not a DNS label", names[var],
                       "Use at most 63 lower-case letters, digits and '-', starting and ending "
                       "with a letter or digit.")
    longest = f"{names[JOB_VAR]}-{len(roles) - 1}"
    if len(longest) > 63:
        raise fail(_SOURCE, f"{JOB_VAR} is too long: pod host name {show(longest)} exceeds 63 characters",
                   names[JOB_VAR], "Use a shorter Job name.")
    port_text = get(PORT_VAR, str(DEFAULT_PORT))
    if not re.fullmatch(r"[0-9]+", port_text) or not 1 <= int(port_text) <= 65535:
        raise fail(_SOURCE, f"{PORT_VAR} must be a port between 1 and 65535", port_text, "Use e.g. 2222.")
    domain = f"{names[SERVICE_VAR]}.{names[NAMESPACE_VAR]}.svc"
    cluster: dict[str, list[str]] = {}
    for index, (job, _) in enumerate(roles):
        if job != "evaluator":
            cluster.setdefault(job, []).append(f"{names[JOB_VAR]}-{index}.{domain}:{port_text}")
    task_type, task_id = roles[int(index_text)]
    return build({"cluster": cluster, "task": {"type": task_type, "index": task_id}}, _SOURCE)


