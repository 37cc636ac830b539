"""Slurm: a faked job-step environment -> the right rank -> host:port mapping (python-hostlist)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.multiworker import PYTHONPATH
from tfdist import cluster
from tfdist.cluster import slurm
from tfdist.launch import layout
from tfdist.launch.errors import LaunchError

REPO_ROOT = Path(__file__).resolve().parents[1]


def step(nodelist, tasks_per_node, procid, **extra):
    """The variables srun sets for one task of a step (block distribution)."""
    counts = slurm.tasks_per_node({"SLURM_STEP_TASKS_PER_NODE": tasks_per_node})[1]
    owners = [node for node, count in enumerate(counts) for _ in range(count)]
    env = {"SLURM_STEP_NODELIST": nodelist, "SLURM_STEP_TASKS_PER_NODE": tasks_per_node,
           "SLURM_NTASKS": str(sum(counts)), "SLURM_PROCID": str(procid),
           "SLURM_NODEID": str(owners[procid])}
    env.update(extra)
    return env


# (nodelist, tasks per node, expected rank -> address for every rank)
LAYOUTS = [
    ("node[01-04,07]", "1(x5)",
     ["node01:8888", "node02:8888", "node03:8888", "node04:8888", "node07:8888"]),
    # Slurm's order, not lexicographic: n9 before n10 (TF's SlurmClusterResolver sorts them).
    ("n[9-11]", "1(x3)", ["n9:8888", "n10:8888", "n11:8888"]),
    ("a[1-2]-b[3-4]", "1(x4)", ["a1-b3:8888", "a1-b4:8888", "a2-b3:8888", "a2-b4:8888"]),
    ("n[1-2],m[5]", "2,1(x2)", ["n1:8888", "n1:8889", "n2:8888", "m5:8888"]),
    ("gpu[001-002],cpu[7-9]", "3(x2),2,1,1",
     ["gpu001:8888", "gpu001:8889", "gpu001:8890", "gpu002:8888", "gpu002:8889", "gpu002:8890",
      "cpu7:8888", "cpu7:8889", "cpu8:8888", "cpu9:8888"]),
]


@pytest.mark.parametrize("nodelist, per_node, expected", LAYOUTS, ids=[case[0] for case in LAYOUTS])
def test_every_rank_maps_to_its_host_and_port(nodelist, per_node, expected):
    for rank, address in enumerate(expected):
        info = cluster.from_slurm(step(nodelist, per_node, rank))
        assert info.worker_addresses == expected  # every task derives the same cluster
        assert (info.task_type, info.task_id, info.rank, info.task_address) == ("worker", rank, rank, address)
        assert info.is_chief == (rank == 0)


def test_cpu_only_node_needs_no_nvidia_smi(tmp_path):
    """No GPU probing: the CLI resolves on a node whose PATH has no nvidia-smi."""
    env = {"PATH": str(tmp_path), "PYTHONPATH": PYTHONPATH, **step("cpu[1-2]", "1(x2)", 1)}
    result = subprocess.run([sys.executable, "-m", "tfdist.cluster", "--slurm", "--port", "7000"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "address:     cpu2:7000" in result.stdout


def test_cyclic_distribution_is_refused_naming_slurm_nodeid():
    # Under --distribution=cyclic rank 1 runs on node 1, not on node 0 as block would put it.
    env = step("n[1-2]", "2(x2)", 1, SLURM_NODEID="1", SLURM_DISTRIBUTION="cyclic")
    with pytest.raises(cluster.ClusterConfigError) as info:
        cluster.from_slurm(env)
    message = str(info.value)
    assert message.startswith("SLURM: SLURM_NODEID is 1 but rank 1 belongs on node 0 (n1)")
    assert '--distribution=block (SLURM_DISTRIBUTION is "cyclic")' in message


@pytest.mark.parametrize("per_node, bad", [("2(3)", "2(3)"), ("2(x2),x", "x"), ("0", "0"), ("2(x0)", "2(x0)")])
def test_malformed_tasks_per_node_names_the_entry(per_node, bad):
    with pytest.raises(cluster.ClusterConfigError, match=re.escape(f'SLURM_STEP_TASKS_PER_NODE has a malformed entry "{bad}"')):
        slurm.tasks_per_node({"SLURM_STEP_TASKS_PER_NODE": per_node})


@pytest.mark.parametrize("hostlist, reason", [("n[1-2", "has unbalanced brackets"), ("n[[1]]", "has nested brackets"),
                                              ("n[3-1]", "has a range that runs backwards"),
                                              ("n[x]", "has a malformed range"), ("a,,b", "has an empty entry")])
def test_malformed_nodelist_names_the_variable(hostlist, reason):
    with pytest.raises(cluster.ClusterConfigError, match=rf"^SLURM: SLURM_STEP_NODELIST {reason}"):
        slurm.nodes({"SLURM_STEP_NODELIST": hostlist})


def test_launcher_per_node_uses_the_same_parser():
    env = {"SLURM_STEP_NODELIST": "rack[1-2]-n[09-10]", "SLURM_NODEID": "2",
           "SLURM_STEP_TASKS_PER_NODE": "1(x4)"}
    assert layout.slurm_hosts(env) == (("rack1-n09", "rack1-n10", "rack2-n09", "rack2-n10"), 2)
    with pytest.raises(LaunchError, match="SLURM_STEP_NODELIST has nested brackets"):
        layout.slurm_hosts({**env, "SLURM_STEP_NODELIST": "n[[1]]"})
    with pytest.raises(LaunchError, match="run one tfdist-launch per node"):
        layout.slurm_hosts({**env, "SLURM_STEP_TASKS_PER_NODE": "1(x3),2"})


def test_exec_wrapper_gives_a_plain_srun_task_its_tf_config():
    """`srun python -m tfdist.cluster --slurm --exec -- CMD`: any program gets Slurm's cluster."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": PYTHONPATH, **step("n[1-2]", "2(x2)", 3)}
    result = subprocess.run([sys.executable, "-m", "tfdist.cluster", "--slurm", "--port", "7000", "--exec", "--",
                             sys.executable, "-c", "import os; print(os.environ['TF_CONFIG'])"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cluster": {"worker": ["n1:7000", "n1:7001", "n2:7000", "n2:7001"]},
                                         "task": {"type": "worker", "index": 3}}


@pytest.mark.parametrize("node_id, message", [
    ("", "SLURM: SLURM_NODEID is not set; received nothing"),
    ("x", 'SLURM: SLURM_NODEID must be an integer >= 0; received "x"'),
    ("4", 'SLURM: SLURM_NODEID does not index the 4 host(s) of SLURM_STEP_NODELIST; received "4"'),
])
def test_node_index_names_the_variable(node_id, message):
    env = {"SLURM_STEP_NODELIST": "rack[1-2]-n[09-10]", "SLURM_NODEID": node_id}
    with pytest.raises(cluster.ClusterConfigError, match=re.escape(message)):
        slurm.node_index(env)
    assert slurm.node_index({**env, "SLURM_NODEID": "3"}) == (
        "SLURM_STEP_NODELIST", ["rack1-n09", "rack1-n10", "rack2-n09", "rack2-n10"], 3)


def test_launcher_per_node_reports_the_parsers_node_error():
    env = {"SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NODEID": "2"}
    with pytest.raises(LaunchError, match=re.escape("SLURM_NODEID does not index the 2 host(s)")):
        layout.slurm_hosts(env)
