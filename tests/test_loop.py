"""Tests for route 1 (tfdist.loop): loss scaling, resume, preemption, multi-worker, errors."""

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import checkpoint, data
from tests import multiworker
from tests.workers import ctl_job

JOB = str(Path(__file__).parent / "workers" / "ctl_job.py")


def _controller(trainer, model_dir, **kwargs):
    kwargs.setdefault("steps_per_loop", 5)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("handle_preemption", False)
    return tfdist.loop.Controller(trainer, model_dir=str(model_dir), **kwargs)


def _weights(trainer):
    return [np.asarray(w) for w in trainer.model.get_weights()]


def test_one_replica_and_two_replicas_agree(tmp_path, cpus):
    """The proof that loss scaling is right: same global batch, same result."""
    runs = {}
    for name, strategy in [
        ("one", tfdist.get_strategy("default")),
        ("two", tfdist.get_strategy("mirrored", devices=cpus(2))),
    ]:
        trainer = ctl_job.make_trainer(strategy, optimizer="sgd")
        controller = _controller(trainer, tmp_path / name, export=False)
        controller.train(30)
        runs[name] = (_weights(trainer), controller.evaluate()["loss"])
    for a, b in zip(runs["one"][0], runs["two"][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert runs["one"][1] == pytest.approx(runs["two"][1], rel=1e-5)


def test_loss_scale_optimizer_scales_the_loss_it_unscales(tmp_path, cpus):
    # LossScaleOptimizer divides the gradients by its scale (2**15); unless train_step multiplied
    # the loss by it first, every update would be 32768 times too small.
    weights = []
    for name, optimizer in [
        ("plain", keras.optimizers.SGD(0.1)),
        ("scaled", keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1))),
    ]:
        trainer = ctl_job.make_trainer(tfdist.get_strategy("mirrored", devices=cpus(2)),
                                       optimizer=optimizer, shuffle_buffer=0)
        _controller(trainer, tmp_path / name, export=False).train(10)
        weights.append(_weights(trainer))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_regularization_counted_once_across_replicas(tmp_path, cpus):
    def build():
        keras.utils.set_random_seed(2)
        return keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(2, kernel_regularizer=keras.regularizers.L2(0.1))]
        )

    weights = []
    for strategy in (tfdist.get_strategy("default"), tfdist.get_strategy("mirrored", devices=cpus(2))):
        trainer = tfdist.loop.Trainer(
            strategy=strategy, model=build, optimizer="sgd",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            train_data=data.DataSpec(source=ctl_job.dataset(), global_batch_size=32, shuffle_buffer=0),
        )
        _controller(trainer, tmp_path / str(len(weights)), export=False).train(10)
        weights.append(_weights(trainer))
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_train_checkpoints_exports_and_learns(tmp_path, cpus):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("mirrored", devices=cpus(2)))
    controller = _controller(trainer, tmp_path, checkpoint_every=20, max_to_keep=2)
    before = controller.evaluate()["loss"]
    evaluated_at = []
    evaluate = controller.evaluate
    controller.evaluate = lambda *a, **k: evaluated_at.append(controller.global_step) or evaluate(*a, **k)
    results = controller.train_and_evaluate(60, eval_interval=20)
    assert controller.global_step == 60
    assert evaluated_at == [20, 40, 60]  # the final evaluation is the one train made at step 60
    assert results["eval_global_step"] == 60
    assert results["eval_loss"] < before
    assert results["steps_per_sec"] > 0 and results["examples_per_sec"] > 0
    assert Path(checkpoint_path := controller.checkpoints.latest()).name == "ckpt-60"
    assert len(tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths) == 2
    restored = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(restored.get_weights()[0], _weights(trainer)[0])
    serving = tf.saved_model.load(str(tmp_path / "saved_model"))
    assert serving.serve(tf.zeros((3, 8))).shape == (3, 2)
    assert list((tmp_path / "train").glob("events.*")) and list((tmp_path / "eval").glob("events.*"))
    assert checkpoint_path


def test_progress_off_a_terminal_is_plain_lines(tmp_path, capsys):
    # Keras's Progbar would redraw one line with \r and colour codes even into a pipe or a log.
    # ipykernel imported is not a notebook: a notebook runner (nbclient's kernel lookup, the
    # notebook tests in this process) imports it too.
    importlib.import_module("ipykernel.kernelspec")
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    _controller(trainer, tmp_path, progress=True, export=False).train(10)
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    last = [line for line in out.splitlines() if line.startswith("step ")][-1]
    assert last.startswith("step 10/10 - loss: ") and "steps_per_sec: " in last


def test_many_steps_per_call_does_not_retrace(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    controller = _controller(trainer, tmp_path, steps_per_loop=7, export=False)
    controller.train(30)  # loop calls of 7, 7, 6 (checkpoint boundary at 20), 7, 3
    assert trainer._train_loop_fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_resume_matches_an_uninterrupted_run(tmp_path, cpus, strategy_name):
    def strategy():
        if strategy_name == "default":
            return tfdist.get_strategy("default")
        return tfdist.get_strategy("mirrored", devices=cpus(2))

    # 512 examples / 32 = 16 steps an epoch. The default strategy checkpoints the input position
    # (with its shuffle buffer); distributed iterators cannot be checkpointed, so the mirrored
    # run stops on an epoch boundary and reads unshuffled data.
    shuffle = 256 if strategy_name == "default" else 0
    stop = 14 if strategy_name == "default" else 16
    full = ctl_job.make_trainer(strategy(), shuffle_buffer=shuffle)
    _controller(full, tmp_path / "full", export=False).train(32)

    first = ctl_job.make_trainer(strategy(), shuffle_buffer=shuffle)
    _controller(first, tmp_path / "resumed", export=False).train(stop)
    second = ctl_job.make_trainer(strategy(), shuffle_buffer=shuffle)
    resumed = _controller(second, tmp_path / "resumed", export=False)
    assert resumed.global_step == stop and resumed.restored_from.endswith(f"ckpt-{stop}")
    resumed.train(32)
    assert resumed.global_step == 32
    for a, b in zip(_weights(full), _weights(second)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_relative_model_dir_resumes_at_the_saved_step_and_is_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `tfdist-train --model_dir=runs/default` from the repository
    first = ctl_job.make_trainer(tfdist.get_strategy("default"))
    _controller(first, "runs/default", export=False).train(10)
    second = ctl_job.make_trainer(tfdist.get_strategy("default"))
    resumed = _controller(second, "runs/default", export=False)
    assert (resumed.global_step, resumed.restored_from) == (10, "runs/default/ckpt-10")
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_array_equal(a, b)
    # The evaluator task finds it in the same relative directory.
    assert resumed.evaluate_continuously(10, timeout=30)["global_step"] == 10


def test_nonfinite_loss_stops_naming_the_step(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"), optimizer=keras.optimizers.SGD(1e30))
    controller = _controller(trainer, tmp_path, export=False)
    with pytest.raises(tfdist.loop.NonFiniteLossError, match=r"not finite at global step \d+ \(mean loss of the last loop: nan\)"):
        controller.train(50)


def test_nonfinite_loss_restore_recovers(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    controller = _controller(trainer, tmp_path, export=False, on_nonfinite="restore")
    controller.train(10)  # a good checkpoint at step 10, saved with the sane learning rate
    trainer.optimizer.learning_rate.assign(1e30)
    controller.train(30)  # diverges, goes back to step 10 (learning rate included), finishes
    assert controller.global_step == 30
    assert np.all(np.isfinite(_weights(trainer)[0]))


def test_nonfinite_loss_restore_gives_up_after_bounded_retries(tmp_path):
    class PoisonedAfterStep12(tfdist.loop.Trainer):
        def train_step(self, inputs):
            loss = super().train_step(inputs)
            return tf.where(self.global_step >= 12, tf.constant(float("nan")), loss)

    trainer = PoisonedAfterStep12(
        strategy=tfdist.get_strategy("default"), model=ctl_job.build_model, optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        train_data=data.DataSpec(source=ctl_job.dataset(), global_batch_size=32))
    controller = _controller(trainer, tmp_path, export=False, on_nonfinite="restore",
                             max_nonfinite_restores=2)
    controller.train(10)
    with pytest.raises(tfdist.loop.NonFiniteLossError, match="at global step 13.*2 restores did not help"):
        controller.train(50)
    assert controller.global_step == 10  # back at the last good checkpoint


class _Subclassed(keras.Model):
    """ctl_job's model without an input shape or a build() method."""

    def __init__(self, call_fails=False):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(2)
        self.call_fails = call_fails

    def call(self, x):
        if self.call_fails:
            x = keras.ops.convert_to_numpy(x)  # fails on symbolic tensors
        return self.out(self.hidden(x))


def _seeded(make):
    def build():
        keras.utils.set_random_seed(1)  # as ctl_job.build_model: the same initial weights
        return make()

    return build


@pytest.mark.parametrize("build_model", [
    _seeded(lambda: keras.Sequential([keras.layers.Dense(16, activation="relu"),
                                      keras.layers.Dense(2)])),
    _seeded(_Subclassed),
], ids=["sequential_without_input", "subclassed_without_build"])
def test_models_without_input_shape_train_like_one_with_an_input(tmp_path, cpus, build_model):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    runs = []
    for name, model in [("input", ctl_job.build_model), ("lazy", build_model)]:
        trainer = tfdist.loop.Trainer(
            strategy=strategy, model=model, optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            train_data=data.DataSpec(source=ctl_job.dataset(), global_batch_size=32,
                                     shuffle_buffer=0))
        _controller(trainer, tmp_path / name, export=False).train(20)
        runs.append(_weights(trainer))
    assert len(runs[1]) == 4
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# --- errors ----------------------------------------------------------------------------------


def test_unbuilt_model_without_data():
    with pytest.raises(tfdist.loop.TrainerError, match="no weights yet and there is no data"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("default"), model=_Subclassed,
                            optimizer="sgd", loss="mse")


def test_unbuilt_model_whose_call_fails_on_the_data_shapes():
    spec = data.DataSpec(source=ctl_job.dataset(), global_batch_size=32)
    with pytest.raises(tfdist.loop.TrainerError,
                       match=r"model=_Subclassed '\w+', which fails when called on symbolic "
                             r"inputs shaped like the data, \(32, 8\) \(NotImplementedError: Cannot "
                             r"convert a symbolic tf.Tensor"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("default"),
                            model=lambda: _Subclassed(call_fails=True), optimizer="sgd",
                            loss="mse", train_data=spec)


def test_model_without_trainable_weights():
    spec = data.DataSpec(source=ctl_job.dataset(), global_batch_size=32)
    with pytest.raises(tfdist.loop.TrainerError, match="no trainable weights once built"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("default"),
                            model=lambda: keras.Sequential([keras.layers.Flatten()]),
                            optimizer="sgd", loss="mse", train_data=spec)


def test_model_built_outside_the_scope(cpus):
    model = ctl_job.build_model()
    with pytest.raises(tfdist.loop.TrainerError, match="created outside this strategy's scope"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("mirrored", devices=cpus(2)), model=model,
                            optimizer="sgd", loss="mse")


def test_optimizer_from_another_strategy(cpus):
    other = tfdist.get_strategy("mirrored", devices=cpus(2))
    with other.scope():
        optimizer = keras.optimizers.Adam()
    with pytest.raises(tfdist.loop.TrainerError, match="belongs to another strategy"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("mirrored", devices=cpus(4)),
                            model=ctl_job.build_model, optimizer=optimizer, loss="mse")


def test_unused_optimizer_made_outside_any_scope_is_accepted(cpus):
    trainer = tfdist.loop.Trainer(strategy=tfdist.get_strategy("mirrored", devices=cpus(2)),
                                  model=ctl_job.build_model, optimizer=keras.optimizers.Adam(0.5),
                                  loss="mse")
    assert trainer.learning_rate() == 0.5
    assert keras_strategy_is(trainer)


def keras_strategy_is(trainer):
    from tfdist.compat import keras_optimizer_build

    return keras_optimizer_build.strategy_of(trainer.optimizer) is trainer.strategy


def test_indivisible_batch(cpus):
    spec = data.DataSpec(source=ctl_job.dataset(), global_batch_size=30)
    with pytest.raises(data.DataConfigError, match="global_batch_size=30 does not divide evenly over 4"):
        tfdist.loop.Trainer(strategy=tfdist.get_strategy("mirrored", devices=cpus(4)),
                            model=ctl_job.build_model, optimizer="sgd", loss="mse", train_data=spec)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_steps_per_loop_must_be_positive(tmp_path, bad):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    with pytest.raises(ValueError, match=f"Received: steps_per_loop={bad}"):
        _controller(trainer, tmp_path, steps_per_loop=bad)


def test_model_dir_that_is_a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("keep me")
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory"):
        _controller(trainer, path)
    assert path.read_text() == "keep me"


def test_missing_loss_and_bad_model():
    with pytest.raises(tfdist.loop.TrainerError, match="needs a `loss`"):
        tfdist.loop.Trainer(strategy=tf.distribute.get_strategy(), model=ctl_job.build_model,
                            optimizer="sgd")
    with pytest.raises(tfdist.loop.TrainerError, match="Received: str"):
        tfdist.loop.Trainer(strategy=tf.distribute.get_strategy(), model="resnet",
                            optimizer="sgd", loss="mse")


def test_on_nonfinite_choice(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    with pytest.raises(ValueError, match="Received: on_nonfinite='skip'"):
        _controller(trainer, tmp_path, on_nonfinite="skip")


def test_custom_train_step_override(tmp_path):
    class CountingTrainer(tfdist.loop.Trainer):
        def train_step(self, inputs):
            self.seen.assign_add(tf.shape(inputs[0])[0])
            return super().train_step(inputs)

    strategy = tfdist.get_strategy("default")
    with strategy.scope():
        seen = tf.Variable(0)
    trainer = CountingTrainer.__new__(CountingTrainer)
    trainer.seen = seen
    CountingTrainer.__init__(trainer, strategy=strategy, model=ctl_job.build_model, optimizer="sgd",
                             loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             train_data=data.DataSpec(source=ctl_job.dataset(), global_batch_size=32))
    _controller(trainer, tmp_path, export=False).train(4)
    assert int(seen.numpy()) == 4 * 32


def test_custom_train_step_without_loss_and_default_eval_step():
    # __init__ lets a Trainer without `loss` through when train_step is overridden; the default
    # eval_step still needs one and must say so (it raised "'NoneType' object is not callable").
    class OwnLossTrainer(tfdist.loop.Trainer):
        def train_step(self, inputs):
            return tf.constant(0.0)

    spec = data.DataSpec(source=ctl_job.dataset(), global_batch_size=32)
    trainer = OwnLossTrainer(strategy=tfdist.get_strategy("default"), model=ctl_job.build_model,
                             optimizer="sgd", train_data=spec, eval_data=spec)
    with pytest.raises(tfdist.loop.TrainerError, match="no `loss`, which the default `eval_step` needs"):
        trainer.evaluate(1)
    with pytest.raises(tfdist.loop.TrainerError, match="no `loss`, but `per_example_loss`"):
        trainer.per_example_loss(tf.zeros([2], tf.int64), tf.zeros([2, 2]))


# --- real processes --------------------------------------------------------------------------


@pytest.mark.multiworker
def test_two_workers_train_identically_and_only_the_chief_writes(tmp_path):
    model_dir, out, scratch = tmp_path / "model", tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    multiworker.run_workers(["python", JOB, str(model_dir), str(out), "40"], num_workers=2,
                            env={"TMPDIR": str(scratch)})
    reports = [json.loads((out / f"worker-{i}.json").read_text()) for i in range(2)]
    for report in reports:
        assert report["end"] == 40
        assert report["losses"][1] < report["losses"][0]
    for a, b in zip(reports[0]["weights"], reports[1]["weights"]):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-40")
    top = {p.name for p in model_dir.iterdir()}
    assert top == {"checkpoint", "ckpt-20.index", "ckpt-20.data-00000-of-00001", "ckpt-40.index",
                   "ckpt-40.data-00000-of-00001", "train", "eval", "model.keras", "saved_model"}
    assert len(list((model_dir / "train").iterdir())) == 1  # one events file: the chief's
    assert not list(scratch.glob("tfdist-*"))  # the non-chief removed its scratch checkpoints


@pytest.mark.multiworker
def test_two_workers_and_an_evaluator_task(tmp_path):
    model_dir, out = tmp_path / "model", tmp_path / "out"
    out.mkdir()
    multiworker.run_workers(["python", JOB, str(model_dir), str(out), "60"], num_workers=2,
                            evaluator=True)
    report = json.loads((out / "evaluator-0.json").read_text())
    assert report["evaluated_steps"], f"the evaluator evaluated no checkpoint: {report}"
    assert report["evaluated_steps"][-1] == 60, report  # it stopped at the final checkpoint
    assert report["evaluated_steps"] == sorted(set(report["evaluated_steps"]))
    assert report["last"]["sparse_categorical_accuracy"] > 0.7
    assert len(list((model_dir / "eval").glob("events.*"))) == 2  # chief's and evaluator's


def test_evaluate_continuously_in_process_stops_at_the_last_step(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    _controller(trainer, tmp_path, checkpoint_every=10, export=False).train(30)
    watcher = _controller(ctl_job.make_trainer(tfdist.get_strategy("default")), tmp_path)
    results = watcher.evaluate_continuously(30, timeout=30)
    assert results["global_step"] == 30
    assert results["loss"] == pytest.approx(
        _controller(trainer, tmp_path / "other", export=False).evaluate()["loss"], rel=1e-5)


@pytest.mark.multiworker
def test_sigterm_to_one_worker_checkpoints_the_whole_group(tmp_path):
    model_dir, out = tmp_path / "model", tmp_path / "out"
    out.mkdir()
    # ctl_job waits for the signal in lockstep, so both stop at the boundary after it: step 15.
    # failure_grace: the second worker's exit may stall on iterator teardown (the reaper waits
    # up to 60 s); it must not be stopped before it exits 143 by itself.
    results = multiworker.run_workers(
        ["python", JOB, str(model_dir), str(out), "100000", str(tmp_path / "ready")],
        num_workers=2, env={"CTL_JOB_SIGTERM_SELF": "worker:1"}, check=False, failure_grace=75)
    assert [r.returncode for r in results] == [checkpoint.PREEMPTED_EXIT_CODE] * 2, [
        r.output[-2000:] for r in results]
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-15")
    for r in results:
        assert "saved a checkpoint at step 15 " in r.output, r.output[-2000:]


def test_sigterm_saves_at_the_current_step_and_resume_continues(tmp_path):
    model_dir, out = tmp_path / "model", tmp_path / "out"
    out.mkdir()
    ready = tmp_path / "ready"
    env = dict(os.environ, PYTHONPATH=multiworker.PYTHONPATH)
    proc = subprocess.Popen([sys.executable, JOB, str(model_dir), str(out), "100000", str(ready)],
                            env=env, cwd=multiworker.REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():  # a file written by the job, not a guess at timing
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "job never became ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == checkpoint.PREEMPTED_EXIT_CODE, output
    assert "Traceback" not in output
    # The job waits for the signal after `ready`, then stops at the next loop boundary.
    assert "preempted by SIGTERM; saved a checkpoint at step 15 " in output
    saved_step = 15
    assert tf.train.latest_checkpoint(str(model_dir)).endswith(f"ckpt-{saved_step}")

    # A restart resumes from exactly that step.
    multiworker_env = {"TF_CONFIG": ""}
    result = subprocess.run([sys.executable, JOB, str(model_dir), str(out), str(saved_step + 10)],
                            env={**env, **multiworker_env}, cwd=multiworker.REPO_ROOT,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "worker-0.json").read_text())
    assert report["start"] == saved_step and report["end"] == saved_step + 10


def _own_sigterm_handler(signum, frame):
    raise AssertionError("the test's own handler must never be called")


def test_sigterm_handler_is_installed_only_while_the_controller_runs(tmp_path):
    previous = signal.signal(signal.SIGTERM, _own_sigterm_handler)
    try:
        trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
        controller = _controller(trainer, tmp_path, handle_preemption=True, export=False)
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler  # not at construction
        seen = []
        original = trainer.train_loop
        trainer.train_loop = lambda *a: (seen.append(signal.getsignal(signal.SIGTERM)), original(*a))
        controller.train(10)
        assert seen and all(h is not _own_sigterm_handler for h in seen)  # tfdist's, during train
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler  # back after it returns

        controller.train_and_evaluate(20, eval_interval=10)
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler

        controller.evaluate_continuously(20, timeout=5)
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigterm_handler_is_restored_when_train_raises(tmp_path):
    previous = signal.signal(signal.SIGTERM, _own_sigterm_handler)
    try:
        trainer = ctl_job.make_trainer(tfdist.get_strategy("default"),
                                       optimizer=keras.optimizers.SGD(1e30))
        controller = _controller(trainer, tmp_path, handle_preemption=True, export=False)
        with pytest.raises(tfdist.loop.NonFiniteLossError):
            controller.train(50)
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_controller_as_a_context_manager_handles_sigterm_for_the_block(tmp_path):
    previous = signal.signal(signal.SIGTERM, _own_sigterm_handler)
    try:
        trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
        with _controller(trainer, tmp_path, handle_preemption=True, export=False) as controller:
            inside = signal.getsignal(signal.SIGTERM)
            controller.train(10)
            assert signal.getsignal(signal.SIGTERM) is inside  # train leaves the block's handler
        assert inside is not _own_sigterm_handler
        assert signal.getsignal(signal.SIGTERM) is _own_sigterm_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_preemption_requested_reports_a_handled_sigterm(tmp_path):
    previous = signal.signal(signal.SIGTERM, _own_sigterm_handler)
    try:
        trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
        with _controller(trainer, tmp_path, handle_preemption=True, export=False) as controller:
            assert not controller.preemption_requested
            signal.raise_signal(signal.SIGTERM)  # to this thread: handled before it returns
            assert controller.preemption_requested
            with pytest.raises(checkpoint.Preempted, match="saved a checkpoint at step 5 "):
                controller.train(20)  # stops at its first loop boundary
        assert controller.preemption_requested  # the flag outlives the handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_evaluator_stops_waiting_on_sigterm(tmp_path):
    trainer = ctl_job.make_trainer(tfdist.get_strategy("default"))
    _controller(trainer, tmp_path, checkpoint_every=10, export=False).train(10)
    watcher = _controller(ctl_job.make_trainer(tfdist.get_strategy("default")), tmp_path,
                          handle_preemption=True)
    original = watcher.evaluate

    def evaluate_then_sigterm(steps=None):  # the signal lands while it waits for step 1000
        results = original(steps)
        os.kill(os.getpid(), signal.SIGTERM)
        return results

    watcher.evaluate = evaluate_then_sigterm
    started = time.monotonic()
    with pytest.raises(checkpoint.Preempted, match="preempted by SIGTERM at step 10"):
        watcher.evaluate_continuously(1000, timeout=120)
    assert time.monotonic() - started < 60  # not the 120 s timeout
