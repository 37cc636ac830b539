"""tfdist.keras.SidecarEvaluator: single-process tests, and a 2-worker fit job + evaluator task."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import checkpoint
from tfdist.keras import callbacks
from tests import multiworker
from tests.workers import sidecar_job


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    return x, y


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _eval_data():
    x, y = _data(32, seed=1)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def read_scalars(log_dir):
    """{tag: {step: value}} from the event files under `log_dir`."""
    scalars = {}
    for name in tf.io.gfile.listdir(log_dir):
        if not name.startswith("events."):
            continue
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = float(
                    tf.make_ndarray(value.tensor))
    return scalars


def _fit(tmp_path, filename, epochs=3, **kwargs):
    keras.utils.set_random_seed(0)
    model = _model()
    x, y = _data()
    ckpt_dir = tmp_path / "ckpt"
    saver = callbacks.ModelCheckpoint(str(ckpt_dir / filename), **kwargs)
    model.fit(x, y, batch_size=16, epochs=epochs, callbacks=[saver], verbose=0)
    return model, ckpt_dir


def test_evaluates_the_last_weights_file_and_stops_on_the_done_marker(tmp_path):
    trained, ckpt_dir = _fit(tmp_path, "ckpt-{epoch}.weights.h5", save_weights_only=True)
    assert sorted(os.listdir(ckpt_dir)) == [
        "ckpt-1.weights.h5", "ckpt-2.weights.h5", "ckpt-3.weights.h5", "training_done"]
    marker = checkpoint.read_done_marker(str(ckpt_dir))
    assert marker == {"global_step": 12, "checkpoint": "ckpt-3.weights.h5"}
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(ckpt_dir))
    results = evaluator.start()
    # Training had ended: only the newest checkpoint is evaluated, and it is the trained model.
    assert [n for n, _ in evaluator.evaluated] == [3]
    expected = trained.evaluate(_eval_data(), return_dict=True, verbose=0)
    assert results["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert results["checkpoint_number"] == 3
    scalars = read_scalars(str(ckpt_dir / "eval"))
    assert scalars["loss"] == {3: pytest.approx(expected["loss"], rel=1e-5)}
    assert scalars["accuracy"] == {3: pytest.approx(expected["accuracy"])}


def test_max_evaluations_with_keras_files_and_own_log_dir(tmp_path):
    trained, ckpt_dir = _fit(tmp_path, "model-{epoch:02d}.keras", epochs=2)
    os.remove(ckpt_dir / "training_done")  # max_evaluations alone must stop it
    log_dir = tmp_path / "logs"
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(ckpt_dir),
                                              max_evaluations=2, log_dir=str(log_dir))
    results = evaluator.start()
    assert [n for n, _ in evaluator.evaluated] == [2]
    expected = trained.evaluate(_eval_data(), return_dict=True, verbose=0)
    assert results["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert set(read_scalars(str(log_dir))["loss"]) == {2}


def test_tf_train_checkpoints_of_a_checkpoint_manager(tmp_path):
    keras.utils.set_random_seed(0)
    model = _model()
    x, y = _data()
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(model=model, optimizer=model.optimizer),
                                           str(tmp_path))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    manager.save(4)
    first = model.evaluate(_eval_data(), return_dict=True, verbose=0)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    manager.save(8)
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(tmp_path),
                                              max_evaluations=8)
    results = evaluator.start()
    assert [n for n, _ in evaluator.evaluated] == [8]
    second = model.evaluate(_eval_data(), return_dict=True, verbose=0)
    assert results["loss"] == pytest.approx(second["loss"], rel=1e-5)
    assert results["loss"] != pytest.approx(first["loss"], rel=1e-5)


def test_skips_hidden_files_and_retries_an_unreadable_one(tmp_path):
    _, ckpt_dir = _fit(tmp_path, "ckpt-{epoch}.weights.h5", epochs=1, save_weights_only=True)
    os.remove(ckpt_dir / "training_done")
    # A file being written by tfdist's ModelCheckpoint (hidden name) is never read; a newest one
    # that another writer has half-written is retried (here until the timeout), not a crash,
    # and not passed over for an older one.
    (ckpt_dir / ".tmp-ckpt-9.weights.h5").write_bytes(b"half")
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(ckpt_dir),
                                              poll_secs=0.1, timeout=1.0)
    assert evaluator.start()["checkpoint_number"] == 1
    (ckpt_dir / "ckpt-5.weights.h5").write_bytes(b"half-written")
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(ckpt_dir),
                                              poll_secs=0.1, timeout=1.0)
    assert evaluator.start() == {}
    assert evaluator.evaluated == []


def test_timeout_without_any_checkpoint(tmp_path):
    evaluator = tfdist.keras.SidecarEvaluator(_model(), _eval_data(), str(tmp_path),
                                              poll_secs=0.1, timeout=0.5)
    assert evaluator.start() == {}
    assert evaluator.evaluated == []


def test_model_checkpoint_leaves_no_temporary_file_and_clears_an_old_marker(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    checkpoint.write_done_marker(str(ckpt_dir), 99)
    model = _model()
    x, y = _data()
    saver = callbacks.ModelCheckpoint(str(ckpt_dir / "best.keras"), monitor="loss",
                                      save_best_only=True)

    class SeeMarker(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.during = checkpoint.read_done_marker(str(ckpt_dir))

    seen = SeeMarker()
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[saver, seen], verbose=0)
    assert seen.during is None  # removed when fit started
    assert sorted(os.listdir(ckpt_dir)) == ["best.keras", "training_done"]
    assert checkpoint.read_done_marker(str(ckpt_dir))["global_step"] == 8


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="m"), TypeError, r"Invalid value for argument `model`. Received: model=str"),
    (dict(model="uncompiled"), ValueError, r"`model`: it is not compiled"),
    (dict(model="unbuilt"), ValueError, r"`model`: it is not built"),
    (dict(checkpoint_dir=""), ValueError, r"`checkpoint_dir`. Received: checkpoint_dir=''"),
    (dict(checkpoint_dir="FILE"), ValueError, r"`checkpoint_dir`: .* is a file"),
    (dict(steps=0), ValueError, r"`steps`. Received: steps=0"),
    (dict(max_evaluations=True), ValueError, r"`max_evaluations`. Received: max_evaluations=True"),
    (dict(poll_secs=0), ValueError, r"`poll_secs`. Received: poll_secs=0"),
    (dict(timeout=-1), ValueError, r"`timeout`. Received: timeout=-1"),
    (dict(callbacks=["tb"]), TypeError, r"`callbacks`. Received an element 'tb'"),
])
def test_bad_arguments(tmp_path, kwargs, error, match):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    args = dict(model=_model(), data=_eval_data(), checkpoint_dir=str(tmp_path))
    if kwargs.get("model") == "uncompiled":
        kwargs["model"] = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    elif kwargs.get("model") == "unbuilt":
        kwargs["model"] = keras.Sequential([keras.layers.Dense(2)])
        kwargs["model"].compile(loss="mse")
    if kwargs.get("checkpoint_dir") == "FILE":
        kwargs["checkpoint_dir"] = str(a_file)
    with pytest.raises(error, match=match) as info:
        tfdist.keras.SidecarEvaluator(**{**args, **kwargs})
    assert "\n" not in str(info.value)


@pytest.mark.multiworker
def test_two_worker_fit_and_an_evaluator_task(tmp_path):
    results = multiworker.run_workers(
        ["python", "-m", "tests.workers.sidecar_job", str(tmp_path)], num_workers=2,
        evaluator=True, timeout=120)
    assert [r.name for r in results][-1] == "evaluator:0"
    assert all(r.returncode == 0 for r in results)
    ckpt_dir = tmp_path / "ckpt"
    marker = checkpoint.read_done_marker(str(ckpt_dir))
    assert marker["checkpoint"] == "ckpt-3.weights.h5"
    report = json.loads((tmp_path / "evaluator.json").read_text())
    # It evaluated at least one checkpoint, the last one of them the final one.
    assert report["evaluated"] and report["evaluated"][-1] == 3
    assert report["evaluated"] == sorted(set(report["evaluated"]))
    final = sidecar_job.build_model()
    final.load_weights(str(ckpt_dir / "ckpt-3.weights.h5"))
    expected = final.evaluate(sidecar_job.eval_data(), return_dict=True, verbose=0)["loss"]
    assert report["results"]["loss"] == pytest.approx(expected, rel=1e-5)
    scalars = read_scalars(str(ckpt_dir / "eval"))
    assert sorted(scalars["loss"]) == report["evaluated"]
    assert scalars["loss"][3] == pytest.approx(expected, rel=1e-5)
    assert not [n for n in os.listdir(ckpt_dir) if n.startswith(".")]
