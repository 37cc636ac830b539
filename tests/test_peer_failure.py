"""A dead or missing peer ends every route promptly with one line naming it (issue 15).

The error translation is tested on TensorFlow's real error classes with the texts TF 2.21 prints
(copied from survivors' logs); the multi-worker tests start two workers as plain processes (as
Kubernetes or Slurm start them: TF_CONFIG on loopback ports, no launcher), and the victim kills
itself with SIGKILL by design once a checkpoint exists, writing its time of death first.
"""

import json
import os
import subprocess
import sys
import threading
import time

import portpicker
import pytest
import tensorflow as tf

from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import cluster as cluster_lib
from tfdist import peer_failure
from tfdist import strategy as strategy_lib

PY = sys.executable
VICTIM = str(REPO_ROOT / "tests" / "workers" / "peer_victim.py")
FIT_TUTORIAL = str(REPO_ROOT / "tests" / "workers" / "keras_mw_tutorial.py")
CTL_SCRIPT = str(REPO_ROOT / "tests" / "workers" / "ctl_job.py")
ESTIMATOR_SCRIPT = str(REPO_ROOT / "tests" / "workers" / "estimator_job.py")
BOUND_SECS = 30.0  # the bound from the peer's death to the survivor's exit

CLUSTER = cluster_lib.resolve(json.dumps({
    "cluster": {"worker": ["localhost:1234", "localhost:1235", "localhost:1236"]},
    "task": {"type": "worker", "index": 0}}))
HEARTBEAT = (
    "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks "
    "are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
    "crashed. Check the task logs for an earlier error.")
RESET = (
    "Graph execution error:\n\nDetected at node sgd/CollectiveReduceV2\nCollective ops is aborted "
    "by: recvmsg:Connection reset by peer\nAdditional GRPC error information from remote target "
    "/job:worker/replica:0/task:2 while calling /tensorflow.WorkerService/RecvBuf:\n")
BARRIER = (
    "Barrier timed out. Id: [Init]Wait_for_all_tasks_to_register::0.\n# of tasks that reached the "
    "barrier: 2/3.\nThe first task at the barrier: /job:worker/replica:0/task:1. Some timed out "
    "task names:\n/job:worker/replica:0/task:2\nAdditional GRPC error information from remote "
    "target /job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/RegisterTask")


def _unavailable(text):
    return tf.errors.UnavailableError(None, None, text)


@pytest.mark.parametrize("error, tasks, address", [
    (_unavailable(HEARTBEAT), (("worker", 1),), "localhost:1235"),
    (_unavailable(RESET), (("worker", 2),), "localhost:1236"),
    (tf.errors.DeadlineExceededError(None, None, BARRIER), (("worker", 2),), "localhost:1236"),
])
def test_tf_peer_errors_become_one_line_naming_the_task(error, tasks, address):
    translated = peer_failure.from_error(error, CLUSTER, startup_timeout=20)
    assert isinstance(translated, peer_failure.PeerUnavailableError)
    assert translated.tasks == tasks and translated.cause is error
    message = str(translated)
    assert "\n" not in message and f"{tasks[0][0]}:{tasks[0][1]} ({address})" in message
    assert "(this is worker:0 (localhost:1234))" in message
    assert "exiting" not in message  # a library error: the binary's line adds the status
    assert translated.exit_line().startswith(message.split(" -- ")[0] + "; exiting with status 250 -- ")
    assert translated.exit_code == 250


def test_a_startup_failure_says_the_peer_did_not_join():
    translated = peer_failure.from_error(
        tf.errors.DeadlineExceededError(None, None, BARRIER), CLUSTER, startup_timeout=20)
    assert translated.startup
    assert "did not join the cluster within the start-up wait (20 s)" in str(translated)
    running = peer_failure.from_error(_unavailable(HEARTBEAT), CLUSTER)
    assert not running.startup and "stopped responding" in str(running)
    assert "resumes from the last checkpoint" in str(running)


def test_the_leader_is_named_when_a_worker_cannot_register():
    # A non-leader whose leader never started: TF names only the leader, as the remote target.
    text = ("Deadline Exceeded\nAdditional GRPC error information from remote target "
            "/job:worker/replica:0/task:0 while calling /tensorflow.CoordinationService/RegisterTask")
    me = cluster_lib.resolve(json.dumps({"cluster": CLUSTER.cluster_spec,
                                         "task": {"type": "worker", "index": 1}}))
    translated = peer_failure.from_error(tf.errors.DeadlineExceededError(None, None, text), me)
    assert translated.tasks == (("worker", 0),) and "worker:0 (localhost:1234) did not join" in str(translated)


@pytest.mark.parametrize("error", [
    ValueError("remote target /job:worker/replica:0/task:1"),  # not TensorFlow's
    tf.errors.InvalidArgumentError(None, None, "remote target /job:worker/replica:0/task:1"),
    _unavailable("Failed to open file /data/x"),  # unavailable, but not a peer's fault
])
def test_other_errors_are_left_alone(error):
    assert peer_failure.from_error(error, CLUSTER) is None
    with pytest.raises(type(error)) as raised:
        with peer_failure.translate(CLUSTER):
            raise error
    assert raised.value is error


def test_translate_raises_the_one_line_error_without_tfs_chain():
    with pytest.raises(peer_failure.PeerUnavailableError) as raised:
        with peer_failure.translate(CLUSTER):
            raise _unavailable(HEARTBEAT)
    assert raised.value.__suppress_context__ and raised.value.__cause__ is None
    assert isinstance(raised.value.cause, tf.errors.UnavailableError)


def test_unnamed_peers_still_translate():
    text = "Collective ops is aborted by: Socket closed"
    translated = peer_failure.from_error(_unavailable(text), cluster_lib.ClusterInfo())
    assert translated.tasks == () and "a peer task stopped responding" in str(translated)


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), True, "30"])
def test_invalid_startup_timeout_argument(value):
    with pytest.raises(strategy_lib.StrategyError, match="Invalid value for argument `startup_timeout`"):
        strategy_lib.resolve_startup_timeout(value)


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "inf"])
def test_invalid_startup_timeout_variable(raw):
    with pytest.raises(strategy_lib.StrategyError,
                       match=f"TFDIST_STARTUP_TIMEOUT={raw!r}. Set it to a number of seconds > 0"):
        strategy_lib.resolve_startup_timeout(None, {"TFDIST_STARTUP_TIMEOUT": raw})


def test_startup_timeout_sources():
    assert strategy_lib.resolve_startup_timeout(None, {}) == strategy_lib.DEFAULT_STARTUP_TIMEOUT
    assert strategy_lib.resolve_startup_timeout(None, {"TFDIST_STARTUP_TIMEOUT": " 20 "}) == 20.0
    assert strategy_lib.resolve_startup_timeout(7, {"TFDIST_STARTUP_TIMEOUT": "20"}) == 7.0


# --- real processes --------------------------------------------------------------------------------


def _start(cluster, index, argv, tmp_path, **env):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    err = open(tmp_path / f"worker-{index}.err", "w")
    return subprocess.Popen(argv, env=subprocess_env(TF_CONFIG=tf_config, **env), cwd=str(REPO_ROOT),
                            stdout=open(tmp_path / f"worker-{index}.out", "w"), stderr=err)


def _cluster(n=2):
    return {"worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(n)]}


def _last_line(path):
    return path.read_text().strip().splitlines()[-1]


def _wait(proc, timeout=300):
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _train_flags(route, model_dir, steps):
    return [f"--route={route}", f"--model_dir={model_dir}", f"--train_steps={steps}",
            "--eval_every=20", "--steps_per_loop=5"]


def _kill_one_mid_run(tmp_path, route):
    """worker:1 dies after the first checkpoint; returns (survivor's rc, secs after death, cluster)."""
    cluster, stamp, model_dir = _cluster(), tmp_path / "died", tmp_path / "model"
    # 5000 steps: far more than can run before the checkpoint at 20 triggers the death; the
    # survivor cannot pass its next all-reduce without the victim, so it cannot finish first.
    argv = [PY, VICTIM, "worker:1", str(stamp), *_train_flags(route, model_dir, 5000)]
    procs = [_start(cluster, i, argv, tmp_path) for i in range(2)]
    survivor = _wait(procs[0])
    ended = time.time()
    assert _wait(procs[1], timeout=60) == -9, (tmp_path / "worker-1.err").read_text()[-3000:]
    after = ended - float(stamp.read_text())
    print(f"{route}: survivor exited {survivor} {after:.1f} s after worker:1 died")
    return survivor, after, cluster


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """`killed_run(route)`: one `_kill_one_mid_run` per route for the whole module, in its own
    directory -> (directory, survivor's rc, secs after death, cluster). The restart test resumes
    the ctl run that the dead-peer test checked, instead of killing a worker once more."""
    runs = {}

    def run(route):
        if route not in runs:
            directory = tmp_path_factory.mktemp(f"killed-{route}")
            runs[route] = (directory, *_kill_one_mid_run(directory, route))
        return runs[route]

    return run


@pytest.mark.multiworker
@pytest.mark.parametrize("route", ["ctl", "fit", "estimator"])
def test_a_dead_peer_ends_the_survivor_promptly_with_one_line(killed_run, route, record_property):
    run_dir, survivor, after, cluster = killed_run(route)
    record_property(f"{route}_survivor_exit_secs_after_death", round(after, 1))
    err = (run_dir / "worker-0.err").read_text()
    assert survivor == peer_failure.EXIT_CODE, err[-3000:]
    assert after < BOUND_SECS
    assert _last_line(run_dir / "worker-0.err") == (
        f"tfdist: worker:1 ({cluster['worker'][1]}) stopped responding (this is worker:0 "
        f"({cluster['worker'][0]})); exiting with status 250 -- restart the job, it resumes from "
        "the last checkpoint")
    assert "Traceback" not in err


@pytest.mark.multiworker
def test_the_restart_after_a_dead_peer_resumes_from_its_checkpoint(killed_run, tmp_path, record_property):
    run_dir, survivor, after, _ = killed_run("ctl")
    record_property("ctl_survivor_exit_secs_after_death", round(after, 1))
    assert survivor == peer_failure.EXIT_CODE
    # Both workers again, on fresh ports (the engine's restart), to step 40; logs in tmp_path.
    cluster, model_dir = _cluster(), run_dir / "model"
    argv = [PY, "-m", "tfdist.train", *_train_flags("ctl", model_dir, 40)]
    procs = [_start(cluster, i, argv, tmp_path) for i in range(2)]
    codes = [_wait(p) for p in procs]
    assert codes == [0, 0], (tmp_path / "worker-0.err").read_text()[-3000:]
    report = json.loads((model_dir / "metrics.json").read_text())
    assert (report["start_step"], report["steps"]) == (20, 40)


@pytest.mark.multiworker
def test_a_library_users_fit_script_gets_the_one_line_error(tmp_path, record_property):
    # The tutorial script calls model.fit itself (no tfdist binary): the uncaught error's last
    # line names the dead task, and the process exits instead of hanging at interpreter exit.
    cluster, stamp = _cluster(), tmp_path / "died"
    (tmp_path / "backup").mkdir()
    argv = [PY, FIT_TUTORIAL, str(tmp_path / "backup"), str(tmp_path)]
    procs = [_start(cluster, i, argv, tmp_path, CRASH_AT_STEP="80", CRASH_STAMP=str(stamp))
             for i in range(2)]
    survivor = _wait(procs[0])
    after = time.time() - float(stamp.read_text())
    record_property("fit_script_survivor_exit_secs_after_death", round(after, 1))
    print(f"fit script: survivor exited {survivor} {after:.1f} s after worker:1 died")
    assert _wait(procs[1], timeout=60) == -9
    assert survivor == 1 and after < BOUND_SECS
    assert _last_line(tmp_path / "worker-0.err").startswith(
        f"tfdist.peer_failure.PeerUnavailableError: tfdist: worker:1 ({cluster['worker'][1]}) "
        "stopped responding")


@pytest.mark.multiworker
@pytest.mark.parametrize("script, extra", [(CTL_SCRIPT, "5000"), (ESTIMATOR_SCRIPT, "100")],
                         ids=["Controller", "Estimator"])
def test_a_library_users_script_gets_the_one_line_error(tmp_path, script, extra, record_property):
    # The user's own script (Controller.train / train_and_evaluate), worker:1 killed after the
    # first checkpoint: the uncaught error ends the survivor promptly, naming the dead task.
    cluster, stamp, model, out = _cluster(), tmp_path / "died", tmp_path / "model", tmp_path / "out"
    model.mkdir()
    out.mkdir()
    argv = [PY, VICTIM, "worker:1", str(stamp), script, str(model), str(out), extra]
    procs = [_start(cluster, i, argv, tmp_path) for i in range(2)]
    survivor = _wait(procs[0])
    after = time.time() - float(stamp.read_text())
    record_property("script_survivor_exit_secs_after_death", round(after, 1))
    print(f"{os.path.basename(script)}: survivor exited {survivor} {after:.1f} s after worker:1 died")
    assert _wait(procs[1], timeout=60) == -9
    assert survivor == 1 and after < BOUND_SECS
    assert _last_line(tmp_path / "worker-0.err") == (
        f"tfdist.peer_failure.PeerUnavailableError: tfdist: worker:1 ({cluster['worker'][1]}) "
        f"stopped responding (this is worker:0 ({cluster['worker'][0]})) -- restart the job, it "
        "resumes from the last checkpoint")


# `python -m tfdist.train` that first writes the time its heavy imports were done to argv[1].
STAMP_THEN_TRAIN = (
    "import runpy, sys, time; import tensorflow, keras, tfdist; "
    "open(sys.argv[1], 'w').write(repr(time.time())); "
    "sys.argv = ['tfdist.train'] + sys.argv[2:]; "
    "runpy.run_module('tfdist.train', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(scope="module")
def lone_workers(tmp_path_factory):
    """Both cases of the never-starts test started at once (each a lone process idling in the
    start-up wait, so they barely compete): {present: (cluster, directory, seconds-or-None, rc)}
    filled in by a thread per process as it exits."""
    results, threads = {}, []
    for present in (0, 1):
        directory = tmp_path_factory.mktemp(f"lone-worker-{present}")
        cluster, imported = _cluster(), directory / "imported"
        argv = [PY, "-c", STAMP_THEN_TRAIN, str(imported),
                *_train_flags("ctl", directory / "model", 40)]
        started = time.time()
        proc = _start(cluster, present, argv, directory, TFDIST_STARTUP_TIMEOUT="20")

        def wait(present=present, cluster=cluster, directory=directory, started=started,
                 proc=proc, imported=imported):
            code = _wait(proc, timeout=400)  # TensorFlow's import alone took 45 s under load
            ended = time.time()
            since_import = ended - float(imported.read_text()) if imported.exists() else None
            results[present] = (cluster, directory, ended - started, since_import, code)

        threads.append(threading.Thread(target=wait, daemon=True))
        threads[-1].start()
    yield results, threads


@pytest.mark.multiworker
@pytest.mark.parametrize("present, missing", [(0, 1), (1, 0)])
def test_a_worker_that_never_starts_ends_the_wait(lone_workers, present, missing, record_property):
    results, threads = lone_workers
    threads[present].join(450)  # _wait gives up (and kills) after 400 s
    cluster, directory, seconds, since_import, code = results[present]
    record_property("startup_give_up_secs", round(seconds, 1))
    err_file = directory / f"worker-{present}.err"
    assert code == peer_failure.EXIT_CODE, err_file.read_text()[-3000:]
    # At least the wait; at most the wait plus a wide margin once TensorFlow is imported (the
    # import's own time depends on the machine's load: 5 s idle, 45 s seen under load).
    assert seconds >= 20 and since_import is not None and since_import < 20 + 90, (
        seconds, since_import)
    assert _last_line(err_file).startswith(
        f"tfdist: worker:{missing} ({cluster['worker'][missing]}) did not join the cluster within "
        "the start-up wait (20 s)")


def test_a_lost_ps_is_named_alone_not_the_workers_that_relayed_it():
    # What the chief of a chief + 2 workers + 1 ps job got after `kill -9` of the ps (abridged).
    text = (
        "Graph execution error:\n2 root error(s) found.\n  (0) UNAVAILABLE:  failed to connect to "
        "all addresses; last error: UNKNOWN: ipv4:127.0.0.1:39221: Failed to connect to remote "
        "host: Connection refused\nAdditional GRPC error information from remote target "
        "/job:ps/replica:0/task:0/device:CPU:0 while calling /tensorflow.eager.EagerService/"
        "RunComponentFunction:\n  (1) CANCELLED:  Function was cancelled before it was started\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:0 while "
        "calling /tensorflow.eager.EagerService/Enqueue:")
    cluster = cluster_lib.resolve(json.dumps({
        "cluster": {"chief": ["localhost:41855"], "worker": ["localhost:39929", "localhost:39930"],
                    "ps": ["localhost:39221"]},
        "task": {"type": "chief", "index": 0}}))
    translated = peer_failure.from_error(_unavailable(text), cluster)
    assert translated is not None and translated.tasks == (("ps", 0),)
    assert str(translated).startswith(
        "tfdist: ps:0 (localhost:39221) stopped responding (this is chief:0 (localhost:41855))")
