"""tfdist.outer_loop: the one outer loop, driven by a tiny non-Keras target, and its evaluator protocol."""

import os
import re
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import checkpoint, cluster, outer_loop
from tests.workers import ctl_job

PACKAGE = Path(tfdist.__file__).parent


class Counter(outer_loop.TrainTarget, outer_loop.EvalTarget):
    """A route in miniature: no Keras, no tf.function; its "model" is the sum of the steps run."""

    def __init__(self, *, input_steps=None, nan_at=()):
        self.global_step = tf.Variable(0, dtype=tf.int64)
        self.total = tf.Variable(0.0)
        self.input_steps = input_steps  # the input ends after this many steps (None: never)
        self.nan_at = set(nan_at)  # steps whose loss is NaN, until the loop restores once
        self.calls, self.restores = [], 0

    def checkpoint_items(self):
        return {"global_step": self.global_step, "total": self.total}

    def train(self, num_steps):
        self.calls.append(num_steps)
        step = int(self.global_step.numpy())
        n = num_steps if self.input_steps is None else max(0, min(num_steps, self.input_steps - step))
        loss = float("nan")
        for s in range(step + 1, step + n + 1):
            self.total.assign_add(float(s))
            loss = float("nan") if s in self.nan_at else 1.0 / s
        self.global_step.assign_add(n)
        return {"loss": loss, "steps": float(n)}

    def after_restore(self):
        self.restores += 1
        self.nan_at.clear()

    def evaluate(self, num_steps):
        return {"total": float(self.total.numpy())}


class Recorder(outer_loop.TrainAction):
    def __init__(self, stop_after=None, stop_before=None, boundary_every=None):
        self.events = []
        self.stop_after, self.stop_before, self.boundary_every = stop_after, stop_before, boundary_every

    def begin(self, step):
        self.events.append(("begin", step))

    def next_boundary(self, step):
        return None if self.boundary_every is None else (step // self.boundary_every + 1) * self.boundary_every

    def before_train(self, step):
        return step == self.stop_before

    def after_train(self, step, logs):
        self.events.append(("after_train", step, logs["loss"]))
        return step == self.stop_after

    def before_save(self, step):
        self.events.append(("before_save", step))

    def after_save(self, step):
        self.events.append(("after_save", step))

    def end(self, step):
        self.events.append(("end", step))

    def steps(self, kind):
        return [e[1] for e in self.events if e[0] == kind]


def _loop(model_dir, target=None, **kwargs):
    target = target or Counter()
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(**target.checkpoint_items()),
                                           str(model_dir), cluster=cluster.ClusterInfo(), max_to_keep=10)
    kwargs.setdefault("handle_preemption", False)
    return outer_loop.OuterLoop(trainer=target, evaluator=target, strategy=tfdist.get_strategy("default"),
                                checkpoints=manager, cluster=cluster.ClusterInfo(), **kwargs)


def _saved_steps(model_dir):
    state = tf.train.get_checkpoint_state(str(model_dir))
    return [int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths] if state else []


def _scalars(log_dir):
    scalars = {}
    for name in os.listdir(log_dir):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


# --- training cadence, actions, resume -----------------------------------------------------------


def test_chunks_cut_at_checkpoints_and_actions_get_the_logs(tmp_path):
    target, recorder, seen = Counter(), Recorder(), []
    loop = _loop(tmp_path, target, steps_per_loop=4, checkpoint_every=10,
                 train_actions=[recorder, seen.append])
    logs = loop.train(25)
    assert target.calls == [4, 4, 2, 4, 4, 2, 4, 1]  # cut at the checkpoint steps 10 and 20
    assert recorder.steps("after_train") == [4, 8, 10, 14, 18, 20, 24, 25]
    assert [e[2] for e in recorder.events if e[0] == "after_train"] == [1 / 4, 1 / 8, 1 / 10, 1 / 14,
                                                                        1 / 18, 1 / 20, 1 / 24, 1 / 25]
    assert [s["loss"] for s in seen] == [e[2] for e in recorder.events if e[0] == "after_train"]
    assert recorder.steps("before_save") == recorder.steps("after_save") == [10, 20, 25]
    assert recorder.events[0] == ("begin", 0) and recorder.events[-1] == ("end", 25)
    assert _saved_steps(tmp_path) == [10, 20, 25]
    assert logs == {"loss": 1 / 25, "steps": 1.0}

    resumed = Counter()
    again = _loop(tmp_path, resumed, steps_per_loop=4)
    assert again.resume().endswith("ckpt-25") and again.global_step == 25
    assert float(resumed.total.numpy()) == sum(range(1, 26))
    again.train(25)  # already there: nothing runs
    assert resumed.calls == []


def test_actions_stop_and_cut_loop_calls(tmp_path):
    target = Counter()
    recorder = Recorder(stop_after=6, boundary_every=3)
    _loop(tmp_path / "a", target, steps_per_loop=5, train_actions=[recorder]).train(100)
    assert target.calls == [3, 3]  # cut at the action's boundaries, stopped after step 6
    assert _saved_steps(tmp_path / "a") == [6]  # the final save of a stopped run
    assert recorder.events[-1] == ("end", 6)

    target = Counter()
    before = Recorder(stop_before=5)
    _loop(tmp_path / "b", target, steps_per_loop=5, train_actions=[before]).train(100)
    assert target.calls == [5]  # asked to stop before the second loop call


def test_input_end_stops_training_and_saves(tmp_path):
    target = Counter(input_steps=7)
    recorder = Recorder()
    _loop(tmp_path, target, steps_per_loop=5, train_actions=[recorder]).train(None)
    assert int(target.global_step.numpy()) == 7 and target.calls == [5, 5]
    assert recorder.steps("after_train") == [5, 7] and _saved_steps(tmp_path) == [7]


def test_checkpoint_secs_and_summary_cadence(tmp_path):
    target = Counter()
    loop = _loop(tmp_path, target, steps_per_loop=2, checkpoint_secs=1e-9, summary_every=3,
                 summary_dirs={"train": str(tmp_path / "train"), "eval": str(tmp_path / "eval")})
    loop.train(8)
    assert target.calls == [2, 1, 2, 1, 2]  # cut at the summary steps 3 and 6
    assert _saved_steps(tmp_path) == [2, 3, 5, 6, 8]  # due after every call: any time has passed
    assert set(_scalars(tmp_path / "train")["loss"]) == {3, 6}
    results = loop.evaluate()
    assert results == {"total": float(sum(range(1, 9))), "global_step": 8}
    assert _scalars(tmp_path / "eval")["total"] == {8: results["total"]}


def test_evaluation_cadence_and_eval_actions(tmp_path):
    target, evaluated = Counter(), []
    loop = _loop(tmp_path, target, steps_per_loop=4, eval_actions=[evaluated.append])
    logs = loop.train(10, eval_interval=5)
    assert target.calls == [4, 1, 4, 1]
    assert [e["global_step"] for e in evaluated] == [5, 10]
    assert logs["eval_global_step"] == 10 and logs["eval_total"] == float(sum(range(1, 11)))


# --- non-finite losses -------------------------------------------------------------------------


def test_nonfinite_stop_names_the_step_and_the_last_checkpoint(tmp_path):
    loop = _loop(tmp_path, Counter(nan_at={8}), steps_per_loop=2, checkpoint_every=4)
    with pytest.raises(outer_loop.NonFiniteLossError, match=r"not finite before step 8 ") as raised:
        loop.train(20)
    assert (raised.value.step, raised.value.last_saved) == (8, 4) and np.isnan(raised.value.loss)
    assert tfdist.loop.NonFiniteLossError is outer_loop.NonFiniteLossError  # route 1's is this one


def test_nonfinite_restore_goes_back_and_finishes(tmp_path):
    target = Counter(nan_at={8})
    loop = _loop(tmp_path, target, steps_per_loop=2, checkpoint_every=4, on_nonfinite="restore")
    loop.train(12)
    assert target.restores == 1 and loop.global_step == 12
    assert float(target.total.numpy()) == sum(range(1, 13))  # steps 5-8 were undone, then rerun


def test_nonfinite_restore_without_a_checkpoint_gives_up(tmp_path):
    loop = _loop(tmp_path, Counter(nan_at={2}), steps_per_loop=2, on_nonfinite="restore")
    with pytest.raises(outer_loop.NonFiniteLossError, match="no checkpoint to restore"):
        loop.train(10)


# --- preemption --------------------------------------------------------------------------------


def _own_handler(signum, frame):
    raise AssertionError("the test's own handler must never be called")


def test_sigterm_saves_at_the_boundary_and_exits_143(tmp_path):
    previous = signal.signal(signal.SIGTERM, _own_handler)
    try:
        def sigterm_at_4(logs):
            if logs["loss"] == 1 / 4:
                signal.raise_signal(signal.SIGTERM)  # handled in this thread before it returns

        loop = _loop(tmp_path, steps_per_loop=2, handle_preemption=True, train_actions=[sigterm_at_4])
        with pytest.raises(checkpoint.Preempted, match="saved a checkpoint at step 4 ") as raised:
            loop.train(100)
        assert raised.value.code == checkpoint.PREEMPTED_EXIT_CODE == 143
        assert _saved_steps(tmp_path) == [4] and loop.preemption_requested
        assert signal.getsignal(signal.SIGTERM) is _own_handler  # the process's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_evaluator_exits_143_on_sigterm(tmp_path):
    _loop(tmp_path, steps_per_loop=5).train(5)
    previous = signal.signal(signal.SIGTERM, _own_handler)
    try:
        watcher = _loop(tmp_path, handle_preemption=True)

        def evaluate_then_sigterm(steps):
            results = watcher.evaluate(steps)
            signal.raise_signal(signal.SIGTERM)
            return results

        with pytest.raises(checkpoint.Preempted, match="preempted by SIGTERM at step 5") as raised:
            watcher.evaluate_continuously(1000, timeout=120, evaluate=evaluate_then_sigterm)
        assert raised.value.code == 143 and not raised.value.saved
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the one evaluator protocol ----------------------------------------------------------------


def test_evaluator_stops_at_the_final_step_or_on_the_done_marker(tmp_path):
    _loop(tmp_path, steps_per_loop=5, checkpoint_every=5).train(15)
    evaluated = []

    def evaluate(path, number):
        evaluated.append(number)
        return {"global_step": number}

    run = outer_loop.evaluate_continuously(evaluate, str(tmp_path), final_step=15, poll_secs=0.05)
    assert (run.reason, evaluated, run.path.endswith("ckpt-15")) == ("final_step", [15], True)

    # Not told the final step: a timeout without the marker, the marker's end with it.
    evaluated.clear()
    run = outer_loop.evaluate_continuously(evaluate, str(tmp_path), poll_secs=0.05, timeout=0.5)
    assert (run.reason, evaluated) == ("timeout", [15])
    outer_loop.mark_training_ended(str(tmp_path), 15)
    evaluated.clear()
    finals = []
    run = outer_loop.evaluate_continuously(evaluate, str(tmp_path), poll_secs=0.05, timeout=60,
                                           after_evaluation=lambda r, p, final: finals.append(final))
    assert (run.reason, evaluated, finals) == ("training_done", [15], [True])
    outer_loop.mark_training_started(str(tmp_path))
    assert checkpoint.read_done_marker(str(tmp_path)) is None


def test_an_unreadable_checkpoint_is_retried_not_skipped(tmp_path):
    _loop(tmp_path, steps_per_loop=5).train(5)
    attempts = []

    def flaky(path, number):
        attempts.append(number)
        return None if len(attempts) == 1 else {"global_step": number}

    run = outer_loop.evaluate_continuously(flaky, str(tmp_path), final_step=5, poll_secs=0.05)
    assert attempts == [5, 5] and run.results == {"global_step": 5}


def test_both_routes_end_their_evaluators_on_the_chief_marker(tmp_path, monkeypatch):
    """Route 1 and route 3 evaluators not told the final step stop the same way: the marker."""
    # Route 1: train_and_evaluate is a whole run, so the chief marks its end.
    ctl_dir = tmp_path / "ctl"
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    tfdist.loop.Controller(trainer, model_dir=str(ctl_dir), steps_per_loop=5, checkpoint_every=10,
                           progress=False, export=False, handle_preemption=False,
                           ).train_and_evaluate(20, eval_interval=10)
    assert checkpoint.read_done_marker(str(ctl_dir))["global_step"] == 20
    watcher = tfdist.loop.Controller(ctl_job.make_trainer(tfdist.get_strategy("default")),
                                     model_dir=str(ctl_dir), progress=False, handle_preemption=False)
    # Told a later target (1000) it would wait for the timeout; the marker ends it at step 20.
    assert watcher.evaluate_continuously(1000, timeout=120)["global_step"] == 20

    # Route 3: the evaluator task of train_and_evaluate, without max_steps; the input ended at 3.
    import tfdist.estimator as est

    def model_fn(features, labels, mode):
        logits = keras.layers.Dense(2)(features)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return est.EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.SGD(0.1))

    def input_fn():
        x = np.random.default_rng(0).normal(size=(96, 4)).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype(np.int64))).batch(32)

    est_dir = str(tmp_path / "est")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    est.Estimator(model_fn, est_dir).train(input_fn)
    assert tf.train.latest_checkpoint(est_dir).endswith("ckpt-3")
    outer_loop.mark_training_ended(est_dir, 3)  # what the chief's training task writes
    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=["localhost:1"], task_type="evaluator",
                                                           task_id=0))
    result, _ = est.train_and_evaluate(
        est.Estimator(model_fn, est_dir), est.TrainSpec(input_fn),
        est.EvalSpec(input_fn, steps=None, start_delay_secs=0, throttle_secs=0))
    assert result["global_step"] == 3


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"steps_per_loop": 0}, r"`steps_per_loop`. Received: steps_per_loop=0"),
    ({"steps_per_loop": True}, r"steps_per_loop=True"),
    ({"checkpoint_every": 0}, r"`checkpoint_every`. Received: checkpoint_every=0"),
    ({"summary_every": 2.5}, r"`summary_every`. Received: summary_every=2.5"),
    ({"checkpoint_secs": 0}, r"`checkpoint_secs`. Received: checkpoint_secs=0. Pass a number of seconds > 0"),
    ({"checkpoint_secs": True}, r"checkpoint_secs=True"),
    ({"on_nonfinite": "skip"}, r"on_nonfinite='skip'. Valid values: stop, restore"),
    ({"max_nonfinite_restores": -1}, r"max_nonfinite_restores=-1. Pass a non-negative integer"),
])
def test_invalid_options(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=r"Invalid value for argument .*" + match):
        _loop(tmp_path, **kwargs)


def test_invalid_actions_and_missing_targets(tmp_path):
    with pytest.raises(TypeError, match=r"`train_actions`. Received an element 3"):
        _loop(tmp_path, train_actions=[3])
    with pytest.raises(TypeError, match=r"`eval_actions`. Received an element 'x'"):
        _loop(tmp_path, eval_actions=["x"])
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(), str(tmp_path),
                                           cluster=cluster.ClusterInfo())
    strategy = tfdist.get_strategy("default")
    with pytest.raises(ValueError, match="needs a `global_step`"):
        outer_loop.OuterLoop(strategy=strategy, checkpoints=manager)
    evaluate_only = outer_loop.OuterLoop(evaluator=Counter(), global_step=tf.Variable(0, dtype=tf.int64),
                                         strategy=strategy, checkpoints=manager)
    with pytest.raises(ValueError, match="OuterLoop.train needs a `trainer`"):
        evaluate_only.train(10)
    train_only = outer_loop.OuterLoop(trainer=Counter(), strategy=strategy, checkpoints=manager)
    with pytest.raises(ValueError, match="OuterLoop.evaluate needs an `evaluator`"):
        train_only.evaluate()
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match=re.escape(f"`steps`. Received: steps={bad!r}")):
            train_only.train(bad)
    with pytest.raises(ValueError, match="`eval_interval`. Received: eval_interval=0"):
        train_only.train(10, eval_interval=0)


# --- one place owns it ---------------------------------------------------------------------------


def _python_files(root):
    return [p for p in root.rglob("*.py")]


def test_the_shared_layer_imports_no_route():
    for path in _python_files(PACKAGE / "outer_loop"):
        text = path.read_text()
        for route in ("tfdist.loop", "tfdist.keras", "tfdist.estimator", "tfdist.runner"):
            assert not re.search(rf"^\s*(from|import) {re.escape(route)}\b", text, re.M), (path, route)


@pytest.mark.parametrize("pattern", [
    r"PreemptionWatcher\(",  # SIGTERM handling
    r"\.agreed\(",  # SIGTERM agreement across workers
    r"read_done_marker\(",  # the evaluator's "training has ended"
    r"checkpoints_iterator|time\.sleep\(",  # evaluator polling
    r"def _save_due|checkpoints\.save\(",  # checkpoint cadence
])
def test_one_place_owns_the_outer_loop_jobs(pattern):
    """Outside `tfdist.checkpoint` (which defines the pieces), only tfdist/outer_loop uses them."""
    users = {str(p.relative_to(PACKAGE)) for p in _python_files(PACKAGE)
             if re.search(pattern, p.read_text()) and p.name != "checkpoint.py"}
    routes = {u for u in users if u.split(os.sep)[0] in ("loop", "estimator", "keras", "runner")}
    assert users and not routes, users
