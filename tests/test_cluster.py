"""Tests for tfdist.cluster: TF_CONFIG / Slurm / Kubeflow resolution, validation and the CLI."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.multiworker import PYTHONPATH
from tfdist import cluster
from tfdist.cluster import ClusterConfigError, ClusterInfo

REPO_ROOT = Path(__file__).resolve().parents[1]


def tf(cluster_spec, task=("worker", 0), **extra) -> str:
    """TF_CONFIG JSON for `cluster_spec`, with task (type, index) and extra top-level keys."""
    return json.dumps({"cluster": cluster_spec, "task": {"type": task[0], "index": task[1]}, **extra})


TWO_WORKERS = {"worker": ["localhost:2222", "localhost:2223"]}

# (name, TF_CONFIG, substrings the one-line message must contain: field, received value, fix).
INVALID = [
    ("json_syntax", '{"cluster": {"worker": ["a:1"]},}',
     ["invalid JSON", "Expecting property name", "line 1, column 33 (char 32)",
      """received '{"cluster": {"worker": ["a:1"]},}'""", "double quotes"]),
    ("json_single_quotes", "{'cluster': {}}", ["invalid JSON", "line 1, column 2", "double quotes"]),
    ("top_level_array", '["localhost:2222"]',
     ["top level must be a JSON object", "got an array", 'received ["localhost:2222"]', '"cluster"']),
    ("top_level_string", '"worker"',
     ["top level must be a JSON object", "got a string", 'received "worker"']),
    ("cluster_missing", json.dumps({"task": {"type": "worker", "index": 0}}),
     ['"cluster" is missing', 'received ["task"]', 'Add "cluster"']),
    ("cluster_not_object", tf(["localhost:2222"]),
     ["cluster must be an object", "got an array", 'received ["localhost:2222"]', 'e.g. "cluster"']),
    ("cluster_empty", tf({}), ["cluster is empty", "received {}", "List at least one job"]),
    ("job_master", tf({"master": ["a:1"], "worker": ["b:1"]}),
     ["unknown job name", 'received "master"', 'Rename it to "chief"', "from_kubeflow"]),
    ("job_typo", tf({"workers": ["a:1"]}),
     ["unknown job name", 'received "workers"', 'Did you mean "worker"?']),
    ("job_unknown", tf({"trainer": ["a:1"]}),
     ["unknown job name", 'received "trainer"', "Valid jobs: chief, worker, ps, evaluator"]),
    ("job_list_is_string", tf({"worker": "localhost:2222"}),
     ["cluster.worker must be a list", "got a string", 'Wrap it in a list: ["localhost:2222"]']),
    ("job_list_is_object", tf({"worker": {"a": 1}}), ["cluster.worker must be a list", "got an object"]),
    ("job_entry_not_string", tf({"worker": ["a:1", 2222]}),
     ["cluster.worker[1] must be a \"host:port\" string", "got a number", "received 2222", "Quote it"]),
    ("job_list_empty", tf({"worker": ["a:1"], "evaluator": []}, ("worker", 0)),
     ["cluster.evaluator is an empty list", "received []", 'remove the "evaluator" job']),
    ("address_no_port", tf({"worker": ["localhost"]}),
     ["cluster.worker[0] has no port", 'received "localhost"', '"host:port"']),
    ("address_empty_host", tf({"worker": [":2222"]}),
     ["cluster.worker[0] has an empty host", 'received ":2222"']),
    ("address_port_not_numeric", tf({"worker": ["localhost:http"]}),
     ['cluster.worker[0] has a non-numeric port "http"', 'received "localhost:http"']),
    ("address_port_empty", tf({"worker": ["localhost:"]}), ["has an empty port", 'received "localhost:"']),
    ("address_whitespace", tf({"worker": ["localhost :2222"]}),
     ["cluster.worker[0] contains whitespace", 'received "localhost :2222"', "Remove it"]),
    ("address_port_too_big", tf({"worker": ["localhost:2222", "localhost:70000"]}),
     ['TF_CONFIG: cluster.worker[1] has port 70000 out of range; received "localhost:70000". '
      "Use a port between 1 and 65535."]),
    ("address_port_zero", tf({"worker": ["localhost:0"]}),
     ["has port 0 out of range", "between 1 and 65535"]),
    ("address_ipv6_unbracketed", tf({"worker": ["::1:2222"]}),
     ["IPv6 host without brackets", 'received "::1:2222"', "[::1]:2222"]),
    ("address_ipv6_invalid", tf({"worker": ["[zz::1]:2222"]}), ['invalid IPv6 host "zz::1"', "[::1]:2222"]),
    ("address_ipv6_no_port", tf({"worker": ["[::1]"]}), ['has no "]:port"', 'received "[::1]"']),
    ("address_scheme", tf({"worker": ["grpc://localhost:2222"]}), ["URL scheme", '"rpc_layer": "grpc"']),
    ("address_bad_host", tf({"worker": ["local/host:2222"]}),
     ['invalid host "local/host"', "letters, digits"]),
    ("duplicate_across_jobs", tf({"chief": ["a:1"], "worker": ["b:1", "A:1"]}),
     ["cluster.worker[1] has the same address as cluster.chief[0]", 'received "A:1"', "its own host:port"]),
    ("duplicate_in_job", tf({"worker": ["a:1", "a:01"]}),
     ["cluster.worker[1] has the same address as cluster.worker[0]"]),
    ("two_chiefs", tf({"chief": ["a:1", "b:1"]}, ("chief", 0)),
     ["cluster.chief has 2 addresses", 'received ["a:1", "b:1"]', "at most one chief"]),
    ("ps_without_chief", tf({"worker": ["a:1"], "ps": ["b:1"]}),
     ['"ps" job but no "chief"', 'received ["worker", "ps"]', 'add "chief"']),
    ("evaluator_only", tf({"evaluator": ["a:1"]}, ("evaluator", 0)),
     ['no "chief" or "worker" job', 'received ["evaluator"]', 'Add a "worker"']),
    ("task_missing", json.dumps({"cluster": TWO_WORKERS}),
     ['"task" is missing', 'received ["cluster"]', 'Add "task"']),
    ("task_not_object", json.dumps({"cluster": TWO_WORKERS, "task": "worker"}),
     ["task must be an object", "got a string", 'received "worker"', '"task": {"type"']),
    ("task_type_missing", json.dumps({"cluster": TWO_WORKERS, "task": {"index": 0}}),
     ["task.type is missing", 'received {"index": 0}', '"type": "worker"']),
    ("task_index_missing", json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker"}}),
     ["task.index is missing", 'received {"type": "worker"}', '"index": 0']),
    ("task_type_not_string", tf(TWO_WORKERS, (1, 0)), ["task.type must be a string", "got a number"]),
    ("task_type_master", tf(TWO_WORKERS, ("master", 0)),
     ["task.type is not a known job", 'received "master"', 'Rename it to "chief"']),
    ("task_type_not_in_cluster", tf(TWO_WORKERS, ("chief", 0)),
     ["task.type is not a job in cluster (cluster has worker)", 'received "chief"', 'add "chief"']),
    ("index_bool", tf(TWO_WORKERS, ("worker", True)),
     ["task.index must be an integer", "got a boolean", "received true"]),
    ("index_string", tf(TWO_WORKERS, ("worker", "1")),
     ["task.index must be an integer", "got a string", 'received "1"', 'without quotes: "index": 1']),
    ("index_float", tf(TWO_WORKERS, ("worker", 1.5)),
     ["task.index must be an integer", "got a number", "received 1.5"]),
    ("index_negative", tf(TWO_WORKERS, ("worker", -1)),
     ["task.index is negative", "received -1", "start at 0"]),
    ("index_out_of_range", tf(TWO_WORKERS, ("worker", 2)),
     ["task.index is out of range: cluster.worker has 2 task(s)", "received 2", "between 0 and 1"]),
    ("rpc_layer_empty", tf(TWO_WORKERS, rpc_layer=""),
     ["rpc_layer must be a non-empty string", 'received ""', "grpc"]),
    ("rpc_layer_not_string", tf(TWO_WORKERS, rpc_layer=1),
     ["rpc_layer must be a non-empty string", "received 1"]),
    ("environment_not_string", tf(TWO_WORKERS, environment=["cloud"]),
     ["environment must be a string", "an array"]),
]


def assert_one_line_error(message: str, expected) -> None:
    assert "\n" not in message and "\r" not in message
    for part in expected:
        assert part in message


@pytest.mark.parametrize("name, config, expected", INVALID, ids=[case[0] for case in INVALID])
def test_resolve_rejects(name, config, expected):
    with pytest.raises(ClusterConfigError) as info:
        cluster.resolve(config)
    message = str(info.value)
    assert message.startswith("TF_CONFIG: ")
    assert_one_line_error(message, expected)
    assert isinstance(info.value, ValueError)


def run_cli(*args, tf_config=None, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PYTHONPATH, env.get("PYTHONPATH")]))
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "tfdist.cluster", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, config, expected", INVALID, ids=[case[0] for case in INVALID])
def test_cli_rejects(name, config, expected):
    result = run_cli(tf_config=config)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: TF_CONFIG: ")
    assert_one_line_error(lines[0], expected)


def test_error_has_no_newlines_even_for_odd_values():
    with pytest.raises(ClusterConfigError) as info:
        cluster.resolve(tf({"worker": ["local\nhost:2222"]}))
    assert "\n" not in str(info.value) and "whitespace" in str(info.value)
    assert "\n" not in str(ClusterConfigError("a\nb\r\nc"))


# ----------------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("environ", [{}, {"TF_CONFIG": ""}, {"TF_CONFIG": "  \n"}, {"TF_CONFIG": "{}"}])
def test_local_process(environ):
    info = cluster.resolve(environ=environ)
    assert (info.task_type, info.task_id, info.cluster_spec) == ("worker", 0, {})
    assert info.is_local and info.is_chief and not info.is_multi_worker
    assert (info.num_workers, info.world_size, info.num_ps, info.rank) == (1, 1, 0, 0)
    assert info.task_address is None and info.worker_addresses == []
    assert info == ClusterInfo()
    assert cluster.resolve(info.to_tf_config()) == info


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf(TWO_WORKERS, ("worker", 1)))
    assert cluster.resolve().task_id == 1
    monkeypatch.delenv("TF_CONFIG")
    assert cluster.resolve().is_local


def test_explicit_argument_wins_over_environ():
    info = cluster.resolve(tf(TWO_WORKERS, ("worker", 1)), environ={"TF_CONFIG": "not json"})
    assert info.task_id == 1


SPEC = {"chief": ["c:1"], "worker": ["w0:1", "w1:1", "w2:1"]}


@pytest.mark.parametrize("task, rank, is_chief, address", [
    (("chief", 0), 0, True, "c:1"),
    (("worker", 0), 1, False, "w0:1"),
    (("worker", 2), 3, False, "w2:1"),
])
def test_chief_and_workers(task, rank, is_chief, address):
    info = cluster.resolve(tf(SPEC, task))
    assert (info.rank, info.is_chief, info.task_address) == (rank, is_chief, address)
    assert info.num_workers == info.world_size == 4
    assert info.is_multi_worker and not info.is_local and not info.is_ps and not info.is_evaluator
    assert info.worker_addresses == ["c:1", "w0:1", "w1:1", "w2:1"]


def test_worker_zero_is_chief_without_chief_job():
    infos = [cluster.resolve(tf(TWO_WORKERS, ("worker", i))) for i in range(2)]
    assert [i.is_chief for i in infos] == [True, False]
    assert [i.rank for i in infos] == [0, 1]
    assert infos[0].world_size == 2


def test_single_worker_cluster_is_not_multi_worker():
    info = cluster.resolve(tf({"worker": ["localhost:2222"]}))
    assert not info.is_local and not info.is_multi_worker and info.is_chief


def test_evaluator_outside_cluster():
    info = cluster.resolve(tf(TWO_WORKERS, ("evaluator", 0)))
    assert info.is_evaluator and not info.is_chief
    assert info.rank is None and info.task_address is None
    assert info.num_workers == 2


def test_evaluator_listed_in_cluster():
    info = cluster.resolve(tf({**TWO_WORKERS, "evaluator": ["e:1"]}, ("evaluator", 0)))
    assert info.task_address == "e:1" and info.num_workers == 2
    with pytest.raises(ClusterConfigError, match="cluster.evaluator has 1 task"):
        cluster.resolve(tf({**TWO_WORKERS, "evaluator": ["e:1"]}, ("evaluator", 1)))


def test_parameter_server_with_chief():
    spec = {"chief": ["c:1"], "worker": ["w:1"], "ps": ["p0:1", "p1:1"]}
    info = cluster.resolve(tf(spec, ("ps", 1), rpc_layer="grpc"))
    assert info.is_ps and not info.is_chief and info.rank is None
    assert (info.num_ps, info.num_workers, info.task_address, info.rpc_layer) == (2, 2, "p1:1", "grpc")


class _RouteError(ValueError):
    pass


def test_routes_without_parameter_servers_refuse_ps_tasks_in_one_wording():
    spec = {"chief": ["c:1"], "worker": ["w:1"], "ps": ["p0:1", "p1:1"]}
    with pytest.raises(_RouteError) as info:
        cluster.resolve(tf(spec, ("ps", 1))).refuse_ps("tfdist-train", error=_RouteError)
    assert str(info.value) == (
        "this task is ps:1; tfdist-train has no parameter-server training: drop the ps tasks from "
        "TF_CONFIG and train with chief and worker tasks (MultiWorkerMirroredStrategy).")
    for task in (("chief", 0), ("worker", 0)):
        cluster.resolve(tf(spec, task)).refuse_ps("tfdist-train")  # the others pass


def test_ipv6_and_dns_addresses():
    spec = {"chief": ["[::1]:2222"],
            "worker": ["[fe80::1%eth0]:2222", "my-host.example.com:2222", "10.0.0.1:1"]}
    info = cluster.resolve(tf(spec, ("worker", 0)))
    assert info.task_address == "[fe80::1%eth0]:2222"


def test_accepts_mapping_and_ignores_unknown_top_level_keys():
    config = {"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}, "environment": "cloud", "x": 1}
    info = cluster.resolve(config)
    assert info.environment == "cloud" and info.task_id == 1


@pytest.mark.parametrize("config", [
    tf(SPEC, ("worker", 1), rpc_layer="grpc", environment="cloud"),
    tf({"chief": ["c:1"], "worker": ["w:1"], "ps": ["p:1"], "evaluator": ["e:1"]}, ("evaluator", 0)),
    tf(TWO_WORKERS, ("evaluator", 0)),
])
def test_to_tf_config_round_trip(config):
    info = cluster.resolve(config)
    again = cluster.resolve(info.to_tf_config())
    assert again == info
    assert json.loads(info.to_tf_config()) == json.loads(config)


def test_immutability():
    info = cluster.resolve(tf(SPEC, ("worker", 1)))
    spec = info.cluster_spec
    spec["worker"].append("evil:1")
    spec["ps"] = ["evil:2"]
    assert info.cluster_spec == SPEC
    info.worker_addresses.append("evil:3")
    assert info.num_workers == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.task_id = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.jobs = ()
    assert hash(info) == hash(cluster.resolve(tf(SPEC, ("worker", 1))))


def test_constructor_freezes_mappings():
    source = {"worker": ["a:1"], "chief": ["b:1"]}
    info = ClusterInfo("worker", 0, source)
    source["worker"].append("c:1")
    assert info.jobs == (("chief", ("b:1",)), ("worker", ("a:1",)))


def test_describe():
    text = cluster.resolve(tf(SPEC, ("worker", 1), rpc_layer="grpc")).describe()
    for part in ["role:        worker", "index:       1", "chief:       no", "rank:        2 of 4",
                 "workers:     4", "address:     w1:1", "chief      c:1", "worker     w0:1, w1:1, w2:1",
                 "rpc layer:   grpc"]:
        assert part in text
    assert "local single process" in ClusterInfo().describe()
    assert "n/a" in cluster.resolve(tf(TWO_WORKERS, ("evaluator", 0))).describe()


# -------------------------------------------------------------------------------------- builders


def test_make_tf_config_round_trip():
    text = cluster.make_tf_config(workers=["w0:1", "w1:1"], chief="c:1", ps=["p:1"], evaluator="e:1",
                                  task_type="worker", task_id=1, rpc_layer="grpc")
    info = cluster.resolve(text)
    assert info.cluster_spec == {"chief": ["c:1"], "worker": ["w0:1", "w1:1"], "ps": ["p:1"],
                                 "evaluator": ["e:1"]}
    assert (info.task_type, info.task_id, info.rank, info.rpc_layer) == ("worker", 1, 2, "grpc")
    minimal = json.loads(cluster.make_tf_config(workers=["a:1"], task_type="worker", task_id=0))
    assert minimal == {"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}


@pytest.mark.parametrize("kwargs, expected", [
    (dict(workers=["a:1"], task_type="worker", task_id=1), "task.index is out of range"),
    (dict(workers=["a:1"], task_type="worker", task_id="0"), '"index": 0'),
    (dict(workers=["a:1", "a:1"], task_type="worker", task_id=0), "same address"),
    (dict(workers=["a:1"], ps=["p:1"], task_type="worker", task_id=0), 'no "chief"'),
    (dict(workers="a:1", task_type="worker", task_id=0), 'Wrap it in a list: ["a:1"]'),
    (dict(workers=[], task_type="worker", task_id=0), "cluster is empty"),
    (dict(workers=["a:1"], task_type="worker", task_id=0, rpc_layer=""), "rpc_layer"),
])
def test_make_tf_config_errors(kwargs, expected):
    with pytest.raises(ClusterConfigError) as info:
        cluster.make_tf_config(**kwargs)
    assert str(info.value).startswith("make_tf_config: ") and expected in str(info.value)


def test_hosts_to_addresses():
    assert cluster.hosts_to_addresses(["a", "b.example.com:9000", "::1", "[::2]", "[::3]:7"], 2222) == [
        "a:2222", "b.example.com:9000", "[::1]:2222", "[::2]:2222", "[::3]:7"]
    with pytest.raises(ClusterConfigError, match="between 1 and 65535"):
        cluster.hosts_to_addresses(["a"], 0)
    with pytest.raises(ClusterConfigError, match="Wrap it in a list"):
        cluster.hosts_to_addresses("a", 1)


@pytest.mark.parametrize("hostlist, expected", [
    ("node01", ["node01"]),
    ("node[01-03,07],gpu-a[1-2]", ["node01", "node02", "node03", "node07", "gpu-a1", "gpu-a2"]),
    ("n[8-10]", ["n8", "n9", "n10"]),
    ("n[008-010]", ["n008", "n009", "n010"]),
    ("a,b.example.com", ["a", "b.example.com"]),
    ("rack[1-2]-n[1,3]", ["rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"]),
    ("[1-2]x", ["1x", "2x"]),
    (" node[1-2]\n", ["node1", "node2"]),
])
def test_expand_hostlist(hostlist, expected):
    assert cluster.expand_hostlist(hostlist) == expected


@pytest.mark.parametrize("hostlist", ["node[01-03", "node]1", "n[[1]]", "a,,b", ",a", "", "n[]", "n[3-1]",
                                      "n[a-b]", "n[1-2-3]"])
def test_expand_hostlist_rejects(hostlist):
    with pytest.raises(ClusterConfigError) as info:
        cluster.expand_hostlist(hostlist)
    assert "hostlist" in str(info.value) and "node[01-03,07]" in str(info.value)


def slurm_env(**overrides):
    env = {"SLURM_JOB_NODELIST": "node[01-02]", "SLURM_PROCID": "0", "SLURM_NTASKS": "2",
           "SLURM_TASKS_PER_NODE": "1(x2)"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_from_slurm_one_task_per_node():
    info = cluster.from_slurm(slurm_env(SLURM_PROCID="1"), port=9000)
    assert info.cluster_spec == {"worker": ["node01:9000", "node02:9000"]}
    assert (info.task_type, info.task_id, info.rank, info.is_chief) == ("worker", 1, 1, False)
    assert cluster.from_slurm(slurm_env()).is_chief


def test_from_slurm_several_tasks_per_node():
    env = slurm_env(SLURM_JOB_NODELIST="gpu[1-3],cpu7", SLURM_NTASKS="7", SLURM_TASKS_PER_NODE="2(x3),1",
                    SLURM_PROCID="3")
    info = cluster.from_slurm(env)
    assert info.worker_addresses == ["gpu1:8888", "gpu1:8889", "gpu2:8888", "gpu2:8889", "gpu3:8888",
                                     "gpu3:8889", "cpu7:8888"]
    assert (info.task_id, info.task_address, info.world_size) == (3, "gpu2:8889", 7)


def test_from_slurm_prefers_step_variables():
    env = slurm_env(SLURM_STEP_NODELIST="node05", SLURM_STEP_TASKS_PER_NODE="2", SLURM_PROCID="1")
    assert cluster.from_slurm(env).worker_addresses == ["node05:8888", "node05:8889"]


@pytest.mark.parametrize("overrides, expected", [
    (dict(SLURM_JOB_NODELIST=None), "SLURM_STEP_NODELIST or SLURM_JOB_NODELIST is not set; received nothing"),
    (dict(SLURM_PROCID=None), "SLURM_PROCID is not set"),
    (dict(SLURM_NTASKS=None), "SLURM_NTASKS is not set"),
    (dict(SLURM_TASKS_PER_NODE=None), "SLURM_STEP_TASKS_PER_NODE or SLURM_TASKS_PER_NODE is not set"),
    (dict(SLURM_PROCID="one"), 'SLURM_PROCID must be an integer >= 0; received "one"'),
    (dict(SLURM_NTASKS="0"), "SLURM_NTASKS must be an integer >= 1"),
    (dict(SLURM_PROCID="2"), "SLURM_PROCID is out of range for SLURM_NTASKS=2"),
    (dict(SLURM_TASKS_PER_NODE="2(3)"), 'SLURM_TASKS_PER_NODE has a malformed entry "2(3)"'),
    (dict(SLURM_TASKS_PER_NODE="1(x3)", SLURM_NTASKS="3"),
     "describes 3 node(s) but SLURM_JOB_NODELIST lists 2"),
    (dict(SLURM_TASKS_PER_NODE="2,1"), "adds up to 3 tasks but SLURM_NTASKS is 2"),
    (dict(SLURM_JOB_NODELIST="node[01-02"), "SLURM_JOB_NODELIST has unbalanced brackets"),
    (dict(SLURM_JOB_NODELIST="node1,node1"), "has the same address as cluster.worker[0]"),
])
def test_from_slurm_rejects(overrides, expected):
    with pytest.raises(ClusterConfigError) as info:
        cluster.from_slurm(slurm_env(**overrides))
    assert str(info.value).startswith("SLURM: ") and expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("port", [0, 65536, True])
def test_from_slurm_rejects_bad_port(port):
    with pytest.raises(ClusterConfigError, match="between 1 and 65535"):
        cluster.from_slurm(slurm_env(), port=port)


def test_from_slurm_rejects_ports_past_65535():
    with pytest.raises(ClusterConfigError, match="exceeds 65535"):
        cluster.from_slurm(slurm_env(SLURM_TASKS_PER_NODE="2", SLURM_JOB_NODELIST="n1"), port=65535)


KUBEFLOW = {
    "cluster": {
        "Master": ["mnist-master-0.kubeflow.svc:2222"],
        "WORKER": ["mnist-worker-0.kubeflow.svc:2222", "mnist-worker-1.kubeflow.svc:2222"],
        "ps": ["mnist-ps-0.kubeflow.svc.cluster.local:2222"],
    },
    "task": {"type": "MASTER", "index": 0},
    "environment": "cloud",
}


def test_from_kubeflow_normalises_master():
    info = cluster.from_kubeflow(json.dumps(KUBEFLOW))
    assert info.task_type == "chief" and info.is_chief and info.rank == 0
    assert info.environment == "cloud" and info.num_workers == 3 and info.num_ps == 1
    assert info.cluster_spec["chief"] == ["mnist-master-0.kubeflow.svc:2222"]
    assert cluster.resolve(info.to_tf_config()) == info
    with pytest.raises(ClusterConfigError, match='Rename it to "chief"'):
        cluster.resolve(json.dumps(KUBEFLOW))


def test_from_kubeflow_reads_environ_and_worker_task():
    config = {**KUBEFLOW, "task": {"type": "Worker", "index": 1}}
    info = cluster.from_kubeflow(environ={"TF_CONFIG": json.dumps(config)})
    assert (info.task_type, info.task_id, info.rank) == ("worker", 1, 2)
    assert info.task_address == "mnist-worker-1.kubeflow.svc:2222"
    assert cluster.from_kubeflow(environ={}).is_local


def test_from_kubeflow_still_validates():
    with pytest.raises(ClusterConfigError, match="twice after TFJob normalisation"):
        cluster.from_kubeflow({"cluster": {"master": ["a:1"], "chief": ["b:1"]},
                               "task": {"type": "chief", "index": 0}})
    with pytest.raises(ClusterConfigError, match="task.index is out of range"):
        cluster.from_kubeflow({**KUBEFLOW, "task": {"type": "worker", "index": 2}})
    with pytest.raises(ClusterConfigError, match="invalid JSON"):
        cluster.from_kubeflow("{")


# ------------------------------------------------------------------------------------------- CLI


def test_cli_describes_tf_config():
    result = run_cli(tf_config=tf(SPEC, ("worker", 1)))
    assert result.returncode == 0 and result.stderr == ""
    for part in ["role:        worker", "index:       1", "rank:        2 of 4", "address:     w1:1", "c:1"]:
        assert part in result.stdout


def test_cli_local_and_flag_override():
    local = run_cli()
    assert local.returncode == 0 and "local single process" in local.stdout
    result = run_cli("--tf-config", tf(TWO_WORKERS, ("worker", 0)), tf_config="broken")
    assert result.returncode == 0 and "chief:       yes" in result.stdout


def test_cli_kubeflow():
    result = run_cli("--kubeflow", tf_config=json.dumps(KUBEFLOW))
    assert result.returncode == 0
    assert "role:        chief" in result.stdout and "environment: cloud" in result.stdout


def test_cli_slurm():
    env = slurm_env(SLURM_PROCID="1")
    result = run_cli("--slurm", "--port", "7000", extra_env=env)
    assert result.returncode == 0 and "address:     node02:7000" in result.stdout
    bad = run_cli("--slurm", extra_env=slurm_env(SLURM_NTASKS="3"))
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [bad.stderr.strip()] and bad.stderr.startswith("error: SLURM: ")


def test_main_in_process(capsys):
    assert cluster.main(["--tf-config", tf(TWO_WORKERS, ("worker", 1))]) == 0
    assert "rank:        1 of 2" in capsys.readouterr().out
    assert cluster.main(["--tf-config", "[]"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: TF_CONFIG: top level must be")
    with pytest.raises(SystemExit):
        cluster.main(["--slurm", "--kubeflow"])
