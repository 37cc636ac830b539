"""The one "chief writes, the others write to a scratch directory" rule (`tfdist.checkpoint.TaskDir`)
and chief-only export (`tfdist.export`), each route's user: checkpoints and every Keras callback.

Non-chief tasks are simulated in this process with their `ClusterInfo` (worker:1 of two): what
they write does not depend on the strategy. Real two-worker runs are in test_fit.py.
"""

import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import checkpoint
from tfdist import export
from tfdist.keras import callbacks

_TWO = {"worker": ["localhost:1", "localhost:2"]}
CHIEF = tfdist.cluster.resolve({"cluster": _TWO, "task": {"type": "worker", "index": 0}})
WORKER = tfdist.cluster.resolve({"cluster": _TWO, "task": {"type": "worker", "index": 1}})


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The directory tempfile creates scratch directories in, for this test only."""
    path = tmp_path / "scratch"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def test_task_dir_on_the_chief_is_the_directory(tmp_path, scratch):
    target = checkpoint.TaskDir(str(tmp_path / "run"), CHIEF)
    assert (tmp_path / "run").is_dir()  # validated and created at once
    with target as path:
        assert path == str(tmp_path / "run")
    assert (tmp_path / "run").is_dir() and not list(scratch.iterdir())


def test_task_dir_elsewhere_is_a_fresh_scratch_directory_each_time(tmp_path, scratch):
    target = checkpoint.TaskDir(str(tmp_path / "run"), WORKER, purpose="tensorboard")
    assert not (tmp_path / "run").exists()  # a non-chief never creates the chief's directory
    first = target.acquire()
    assert first.startswith(str(scratch / "tfdist-tensorboard-worker-1-"))
    second = target.acquire()  # the previous one is released first
    assert second != first and [p.name for p in scratch.iterdir()] == [second.rsplit("/", 1)[1]]
    target.release()
    target.release()  # idempotent
    assert not list(scratch.iterdir())


def test_task_dir_validates_the_directory_on_the_chief_only(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory"):
        checkpoint.TaskDir(str(a_file), CHIEF)
    assert checkpoint.TaskDir(str(a_file), WORKER).directory == str(a_file)


def test_checkpoint_manager_off_the_chief_saves_to_scratch_and_deletes_it(tmp_path, scratch):
    step = tf.Variable(3)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(step=step), str(tmp_path / "run"),
                                           cluster=WORKER)
    assert manager.save(3) is None
    assert not (tmp_path / "run").exists() and not list(scratch.iterdir())
    chief = checkpoint.CheckpointManager(tf.train.Checkpoint(step=step), str(tmp_path / "run"),
                                         cluster=CHIEF)
    assert chief.save(3).endswith("ckpt-3")


@pytest.mark.parametrize("cluster", [CHIEF, WORKER], ids=["chief", "worker"])
def test_every_callback_writes_the_users_directories_from_the_chief_only(tmp_path, scratch, cluster):
    x = np.zeros((16, 2), np.float32)
    used = [callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=1,
                                       delete_checkpoint=False, cluster=cluster),
            callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "m-{epoch}.keras"), cluster=cluster),
            callbacks.TensorBoard(str(tmp_path / "tb"), cluster=cluster)]
    _model().fit(x, x[:, :1], epochs=2, batch_size=8, verbose=0, callbacks=used)
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != "scratch")
    if cluster is CHIEF:
        assert written == ["backup", "ckpt", "tb"]
        assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
            "m-1.keras", "m-2.keras", "training_done"]
    else:
        assert written == []
    assert not list(scratch.iterdir())  # every scratch copy was deleted


def test_export_model_on_the_chief_writes_both_formats(tmp_path):
    model = _model()
    paths = export.export_model(model, str(tmp_path / "run"), cluster=CHIEF)
    assert paths == {"keras": str(tmp_path / "run" / "model.keras"),
                     "saved_model": str(tmp_path / "run" / "saved_model")}
    assert keras.models.load_model(paths["keras"]).count_params() == model.count_params()
    assert tf.saved_model.load(paths["saved_model"]).serve(tf.zeros((3, 2))).shape == (3, 1)


def test_export_model_off_the_chief_is_a_no_op(tmp_path):
    assert export.export_model(_model(), str(tmp_path / "run"), cluster=WORKER) == {}
    assert not (tmp_path / "run").exists()


def test_export_model_rejects_a_non_path(tmp_path):
    with pytest.raises(ValueError, match="Invalid value for argument `model_dir`. Received: model_dir=3"):
        export.export_model(_model(), 3, cluster=CHIEF)


def test_checkpoint_export_model_is_a_deprecated_alias(tmp_path):
    with pytest.deprecated_call(match="moved to tfdist.export.export_model"):
        paths = checkpoint.export_model(_model(), str(tmp_path / "run"))  # a local process: chief
    assert sorted(paths) == ["keras", "saved_model"]
