"""Tests for tfdist-launch: real launcher and worker processes, no mocks.

Fast behaviour tests run tiny `python -c` programs; the fault-injection tests run the custom-loop
job (tests/workers/ctl_job.py) as the route example. Every test passes its `tmp_path` on each
command line, so the autouse `no_leftovers` fixture can check the process table afterwards: no
process that mentions it -- launcher, worker or grandchild -- may survive a test.
"""

import io
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import portpicker
import psutil
import pytest

from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import launch
from tfdist.launch import layout

CTL_JOB = str(REPO_ROOT / "tests" / "workers" / "ctl_job.py")
PY = sys.executable

# Prints the variables the launcher sets, as one JSON line.
PRINT_ENV = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
             "if k == 'TF_CONFIG' or k.startswith('TFDIST_')}))")
# Starts a grandchild, then worker 1 fails with code 3 while worker 0 ignores SIGTERM (as a worker
# stuck in a collective does), so only the launcher's SIGKILL ends it. Worker 1 fails only once
# worker 0 says it ignores SIGTERM (a file), so the SIGKILL path is certain to be taken.
FAIL_ONE = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", sys.argv[1]])
    print("started", flush=True)
    ignoring = os.path.join(sys.argv[1], "ignoring")
    if os.environ["TFDIST_TASK_ID"] == "1":
        for _ in range(600):  # 30 s at most
            if os.path.exists(ignoring):
                break
            time.sleep(0.05)
        sys.exit(3)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(ignoring, "w").close()
    time.sleep(300)
""")
# Says "ready", then exits 143 on SIGTERM like a preempted training job.
TRAP_TERM = textwrap.dedent("""
    import signal, sys, time
    def on_term(signum, frame):
        print("got SIGTERM", flush=True)
        sys.exit(143)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    time.sleep(300)
""")
# Runs ctl_job with absl INFO logs, so the chief's "saved .../ckpt-N" lines are visible.
VERBOSE_CTL_JOB = textwrap.dedent("""
    import sys
    from absl import logging
    logging.set_verbosity(logging.INFO)
    from tests.workers import ctl_job
    ctl_job.main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
""")


# --- helpers ---------------------------------------------------------------------------------


def cli(*args, timeout=60, env=None):
    """Runs `python -m tfdist.launch ARGS` to the end."""
    return subprocess.run([PY, "-m", "tfdist.launch", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or subprocess_env(), cwd=REPO_ROOT)


class Background:
    """A launcher running in the background; its merged output is collected line by line."""

    def __init__(self, *args, env=None):
        self.proc = subprocess.Popen([PY, "-m", "tfdist.launch", *map(str, args)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env or subprocess_env(),
                                     cwd=REPO_ROOT, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, predicate, what, timeout=180):
        deadline = time.monotonic() + timeout
        while not predicate():
            tail = self.output[-4000:]
            assert self.proc.poll() is None, f"launcher exited ({self.proc.poll()}) before {what}:\n{tail}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{tail}"
            time.sleep(0.05)

    def children(self, count):
        """The launcher's direct children (the task processes), once `count` exist."""
        parent = psutil.Process(self.proc.pid)
        self.wait_for(lambda: len(parent.children()) >= count, f"{count} children", timeout=60)
        return parent.children()

    def finish(self, timeout=240) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tail = self.output[-4000:]
            raise AssertionError(f"launcher still running after {timeout:.0f}s:\n{tail}") from None
        self._reader.join(10)
        return code

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _mentioning(token: str) -> list[psutil.Process]:
    """Live processes (zombies are dead) whose command line mentions `token`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.pid != os.getpid() and proc.info["status"] != psutil.STATUS_ZOMBIE and \
                any(token in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def assert_no_processes(token, wait=5.0):
    """The process-table check: nothing mentioning `token` survives (SIGKILL is asynchronous)."""
    deadline = time.monotonic() + wait
    while (left := _mentioning(str(token))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [" ".join(p.cmdline()) for p in left]


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    yield
    try:
        assert_no_processes(tmp_path)
    finally:
        for proc in _mentioning(str(tmp_path)):  # clean up for the next test even on failure
            proc.kill()


def _one_line_error(result, match):
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfdist-launch: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(match, lines[0]), lines[0]


def _envs(stdout):
    """{"worker:0": {...variables...}} from PRINT_ENV lines."""
    found = {}
    for line in stdout.splitlines():
        name, _, rest = line.partition(" ")
        if rest.startswith("{"):
            found[name.strip("[]")] = json.loads(rest)
    return found


# --- success, layouts, variables ------------------------------------------------------------


def test_layout_prefixes_and_variables(tmp_path):
    result = cli("--chief", "--workers", 2, "--evaluator", "--", PY, "-c", PRINT_ENV, tmp_path)
    assert result.returncode == 0, result.stderr
    envs = _envs(result.stdout)
    assert sorted(envs) == ["chief:0", "evaluator:0", "worker:0", "worker:1"]
    spec = json.loads(envs["chief:0"]["TF_CONFIG"])["cluster"]
    assert sorted(spec) == ["chief", "worker"] and len(spec["worker"]) == 2
    assert all(layout.is_loopback(a) for a in spec["chief"] + spec["worker"])
    for name, env in envs.items():
        task_type, task_id = name.split(":")
        config = json.loads(env["TF_CONFIG"])
        assert config["cluster"] == spec and config["task"] == {"type": task_type, "index": int(task_id)}
        assert (env["TFDIST_TASK_TYPE"], env["TFDIST_TASK_ID"]) == (task_type, task_id)
        assert env["TFDIST_WORLD_SIZE"] == "3" and env["TFDIST_RESTART"] == "0"
    assert [envs[n].get("TFDIST_RANK") for n in ("chief:0", "worker:0", "worker:1", "evaluator:0")] == \
        ["0", "1", "2", None]
    assert "all 4 process(es) succeeded" in result.stderr


def test_output_is_streamed_line_by_line_with_prefixes(tmp_path):
    code = "import sys, time\nfor i in range(3):\n    print('line', i, flush=True); time.sleep(0.05)"
    result = cli("--workers", 2, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 0
    for task in ("worker:0", "worker:1"):
        assert [line for line in result.stdout.splitlines() if line.startswith(f"[{task}] ")] == \
            [f"[{task}] line {i}" for i in range(3)]


def test_parameter_servers_are_stopped_when_the_chief_is_done(tmp_path):
    # Workers and parameter servers serve forever; the chief's success completes the job.
    code = "import os, sys, time\nif os.environ['TFDIST_TASK_TYPE'] != 'chief': time.sleep(300)"
    started = time.monotonic()
    result = cli("--chief", "--workers", 1, "--ps", 2, "--grace", 1, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20


def test_log_dir_has_one_file_per_process(tmp_path):
    logs = tmp_path / "logs"
    result = cli("--workers", 2, "--chief", "--log-dir", logs, "--", PY, "-c", "print('hello')", tmp_path)
    assert result.returncode == 0
    assert sorted(p.name for p in logs.iterdir()) == ["chief-0.log", "worker-0.log", "worker-1.log"]
    assert (logs / "worker-1.log").read_text() == "hello\n"


def test_console_script_is_installed():
    script = Path(PY).parent / "tfdist-launch"
    assert script.exists(), "reinstall: .venv/bin/pip install -e ."
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "--max-restarts" in result.stdout


def test_the_launcher_does_not_import_tensorflow():
    code = "import sys, tfdist.launch; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([PY, "-c", code], cwd=REPO_ROOT, timeout=30).returncode == 0


# --- failures, exit statuses, signals --------------------------------------------------------


def test_a_failure_stops_the_others_and_sets_the_exit_status(tmp_path):
    started = time.monotonic()
    result = cli("--workers", 2, "--grace", 1, "--", PY, "-c", FAIL_ONE, tmp_path)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 20  # failure grace + TERM grace + start-up, not 300 s
    assert "worker:1 failed (exit code 3)" in result.stderr
    assert_no_processes(tmp_path)  # worker 0 ignored SIGTERM; both grandchildren are gone too


def test_a_process_killed_by_a_signal_gives_128_plus_n(tmp_path):
    code = textwrap.dedent("""
        import os, signal, time
        if os.environ["TFDIST_TASK_ID"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(300)
    """)
    result = cli("--workers", 2, "--grace", 1, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 128 + signal.SIGKILL
    assert "worker:0 failed (killed by SIGKILL" in result.stderr
    assert_no_processes(tmp_path)


def test_timeout_stops_everything(tmp_path):
    sleep = "import time; time.sleep(300)"
    result = cli("--workers", 2, "--timeout", 1, "--grace", 1, "--", PY, "-c", sleep, tmp_path)
    assert result.returncode == 124
    assert "timed out after 1s" in result.stderr
    assert_no_processes(tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_is_forwarded_and_waited_for(tmp_path, signum):
    run = Background("--workers", 2, "--", PY, "-c", TRAP_TERM, tmp_path)
    try:
        run.wait_for(lambda: run.output.count("] ready") == 2, "both workers ready", timeout=60)
        run.proc.send_signal(signum)
        assert run.finish(timeout=60) == 128 + signum
    finally:
        run.close()
    assert "[worker:0] got SIGTERM" in run.lines and "[worker:1] got SIGTERM" in run.lines
    assert "Traceback" not in run.output
    assert_no_processes(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_children_die_with_a_killed_launcher(tmp_path):
    # SIGKILL cannot be handled; the kernel's parent-death signal covers the direct children.
    run = Background("--workers", 2, "--", PY, "-c", TRAP_TERM, tmp_path)
    try:
        run.wait_for(lambda: run.output.count("] ready") == 2, "both workers ready", timeout=60)
        children = run.children(2)
        run.proc.kill()
        run.finish(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        run.close()


# --- restarts and ports ----------------------------------------------------------------------


def test_restart_relaunches_the_group_on_fresh_ports(tmp_path):
    # Worker 1 fails the first run only once worker 0 has printed (a file says so): worker 0's
    # line is never lost to the launcher stopping it.
    code = PRINT_ENV + textwrap.dedent("""
        import sys, time
        sys.stdout.flush()
        first_run = os.environ["TFDIST_RESTART"] == "0"
        printed = os.path.join(sys.argv[1], "printed-" + os.environ["TFDIST_RESTART"])
        if os.environ["TFDIST_TASK_ID"] == "0":
            open(printed, "w").close()
        elif first_run:
            for _ in range(600):  # 30 s at most
                if os.path.exists(printed):
                    break
                time.sleep(0.05)
        sys.exit(5 if first_run and os.environ["TFDIST_TASK_ID"] == "1" else 0)
    """)
    result = cli("--workers", 2, "--max-restarts", 1, "--grace", 1, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[worker:0]")]
    first, second = (json.loads(line.partition(" ")[2]) for line in lines)
    assert (first["TFDIST_RESTART"], second["TFDIST_RESTART"]) == ("0", "1")
    assert json.loads(first["TF_CONFIG"])["cluster"] != json.loads(second["TF_CONFIG"])["cluster"]
    assert "restarting the group (restart 1 of 1)" in result.stderr
    assert cli("--workers", 2, "--grace", 1, "--", PY, "-c", code, tmp_path).returncode == 5


def test_a_port_clash_is_retried_with_fresh_ports_without_a_restart(tmp_path):
    # Each worker fails once the way TF's gRPC server does when its port was taken meanwhile.
    code = textwrap.dedent("""
        import os, sys
        marker = os.path.join(sys.argv[1], "clashed-" + os.environ["TFDIST_TASK_ID"])
        if not os.path.exists(marker):
            open(marker, "w").close()
            print("E0000 Failed to add port to server: Address already in use", flush=True)
            sys.exit(1)
        print("trained", flush=True)
    """)
    result = cli("--workers", 2, "--grace", 1, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "retrying with fresh ports (retry 1 of 3)" in result.stderr
    assert "[worker:0] trained" in result.stdout and "[worker:1] trained" in result.stdout


def test_a_taken_port_is_a_one_line_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        free = portpicker.pick_unused_port()
        marker = tmp_path / "started"
        result = cli("--workers", 2, "--ports", f"{free},{port}", "--",
                     PY, "-c", f"open({str(marker)!r}, 'w')", tmp_path)
    _one_line_error(result, rf"port {port} \(worker:1\) is already in use")
    assert not marker.exists()


# --- bad input, dry run ----------------------------------------------------------------------


@pytest.mark.parametrize("args, match", [
    ([], "no command given"),
    (["--workers", "0", "--", "true"], r"argument --workers: must be a count >= 1 \(\"2\"\) or a range "
     r"MIN:MAX with 1 <= MIN <= MAX \(\"2:4\"\); received '0'"),
    (["--workers", "2", "--no-such-flag", "--", "true"], "unrecognized arguments: --no-such-flag"),
    (["--workers", "2", "--", "tfdist-no-such-command"], "command not found: 'tfdist-no-such-command'"),
    (["--ps", "1", "--", "true"], r"parameter servers \(--ps, num_ps\) need a chief"),
    (["--hosts", "a,b", "--", "true"], "--hosts needs --host-index"),
    (["--hosts", "a,b", "--host-index", "2", "--", "true"], "host index 2 is out of range for 2 host"),
    (["--workers", "2", "--ports", "2222", "--", "true"], r"--ports lists 1 port\(s\) but 2 task\(s\)"),
])
def test_bad_input_is_a_one_line_error(tmp_path, args, match):
    _one_line_error(cli(*args), match)


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path):
    marker = tmp_path / "started"
    command = [PY, "-c", f"open({str(marker)!r}, 'w')", str(tmp_path)]
    result = cli("--workers", 2, "--dry-run", "--", *command)
    assert result.returncode == 0
    lines = [shlex.split(line) for line in result.stdout.splitlines()]
    assert len(lines) == 2 and not marker.exists()
    for i, tokens in enumerate(lines):
        assert tokens[0] == f"[worker:{i}]" and tokens[-len(command):] == command
        variables = dict(token.split("=", 1) for token in tokens[1:-len(command)])
        assert json.loads(variables["TF_CONFIG"])["task"] == {"type": "worker", "index": i}
        assert variables["TFDIST_RANK"] == str(i) and variables["TFDIST_WORLD_SIZE"] == "2"


# --- multi-host and Slurm --------------------------------------------------------------------


def test_two_hosts_share_one_cluster(tmp_path):
    # Two launchers on this machine stand in for two hosts; each runs only its own worker.
    hosts = ",".join(f"localhost:{portpicker.pick_unused_port()}" for _ in range(2))
    envs = {}
    for index in range(2):
        result = cli("--hosts", hosts, "--host-index", index, "--", PY, "-c", PRINT_ENV, tmp_path)
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stderr  # loopback: no security warning
        envs.update(_envs(result.stdout))
    assert sorted(envs) == ["worker:0", "worker:1"]
    for index, name in enumerate(sorted(envs)):
        config = json.loads(envs[name]["TF_CONFIG"])
        assert config["cluster"] == {"worker": hosts.split(",")} and config["task"]["index"] == index


def test_non_loopback_addresses_warn_once():
    result = cli("--hosts", "10.0.0.1,10.0.0.2", "--host-index", 1, "--workers", 2, "--chief",
                 "--dry-run", "--", "true")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: TensorFlow's gRPC workers accept unauthenticated connections") == 1
    lines = [shlex.split(line) for line in result.stdout.splitlines()]
    assert [tokens[0] for tokens in lines] == ["[worker:2]", "[worker:3]"]  # host 1's tasks only
    config = json.loads(lines[0][1].partition("=")[2])
    assert config["cluster"] == {"chief": ["10.0.0.1:8888"], "worker": [
        "10.0.0.1:8889", "10.0.0.1:8890", "10.0.0.2:8888", "10.0.0.2:8889"]}


def test_plan_for_two_hosts_numbers_ports_per_host():
    plan = layout.make_plan(layout.Topology(num_workers=2, chief=True, evaluator=True,
                                            hosts=("a", "b:9000"), host_index=0))
    assert [(t.name, t.address) for t in plan.tasks] == [
        ("chief:0", "a:8888"), ("worker:0", "a:8889"), ("worker:1", "a:8890"),
        ("worker:2", "b:9000"), ("worker:3", "b:9001"), ("evaluator:0", None)]
    assert [t.name for t in plan.local_tasks] == ["chief:0", "worker:0", "worker:1", "evaluator:0"]


def test_slurm_one_launcher_per_node(tmp_path):
    slurm = dict(SLURM_STEP_NODELIST="node[07-08]", SLURM_NODEID="1", SLURM_STEP_TASKS_PER_NODE="1(x2)")
    result = cli("--slurm", "--workers", 2, "--dry-run", "--", "true", env=subprocess_env(**slurm))
    assert result.returncode == 0, result.stderr
    assert '"worker": ["node07:8888", "node07:8889", "node08:8888", "node08:8889"]' in result.stdout
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["[worker:2]", "[worker:3]"]
    result = cli("--slurm", "--", "true", env=subprocess_env(**{**slurm, "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}))
    _one_line_error(result, "run one tfdist-launch per node")


# --- Python API ------------------------------------------------------------------------------


@pytest.fixture
def job_module(tmp_path, monkeypatch):
    # With `fail_on` (two workers), the failing worker returns 4 only once the other has exited
    # (its pid in a file, then a zombie): the other's exit 0 is certain, never a stop by the
    # launcher. `token` is a directory, fresh for each launch.
    (tmp_path / "tfdist_launch_demo.py").write_text(textwrap.dedent("""
        import os, time
        import psutil

        def main(token, fail_on=None):
            task = os.environ["TFDIST_TASK_ID"]
            print("hello from", os.environ["TFDIST_TASK_TYPE"], task, token, flush=True)
            if fail_on is None:
                return 0
            other = os.path.join(token, "other-" + os.environ["TFDIST_RESTART"])
            if task != fail_on:
                with open(other + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.replace(other + ".tmp", other)
                return 0
            for _ in range(600):  # 30 s at most
                if os.path.exists(other) and _exited(int(open(other).read())):
                    break
                time.sleep(0.05)
            return 4

        def _exited(pid):
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # the launcher reaps later
            except psutil.NoSuchProcess:
                return True
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import tfdist_launch_demo

    return tfdist_launch_demo


def test_run_a_module_function_and_a_function_object(tmp_path, job_module, capsys):
    for target in ("tfdist_launch_demo:main", job_module.main):
        results = launch.run(target, num_workers=2, chief=True, args=[tmp_path], timeout=60)
        assert [(r.name, r.returncode) for r in results] == [("chief:0", 0), ("worker:0", 0), ("worker:1", 0)]
        assert results[2].output == f"hello from worker 1 {tmp_path}"
    assert f"[worker:1] hello from worker 1 {tmp_path}" in capsys.readouterr().out  # streamed too


def test_run_reports_failures_and_restarts(tmp_path, job_module):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    results = launch.run("tfdist_launch_demo:main", args=[first, "1"], stream=False, grace=1,
                         timeout=60)
    assert [r.returncode for r in results] == [0, 4], [r.output for r in results]
    results = launch.run(job_module.main, args=[second, "1"], max_restarts=1, stream=False, grace=1,
                         timeout=60)
    assert [r.returncode for r in results] == [0, 4], [r.output for r in results]
    assert "--- tfdist-launch: restart 1 ---" in results[1].output


def test_run_a_script(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(PRINT_ENV)
    results = launch.run(script, num_workers=2, stream=False, timeout=60)
    assert [json.loads(r.output)["TFDIST_RANK"] for r in results] == ["0", "1"]


def test_ctrl_c_in_run_stops_every_process(tmp_path):
    # As in a notebook: KeyboardInterrupt in run() stops the workers before it propagates.
    # Python's SIGINT handler is installed explicitly: Python keeps SIGINT ignored when it starts
    # with SIGINT ignored, as everything started by `make test &` from a script is (POSIX: no job
    # control), and then Ctrl-C never reaches run().
    code = (f"import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            f"from tfdist import launch\n"
            f"launch.run([sys.executable, '-c', {TRAP_TERM!r}, {str(tmp_path)!r}], num_workers=2, "
            f"timeout=120)")
    proc = subprocess.Popen([PY, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=subprocess_env(), cwd=REPO_ROOT)
    try:
        lines = []
        while sum(line.endswith("] ready\n") for line in lines) < 2:
            lines.append(proc.stdout.readline())
            assert lines[-1], "".join(lines)
        proc.send_signal(signal.SIGINT)
        output = "".join(lines) + proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in output
    assert "[worker:0] got SIGTERM" in output and "[worker:1] got SIGTERM" in output
    assert_no_processes(tmp_path)


def test_run_rejects_what_children_cannot_import(tmp_path):
    with pytest.raises(launch.LaunchError, match="Put it in a module file"):
        launch.run(lambda: 0, args=[tmp_path])
    with pytest.raises(launch.LaunchError, match="script not found"):
        launch.run(tmp_path / "missing.py")
    with pytest.raises(launch.LaunchError, match="cannot import module 'tfdist_no_such_module'"):
        launch.run("tfdist_no_such_module:main")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_workers=0), "`num_workers`. Received: num_workers=0. Pass a positive integer."),
    (dict(num_workers=True), "`num_workers`. Received: num_workers=True. Pass a positive integer."),
    (dict(max_restarts=-1), "`max_restarts`. Received: max_restarts=-1. Pass a non-negative integer."),
    (dict(max_restarts=1.5), "`max_restarts`. Received: max_restarts=1.5. Pass a non-negative integer."),
    (dict(timeout=-1), "`timeout`. Received: timeout=-1. Pass a number of seconds >= 0 or None"),
    (dict(timeout="60"), "`timeout`. Received: timeout='60'. Pass a number of seconds >= 0 or None"),
    (dict(grace=float("nan")), "`grace`. Received: grace=nan. Pass a number of seconds >= 0."),
])
def test_python_api_checks_what_the_command_line_checks(kwargs, match):
    """`run()` and `Launcher` refuse what tfdist-launch's flags refuse, before anything starts."""
    with pytest.raises(launch.LaunchError, match=re.escape("Invalid value for argument " + match)):
        launch.run([PY, "-c", "pass"], **{"num_workers": 1, **kwargs})


@pytest.mark.parametrize("kwargs, match", [
    (dict(command="python train.py"), "`command`. Received: command='python train.py'. Pass the program"),
    (dict(command=[]), "`command`. Received: command=[]."),
    (dict(command=["python", 3]), "`command`. Received: command=['python', 3]."),
    (dict(topology=2), "`topology`. Received: int. Pass a tfdist.launch.Topology."),
    (dict(port_retries=-1), "`port_retries`. Received: port_retries=-1. Pass a non-negative integer."),
    (dict(failure_grace=-2), "`failure_grace`. Received: failure_grace=-2. Pass a number of seconds >= 0 "
                             "or None (`grace`)."),
])
def test_launcher_checks_its_arguments(kwargs, match):
    args = {"command": [PY, "-c", "pass"], "topology": layout.Topology(num_workers=1), **kwargs}
    with pytest.raises(launch.LaunchError, match=re.escape("Invalid value for argument " + match)):
        launch.Launcher(args.pop("command"), args.pop("topology"), **args)


def test_launcher_takes_path_arguments(tmp_path):
    launcher = launch.Launcher([PY, tmp_path / "x.py"], layout.Topology(num_workers=1))
    assert launcher.command == (PY, str(tmp_path / "x.py"))


# --- the route example under the launcher: real TensorFlow workers ---------------------------


def _report(out, name):
    return json.loads((out / f"{name}.json").read_text())


def _dirs(tmp_path):
    model, out = tmp_path / "model", tmp_path / "out"
    out.mkdir()
    return model, out


@pytest.mark.multiworker
def test_route_example_runs_under_the_launcher(tmp_path):
    model, out = _dirs(tmp_path)
    result = cli("--workers", 2, "--timeout", 240, "--", PY, CTL_JOB, model, out, 40, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    reports = [_report(out, f"worker-{i}") for i in range(2)]
    assert [r["end"] for r in reports] == [40, 40] and reports[0]["weights"] == reports[1]["weights"]


@pytest.mark.multiworker
def test_kill_9_with_a_restart_resumes_from_the_last_checkpoint(tmp_path):
    model, out = _dirs(tmp_path)
    steps = 500  # ~10 s of training after the first checkpoint here: the kill lands mid-run
    # A random point in training and a random victim, replayable from the seed in the messages
    # (not the global generator: tests and Keras seed that one).
    seed = random.SystemRandom().randrange(2**32)
    chance = random.Random(seed)
    delay, victim_name = chance.uniform(0.0, 1.5), f"worker:{chance.randrange(2)}"
    context = f"seed {seed}: killed {victim_name} {delay:.2f}s after the first saved checkpoint"
    run = Background("--workers", 2, "--max-restarts", 1, "--grace", 3, "--timeout", 240, "--",
                     PY, "-c", VERBOSE_CTL_JOB, model, out, steps)
    try:
        # The log line, not the files: it comes once the save has returned.
        run.wait_for(lambda: "tfdist.checkpoint: saved" in run.output, "the first checkpoint")
        time.sleep(delay)
        victim = next(p for p in run.children(2)
                      if f"worker:{p.environ()['TFDIST_TASK_ID']}" == victim_name)
        victim.kill()
        assert run.finish() == 0, (context, run.output[-4000:])
    finally:
        run.close()
    before, marker, after = run.output.partition("restarting the group (restart 1 of 1)")
    assert marker and f"{victim_name} failed (killed by SIGKILL" in before.splitlines()[-1], context
    saved = [int(s) for s in re.findall(r"^\[worker:0\] .*tfdist.checkpoint: saved .*/ckpt-(\d+)$",
                                        before, re.M)]
    resumed = re.findall(r"^\[worker:(\d)\] .*tfdist: resumed from .*/ckpt-(\d+) at step (\d+)$",
                         after, re.M)
    # TF names the new checkpoint in its state file before save() returns and tfdist logs
    # "saved": a kill in between resumes from one checkpoint after the last "saved" line.
    assert len(resumed) == 2 and {w for w, _, _ in resumed} == {"0", "1"}, (context, resumed)
    assert len({(c, s) for _, c, s in resumed}) == 1 and resumed[0][1] == resumed[0][2], (context, resumed)
    last = int(resumed[0][2])
    assert saved and last - saved[-1] in (0, 20), (context, saved, resumed)
    for i in range(2):
        report = _report(out, f"worker-{i}")
        assert (report["start"], report["end"]) == (last, steps), context  # none lost or skipped


@pytest.mark.multiworker
def test_kill_9_without_restarts_fails_fast_and_leaves_nothing(tmp_path):
    model, out = _dirs(tmp_path)
    # The survivor is stuck in a collective until SIGKILL: 3 s to exit alone, TERM, 3 s, KILL.
    run = Background("--workers", 2, "--grace", 3, "--timeout", 150, "--", PY, CTL_JOB, model, out,
                     100000)
    try:
        run.wait_for(lambda: any(model.glob("ckpt-*.index")), "the first checkpoint")
        children = run.children(2)
        random.Random().choice(children).kill()
        killed_at = time.monotonic()
        code = run.finish(timeout=120)
        elapsed = time.monotonic() - killed_at
    finally:
        run.close()
    assert code == 128 + signal.SIGKILL, run.output[-4000:]
    assert elapsed < 30, elapsed
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children)
    assert_no_processes(tmp_path)


@pytest.mark.multiworker
def test_sigterm_to_one_worker_checkpoints_and_the_restart_resumes_there(tmp_path):
    model, out = _dirs(tmp_path)
    ready, steps = tmp_path / "ready", 200
    # ctl_job waits (all workers in lockstep) for the signal after writing `ready`, then stops at
    # the next loop boundary: the preempted step is 15 however long the signal takes to arrive.
    # --grace 75: the other worker's exit may stall on iterator teardown (the reaper waits 60 s).
    run = Background("--workers", 2, "--max-restarts", 1, "--grace", 75, "--timeout", 240, "--",
                     PY, CTL_JOB, model, out, steps, ready)
    try:
        run.wait_for(ready.exists, "the job to be ready")
        worker_1 = next(p for p in run.children(2) if p.environ()["TFDIST_TASK_ID"] == "1")
        worker_1.terminate()  # a preemption notice for one worker
        assert run.finish() == 0, run.output[-4000:]
    finally:
        run.close()
    before, marker, after = run.output.partition("restarting the group (restart 1 of 1)")
    assert marker and "failed (exit code 143)" in before.splitlines()[-1], run.output[-4000:]
    preempted = re.findall(r"preempted by SIGTERM; saved a checkpoint at step (\d+)", before)
    assert preempted == ["15", "15"], before[-4000:]
    for i in range(2):
        assert (_report(out, f"worker-{i}")["start"], _report(out, f"worker-{i}")["end"]) == (15, steps)



@pytest.mark.multiworker
def test_two_hosts_train_together(tmp_path):
    # Two launchers on this machine stand in for two hosts; each runs only its own worker.
    model, out = _dirs(tmp_path)
    hosts = ",".join(f"localhost:{portpicker.pick_unused_port()}" for _ in range(2))
    runs = [Background("--hosts", hosts, "--host-index", i, "--timeout", 240, "--",
                       PY, CTL_JOB, model, out, 40) for i in range(2)]
    try:
        deadline = time.monotonic() + 270  # one budget for both: each launcher stops at 240 s
        codes = [run.finish(timeout=max(1.0, deadline - time.monotonic())) for run in runs]
    finally:
        for run in runs:
            run.close()
    assert codes == [0, 0], [run.output[-3000:] for run in runs]
    for i, run in enumerate(runs):
        assert {line.split()[0] for line in run.lines if line.startswith("[")} == {f"[worker:{i}]"}
    reports = [_report(out, f"worker-{i}") for i in range(2)]
    assert [r["end"] for r in reports] == [40, 40] and reports[0]["weights"] == reports[1]["weights"]


@pytest.mark.multiworker
def test_chief_layout_trains(tmp_path):
    model, out = _dirs(tmp_path)
    result = cli("--chief", "--workers", 1, "--timeout", 240, "--", PY, CTL_JOB, model, out, 40,
                 timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    reports = [_report(out, name) for name in ("chief-0", "worker-0")]
    assert [r["end"] for r in reports] == [40, 40] and reports[0]["weights"] == reports[1]["weights"]
    assert (model / "ckpt-40.index").exists()


# --- parameter-server jobs: a dead worker is restarted alone (issue 16) --------------------------

# The worker fails on its first start (it leaves a marker) and serves until SIGTERM after that;
# the chief finishes once the restarted worker says it is up.
_FLAKY_WORKER = textwrap.dedent("""
    import os, signal, sys, time
    marker = os.path.join(sys.argv[1], "started-" + os.environ["WORKER_RUN"])
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(3)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    open(os.path.join(sys.argv[1], "up"), "w").close()
    time.sleep(60)
""")
_WAITING_CHIEF = textwrap.dedent("""
    import os, sys, time
    while not os.path.exists(os.path.join(sys.argv[1], "up")):
        time.sleep(0.05)
""")


def _ps_group(tmp_path, restart_limit):
    env = dict(subprocess_env(), WORKER_RUN="a")
    specs = [launch.ProcessSpec("chief", 0, [PY, "-c", _WAITING_CHIEF, str(tmp_path)], env),
             launch.ProcessSpec("worker", 0, [PY, "-c", _FLAKY_WORKER, str(tmp_path)], env)]
    messages = io.StringIO()
    group = launch.ProcessGroup(specs, launch.Output(capture=True, messages=messages), primary=[0],
                                restartable=[1], restart_limit=restart_limit)
    return group.run(deadline=time.monotonic() + 30, failure_grace=0.5, grace=2), messages.getvalue()


def test_a_dead_worker_of_a_parameter_server_job_is_restarted_alone(tmp_path):
    outcome, messages = _ps_group(tmp_path, restart_limit=1)
    assert outcome.succeeded, messages
    assert ("worker:0 failed (exit code 3); restarting it alone (restart 1 of 1); the others "
            "carry on") in messages
    assert [r.returncode for r in outcome.results] == [0, 0]  # the worker was then stopped: exit 0


def test_a_worker_out_of_restarts_fails_the_group(tmp_path):
    outcome, messages = _ps_group(tmp_path, restart_limit=0)
    assert not outcome.succeeded and outcome.first_failure.name == "worker:0", messages
    assert "restarting it alone" not in messages


def test_servers_are_stopped_at_once_when_the_chief_fails_after_a_ps(tmp_path):
    # A ps dies; the chief notices (once it has exited) and fails. The worker would
    # serve forever: it is stopped as soon as the chief has exited, not after the failure grace.
    code = textwrap.dedent("""
        import os, sys, time
        pid_file = os.path.join(sys.argv[1], "ps.pid")
        if os.environ["TFDIST_TASK_TYPE"] == "ps":
            with open(pid_file + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pid_file + ".tmp", pid_file)
            sys.exit(9)
        if os.environ["TFDIST_TASK_TYPE"] == "chief":
            while not os.path.exists(pid_file):
                time.sleep(0.05)
            stat = f"/proc/{open(pid_file).read()}/stat"
            while os.path.exists(stat) and open(stat).read().split()[2] != "Z":  # until it exited
                time.sleep(0.05)
            sys.exit(250)
        time.sleep(300)
    """)
    started = time.monotonic()
    result = cli("--chief", "--workers", 1, "--ps", 1, "--grace", 60, "--", PY, "-c", code, tmp_path)
    assert result.returncode == 9, result.stderr
    assert "ps:0 failed (exit code 9); stopping the others unless they exit within 60s" in result.stderr
    assert "chief:0 failed (exit code 250)" in result.stderr
    assert time.monotonic() - started < 30, result.stderr  # not the 60 s failure grace
    assert_no_processes(tmp_path)


def test_run_starts_parameter_servers_and_stops_them_when_the_chief_is_done(tmp_path):
    # The others tell the chief they have printed (a file each), so the chief, done at once,
    # never has them stopped before their line is out.
    code = textwrap.dedent("""
        import json, os, sys, time
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        print(task["type"], flush=True)
        if task["type"] != "chief":
            open(os.path.join(sys.argv[1], f"{task['type']}-{task['index']}.printed"), "w").close()
            time.sleep(300)
        deadline = time.monotonic() + 50
        while len(os.listdir(sys.argv[1])) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    """)
    results = launch.run([PY, "-c", code, str(tmp_path)], num_workers=1, chief=True, num_ps=2,
                         stream=False, grace=1, timeout=60)
    assert [r.name for r in results] == ["chief:0", "worker:0", "ps:0", "ps:1"]
    assert results[0].returncode == 0 and results[2].output.strip() == "ps"
