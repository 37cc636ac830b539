"""Kubernetes: manifests from `tfdist-launch --emit`, checked with the official client's models,
and the TF_CONFIG each pod would get, produced by the pod's own command (the tfdist wrapper)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
k8s_client = pytest.importorskip("kubernetes.client")

from tests.multiworker import PYTHONPATH  # noqa: E402
from tfdist import cluster  # noqa: E402
from tfdist.cluster import kubernetes as k8s_source  # noqa: E402
from tfdist.launch import kubernetes  # noqa: E402
from tfdist.launch.errors import LaunchError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
PRINT_TF_CONFIG = ["python", "-c", "import os; print(os.environ['TF_CONFIG'])"]

# name -> (flags, intended layout {job: count})
LAYOUTS = {
    "two-workers": (["--workers", "2"], {"worker": 2}),
    "chief-3workers-eval": (["--chief", "--workers", "3", "--evaluator"],
                            {"chief": 1, "worker": 3, "evaluator": 1}),
    "chief-2workers-ps": (["--chief", "--workers", "2", "--ps", "1"], {"chief": 1, "worker": 2, "ps": 1}),
}


def emit(kind, flags, name="mnist", namespace="team-a", extra=()):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    result = subprocess.run(
        [sys.executable, "-m", "tfdist.launch", "--emit", kind, "--image", "registry.example/mnist:1",
         "--name", name, "--namespace", namespace, "--cpu", "2", "--memory", "4Gi", *extra, *flags,
         "--", *PRINT_TF_CONFIG], env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def run_pod(container, env):
    """Runs the container's command as the pod would (with `python` = this interpreter)."""
    command = [sys.executable if arg == "python" else arg for arg in container["command"]]
    result = subprocess.run(command, env={"PATH": os.environ["PATH"], "PYTHONPATH": PYTHONPATH, **env},
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def intended(layout, address):
    """The training cluster the layout should give: every job but the evaluator."""
    return {job: [address(job, i) for i in range(n)] for job, n in layout.items() if job != "evaluator"}


def deserialize(doc, model):
    return k8s_client.ApiClient().deserialize(json.dumps(doc), model, "application/json")


@pytest.mark.parametrize("name", LAYOUTS)
def test_indexed_job_pods_get_the_intended_cluster(name):
    flags, layout = LAYOUTS[name]
    service_doc, job_doc = emit("kubernetes-job", flags)
    service, job = deserialize(service_doc, "V1Service"), deserialize(job_doc, "V1Job")
    roles = [(j, i) for j in cluster.JOB_NAMES for i in range(layout.get(j, 0))]
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == job.spec.parallelism == len(roles)
    assert service.spec.cluster_ip == "None" and service.spec.publish_not_ready_addresses
    pod = job.spec.template
    assert pod.spec.subdomain == service.metadata.name == "mnist"
    assert service.spec.selector.items() <= pod.metadata.labels.items()
    assert pod.spec.restart_policy == "Never"
    (container,) = pod.spec.containers
    assert container.name == "tensorflow" and container.resources.limits == {"cpu": "2", "memory": "4Gi"}
    rules = job.spec.pod_failure_policy.rules
    assert rules[0].action == "FailJob" and rules[0].on_exit_codes.values == list(range(1, 128))
    if "ps" in layout:  # servers never exit: done when the chief succeeds
        assert job.spec.success_policy.rules[0].succeeded_indexes == "0"
    else:
        assert job.spec.success_policy is None

    # Each pod: the literal env of the manifest, the namespace the downward API gives, its index.
    env = {e["name"]: e["value"] for e in job_doc["spec"]["template"]["spec"]["containers"][0]["env"]
           if "value" in e}
    env[k8s_source.NAMESPACE_VAR] = service.metadata.namespace
    expected = intended(layout, lambda j, i: f"mnist-{roles.index((j, i))}.mnist.team-a.svc:2222")
    for index, (task_type, task_id) in enumerate(roles):
        pod_env = {**env, "JOB_COMPLETION_INDEX": str(index)}
        tf_config = run_pod(job_doc["spec"]["template"]["spec"]["containers"][0], pod_env)
        assert tf_config == {"cluster": expected, "task": {"type": task_type, "index": task_id}}
        # The cluster layer reads the same variables directly, without the wrapper, too.
        info = cluster.resolve(environ=pod_env)
        assert info.cluster_spec == expected and (info.task_type, info.task_id) == (task_type, task_id)


def operator_tf_config(tfjob, rtype, index):
    """What the Kubeflow training operator writes into the `tensorflow` container (FINDINGS §10):
    every replica type, lower-cased, as `<job>-<type>-<i>.<ns>.svc:<port>`, evaluator included."""
    meta = tfjob["metadata"]
    specs = tfjob["spec"]["tfReplicaSpecs"]
    cluster_spec = {}
    for rt, spec in specs.items():
        port = spec["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        cluster_spec[rt.lower()] = [f"{meta['name']}-{rt.lower()}-{i}.{meta['namespace']}.svc:{port}"
                                    for i in range(spec["replicas"])]
    return {"cluster": cluster_spec, "task": {"type": rtype.lower(), "index": index}, "environment": "cloud"}


@pytest.mark.parametrize("name", LAYOUTS)
def test_tfjob_pods_get_the_intended_cluster(name):
    flags, layout = LAYOUTS[name]
    (tfjob,) = emit("tfjob", flags)
    assert tfjob["apiVersion"] == "kubeflow.org/v1" and tfjob["kind"] == "TFJob"
    specs = tfjob["spec"]["tfReplicaSpecs"]
    types = {"chief": "Chief", "worker": "Worker", "ps": "PS", "evaluator": "Evaluator"}
    assert {rt: s["replicas"] for rt, s in specs.items()} == {types[j]: n for j, n in layout.items()}
    expected = intended(layout, lambda j, i: f"mnist-{j}-{i}.team-a.svc:2222")
    for rtype, spec in specs.items():
        assert spec["restartPolicy"] == "ExitCode"
        template = deserialize(spec["template"], "V1PodTemplateSpec")
        assert [c.name for c in template.spec.containers] == ["tensorflow"]
        for index in range(spec["replicas"]):
            written = operator_tf_config(tfjob, rtype, index)
            assert cluster.from_kubeflow(written).task_type == rtype.lower()
            tf_config = run_pod(spec["template"]["spec"]["containers"][0], {"TF_CONFIG": json.dumps(written)})
            assert tf_config["cluster"] == expected  # the evaluator is out of the training cluster
            assert tf_config["task"] == {"type": rtype.lower(), "index": index}
            assert cluster.resolve(json.dumps(tf_config)).cluster_spec == expected


def test_validate_catches_a_misspelt_field():
    m = kubernetes.Manifest(name="a", image="i", command=("true",), num_workers=2)
    service, job = kubernetes.indexed_job(m)
    job["spec"]["completion"] = 2  # not a Job field: the client's model drops it
    with pytest.raises(LaunchError, match="V1Job dropped or changed fields"):
        kubernetes.validate([service, job])
    del job["spec"]["completion"]
    del job["spec"]["template"]["spec"]["containers"][0]["name"]  # required by V1Container
    with pytest.raises(LaunchError, match="not a valid V1Job.*name"):
        kubernetes.validate([service, job])


@pytest.mark.parametrize("kwargs, expected", [
    (dict(name="My_Job"), "Invalid value for argument `name`. Received: name='My_Job'"),
    (dict(namespace=""), "Invalid value for argument `namespace`"),
    (dict(image=""), "Invalid value for argument `image`"),
    (dict(num_ps=1), "parameter servers (--ps) need a chief"),
    (dict(command=()), "no command given"),
    (dict(num_workers=0), "Invalid value for argument `num_workers`. Received: num_workers=0"),
    (dict(num_workers=True), "Invalid value for argument `num_workers`. Received: num_workers=True"),
    (dict(gpus=-1), "Invalid value for argument `gpus`. Received: gpus=-1. Pass a non-negative integer"),
    (dict(max_restarts=-1), "Invalid value for argument `max_restarts`. Received: max_restarts=-1"),
])
def test_manifest_rejects(kwargs, expected):
    args = {"name": "a", "image": "i", "command": ("true",), **kwargs}
    with pytest.raises(LaunchError) as info:
        kubernetes.Manifest(**args)
    assert expected in str(info.value)


@pytest.mark.parametrize("flags, expected", [
    (["--emit", "tfjob", "--", "true"], "--emit needs --image"),
    (["--emit", "tfjob", "--image", "i", "--hosts", "a,b", "--host-index", "0", "--", "true"],
     "drop --hosts, --host-index"),
    (["--image", "i", "--", "true"], "--image only applies with --emit"),
    (["--emit", "helm", "--image", "i", "--", "true"], "invalid choice: 'helm'"),
])
def test_emit_cli_errors(flags, expected):
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    result = subprocess.run([sys.executable, "-m", "tfdist.launch", *flags], env=env, capture_output=True,
                            text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def pod_env(**overrides):
    env = {"TFDIST_K8S_TASKS": "chief:1,worker:2", "TFDIST_K8S_JOB": "j", "TFDIST_K8S_SERVICE": "j",
           "TFDIST_K8S_NAMESPACE": "ns", "JOB_COMPLETION_INDEX": "1"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_from_indexed_job():
    info = cluster.from_indexed_job(pod_env(TFDIST_K8S_PORT="9000"))
    assert info.cluster_spec == {"chief": ["j-0.j.ns.svc:9000"], "worker": ["j-1.j.ns.svc:9000", "j-2.j.ns.svc:9000"]}
    assert (info.task_type, info.task_id, info.rank) == ("worker", 0, 1)
    evaluator = cluster.from_indexed_job(pod_env(TFDIST_K8S_TASKS="worker:2,evaluator:1", JOB_COMPLETION_INDEX="2"))
    assert evaluator.is_evaluator and "evaluator" not in evaluator.cluster_spec
    # TF_CONFIG, when set, wins; without the variables resolve() is local.
    assert cluster.resolve(environ={**pod_env(), "TF_CONFIG": "{}"}).is_local
    assert cluster.resolve(environ={}).is_local


@pytest.mark.parametrize("overrides, expected", [
    (dict(JOB_COMPLETION_INDEX=None), "KUBERNETES: JOB_COMPLETION_INDEX is not set; received nothing"),
    (dict(JOB_COMPLETION_INDEX="3"), 'JOB_COMPLETION_INDEX must be an integer from 0 to 2 for '
                                     'TFDIST_K8S_TASKS=chief:1,worker:2; received "3"'),
    (dict(TFDIST_K8S_TASKS="worker=2"), 'TFDIST_K8S_TASKS has a malformed entry "worker=2"'),
    (dict(TFDIST_K8S_TASKS="workers:2"), 'TFDIST_K8S_TASKS names an unknown job "workers"'),
    (dict(TFDIST_K8S_TASKS="worker:1,worker:2"), 'names job "worker" twice'),
    (dict(TFDIST_K8S_TASKS="chief:2"), "asks for 2 chief tasks"),
    (dict(TFDIST_K8S_TASKS="ps:1,evaluator:1"), "has no chief and no worker"),
    (dict(TFDIST_K8S_TASKS="worker:2,ps:1"), '"ps" job but no "chief"'),
    (dict(TFDIST_K8S_SERVICE=None), "TFDIST_K8S_SERVICE is not set"),
    (dict(TFDIST_K8S_NAMESPACE="Team_A"), 'TFDIST_K8S_NAMESPACE is not a DNS label; received "Team_A"'),
    (dict(TFDIST_K8S_JOB="j" * 62), "pod host name"),
    (dict(TFDIST_K8S_PORT="0"), 'TFDIST_K8S_PORT must be a port between 1 and 65535; received "0"'),
])
def test_from_indexed_job_rejects(overrides, expected):
    with pytest.raises(cluster.ClusterConfigError) as info:
        cluster.from_indexed_job(pod_env(**overrides))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_exec_wrapper_fails_the_pod_with_one_line():
    result = subprocess.run([sys.executable, "-m", "tfdist.cluster", "--exec", "--", "true"],
                            env={"PYTHONPATH": PYTHONPATH, **pod_env(JOB_COMPLETION_INDEX="7")},
                            capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: KUBERNETES: JOB_COMPLETION_INDEX must be")
