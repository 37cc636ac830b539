"""Kubernetes manifests for a tfdist job: ``tfdist-launch --emit tfjob|kubernetes-job``.

Two forms, both with one container named ``tensorflow`` per pod, the command wrapped in
``python -m tfdist.cluster ... --exec --`` so the evaluator is kept out of the training cluster
and a bad cluster fails the pod at once with one line (exit 2):

- ``tfjob``: a Kubeflow ``TFJob`` (kubeflow.org/v1). The operator writes TF_CONFIG
  (FINDINGS §10); ``restartPolicy: ExitCode`` retries exit codes 128-255 (signals, preemption)
  and treats 1-127 as permanent.
- ``kubernetes-job``: an Indexed ``Job`` plus a headless ``Service``, for clusters without
  Kubeflow. Each pod builds TF_CONFIG from ``JOB_COMPLETION_INDEX`` and the Service's DNS names
  (`tfdist.cluster.kubernetes.from_indexed_job`). A pod failure policy gives the same exit-code
  contract as ``ExitCode``, and with parameter servers the Job succeeds when the chief (and the
  evaluator) succeed, as under tfdist-launch.

Manifests are plain dicts; `validate` checks them with the official ``kubernetes`` client's
models (``pip install tfdist[kubernetes]``). No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from tfdist import checks
from tfdist.cluster import kubernetes as k8s_source
from tfdist.launch.errors import LaunchError

__all__ = ["KINDS", "Manifest", "indexed_job", "render", "tfjob", "validate"]

KINDS = ("tfjob", "kubernetes-job")
CONTAINER = "tensorflow"  # the container the TFJob operator writes TF_CONFIG into
_TFJOB_TYPES = {"chief": "Chief", "worker": "Worker", "ps": "PS", "evaluator": "Evaluator"}
_PERMANENT_EXIT_CODES = list(range(1, 128))  # as TFJob's restartPolicy ExitCode
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What to emit: the job's shape, its container and its Kubernetes names.

    Attributes:
        name: Job name (also the Service and the pods' host-name prefix); a DNS label.
        image: Container image with TensorFlow and tfdist installed.
        command: The training command, e.g. ``("python", "train.py")``.
        num_workers: Worker pods. Defaults to 1.
        chief: Add a chief pod. Defaults to False.
        num_ps: Parameter-server pods (needs `chief`). Defaults to 0.
        evaluator: Add an evaluator pod, outside the training cluster. Defaults to False.
        namespace: Namespace. Defaults to "default".
        port: gRPC port of every pod. Defaults to 2222.
        cpu, memory: Resource requests (and limits), e.g. "2" and "4Gi"; None leaves them out.
        gpus: ``nvidia.com/gpu`` limit per pod; 0 leaves it out. Defaults to 0.
        max_restarts: Group restarts the engine may do after retryable failures. Defaults to 0.
    """

    name: str
    image: str
    command: tuple[str, ...]
    num_workers: int = 1
    chief: bool = False
    num_ps: int = 0
    evaluator: bool = False
    namespace: str = "default"
    port: int = k8s_source.DEFAULT_PORT
    cpu: str | None = None
    memory: str | None = None
    gpus: int = 0
    max_restarts: int = 0

    def __post_init__(self) -> None:
        for field in ("name", "namespace"):
            value = getattr(self, field)
            if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.fullmatch(value):
                raise LaunchError(f"Invalid value for argument `{field}`. Received: {field}={value!r}. Use "
                                  "at most 63 lower-case letters, digits and '-' (a DNS label).")
        if not self.image:
            raise LaunchError("Invalid value for argument `image`. Received: image=''. Give the image that "
                              "has TensorFlow and tfdist installed (--image).")
        if not self.command:
            raise LaunchError("no command given for the pods; put it after '--'.")
        checks.positive_int("num_workers", self.num_workers, error=LaunchError)
        for field in ("num_ps", "gpus", "max_restarts"):
            checks.non_negative_int(field, getattr(self, field), error=LaunchError)
        object.__setattr__(self, "command", tuple(self.command))
        if self.num_ps and not self.chief:
            raise LaunchError("parameter servers (--ps) need a chief (--chief): it coordinates "
                              "parameter-server training.")
        if not 1 <= self.port <= 65535:
            raise LaunchError(f"port {self.port!r} is out of range; use 1 to 65535.")

    @property
    def counts(self) -> dict[str, int]:
        """Pods per job, in canonical order, zero counts left out."""
        counts = {"chief": int(self.chief), "worker": self.num_workers, "ps": self.num_ps,
                  "evaluator": int(self.evaluator)}
        return {job: n for job, n in counts.items() if n}


def _labels(m: Manifest) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tfdist", "tfdist/job": m.name}


def _container(m: Manifest, wrapper: Sequence[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": CONTAINER, "image": m.image,
        "command": ["python", "-m", "tfdist.cluster", *wrapper, "--exec", "--", *m.command],
        "ports": [{"name": "tfjob-port", "containerPort": m.port}],  # the TFJob operator's port name
    }
    if env:
        container["env"] = env
    requests = {key: value for key, value in (("cpu", m.cpu), ("memory", m.memory)) if value}
    limits = dict(requests)
    if m.gpus:
        limits["nvidia.com/gpu"] = str(m.gpus)
    if requests or limits:
        container["resources"] = {key: value for key, value in
                                  (("requests", requests), ("limits", limits)) if value}
    return container


def tfjob(m: Manifest) -> list[dict[str, Any]]:
    """A Kubeflow TFJob for `m` (one document)."""
    specs = {}
    for job, count in m.counts.items():
        specs[_TFJOB_TYPES[job]] = {
            "replicas": count, "restartPolicy": "ExitCode",
            "template": {"metadata": {"labels": _labels(m)},
                         "spec": {"containers": [_container(m, ["--kubeflow"], [])]}}}
    return [{"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
             "metadata": {"name": m.name, "namespace": m.namespace, "labels": _labels(m)},
             "spec": {"runPolicy": {"cleanPodPolicy": "Running",
                                    "backoffLimit": m.max_restarts * sum(m.counts.values())},
                      "tfReplicaSpecs": specs}}]


def indexed_job(m: Manifest) -> list[dict[str, Any]]:
    """A headless Service and an Indexed Job for `m` (two documents)."""
    counts = m.counts
    roles = k8s_source.pod_roles(counts)
    env: list[dict[str, Any]] = [
        {"name": k8s_source.TASKS_VAR, "value": k8s_source.format_tasks(counts)},
        {"name": k8s_source.JOB_VAR, "value": m.name},
        {"name": k8s_source.SERVICE_VAR, "value": m.name},
        {"name": k8s_source.NAMESPACE_VAR,
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": k8s_source.PORT_VAR, "value": str(m.port)}]
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": m.name, "namespace": m.namespace, "labels": _labels(m)},
               "spec": {"clusterIP": "None", "selector": _labels(m),
                        "publishNotReadyAddresses": True,  # DNS names exist before pods are ready
                        "ports": [{"name": "grpc", "port": m.port, "targetPort": m.port}]}}
    spec: dict[str, Any] = {
        "completionMode": "Indexed", "completions": len(roles), "parallelism": len(roles),
        "backoffLimit": m.max_restarts * len(roles),
        "podFailurePolicy": {"rules": [
            {"action": "FailJob",
             "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": _PERMANENT_EXIT_CODES}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
        "template": {"metadata": {"labels": _labels(m)},
                     "spec": {"subdomain": m.name, "restartPolicy": "Never",
                              "containers": [_container(m, [], env)]}}}
    if m.num_ps:  # servers never finish: the job is done when the chief (and evaluator) are
        done = [str(i) for i, (job, _) in enumerate(roles) if job in ("chief", "evaluator")]
        spec["successPolicy"] = {"rules": [{"succeededIndexes": ",".join(done)}]}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": m.name, "namespace": m.namespace, "labels": _labels(m)}, "spec": spec}
    return [service, job]


def _round_trip(api: Any, data: dict[str, Any], model: str, where: str) -> None:
    """Deserializes `data` into the client's `model` and back; any loss is an unknown field."""
    try:
        obj = api.deserialize(json.dumps(data), model, "application/json")
    except (ValueError, TypeError) as exc:
        raise LaunchError(f"{where}: not a valid {model}: {exc}") from None
    back = api.sanitize_for_serialization(obj)
    if back != data:
        raise LaunchError(f"{where}: {model} dropped or changed fields; received {json.dumps(data)[:200]}")


def validate(documents: list[dict[str, Any]]) -> None:
    """Checks each document with the ``kubernetes`` client's models (V1Service, V1Job; a TFJob's
    metadata and pod templates), including a round trip that catches misspelt or unknown fields.

    Raises:
        LaunchError: A document does not validate, or the client is not installed.
    """
    try:
        from kubernetes.client import ApiClient  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LaunchError("--emit needs the kubernetes client: pip install 'tfdist[kubernetes]'") from None
    api = ApiClient()
    for doc in documents:
        kind = doc.get("kind")
        if kind in ("Service", "Job"):
            _round_trip(api, doc, f"V1{kind}", kind)
        elif kind == "TFJob":
            if doc.get("apiVersion") != "kubeflow.org/v1":
                raise LaunchError("TFJob: apiVersion must be kubeflow.org/v1; received "
                                  f"{doc.get('apiVersion')!r}")
            _round_trip(api, doc["metadata"], "V1ObjectMeta", "TFJob metadata")
            specs = doc["spec"]["tfReplicaSpecs"]
            for rtype, spec in specs.items():
                if rtype not in _TFJOB_TYPES.values() or spec.get("restartPolicy") != "ExitCode":
                    raise LaunchError(f"TFJob: bad replica spec {rtype!r}")
                if not isinstance(spec.get("replicas"), int) or spec["replicas"] < 1:
                    raise LaunchError(f"TFJob: {rtype}.replicas must be a positive integer")
                _round_trip(api, spec["template"], "V1PodTemplateSpec", f"TFJob {rtype} template")
                names = [c["name"] for c in spec["template"]["spec"]["containers"]]
                if CONTAINER not in names:
                    raise LaunchError(f"TFJob: {rtype} has no container named {CONTAINER!r}")
        else:
            raise LaunchError(f"unexpected manifest kind {kind!r}")


def render(kind: str, m: Manifest) -> str:
    """The manifests of `kind` for `m` as validated YAML, ready for ``kubectl apply -f -``."""
    try:
        import yaml  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LaunchError("--emit needs PyYAML: pip install 'tfdist[kubernetes]'") from None
    if kind not in KINDS:
        raise LaunchError(f"--emit must be one of {', '.join(KINDS)}; received {kind!r}")
    documents = tfjob(m) if kind == "tfjob" else indexed_job(m)
    validate(documents)
    # Flow style for leaf lists keeps commands and the exit-code list on one line each.
    return yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=None, width=100)
