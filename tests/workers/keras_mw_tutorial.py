"""The TF multi-worker Keras tutorial (tensorflow.org/tutorials/distribute/multi_worker_with_keras),
as written there, with only these changes:

- the strategy comes from `tfdist.get_strategy()` (instead of `tf.distribute.MultiWorkerMirroredStrategy()`);
- `BackupAndRestore` is imported from `tfdist.keras.callbacks`;
- offline: MNIST cannot be downloaded here, so `mnist_dataset` reads scikit-learn's bundled 8x8
  digits (same shape of code: from_tensor_slices, shuffle, repeat, batch), the input is 8x8,
  and SGD takes learning_rate=0.05 (0.001 in the tutorial) so 210 steps on 8x8 digits learn.

Test harness additions (outside the tutorial's code): a fixed seed (TUTORIAL_SEED, default 0), so
the accuracy the tests assert is not a draw (unseeded: mean 0.866, worst of 200 inits 0.82, against
their 0.8); argv = BACKUP_DIR OUT_DIR; the final evaluation and weights written to
OUT_DIR/<task>.json; CRASH_AT_STEP=N, which makes worker 1 kill itself with SIGKILL after N
training steps (a crashed worker; with CRASH_STAMP=path it first writes its time there);
TERM_AT_STEP=N, the same with SIGTERM (a preempted worker; its callback runs before the backup's,
so the backup sees the signal at its next check); TUTORIAL_EPOCHS (default 3, the tutorial's); and
TUTORIAL_SAVE_SECTION=1, which runs the tutorial's model-saving and checkpoint sections after
`fit` (`save_section`).
"""

import json
import os
import signal
import sys
import time

import numpy as np
import tensorflow as tf
import keras
from input_pipelines import digits as digits_data

import tfdist
from tfdist.keras.callbacks import BackupAndRestore


# --- mnist_setup.py of the tutorial ------------------------------------------------------------
def mnist_dataset(batch_size):
    images, target = digits_data.load_raw()
    x_train = images[:1437].astype(np.float32) / 16.0
    y_train = target[:1437].astype(np.int64)
    train_dataset = tf.data.Dataset.from_tensor_slices(
        (x_train, y_train)).shuffle(60000).repeat().batch(batch_size)
    return train_dataset


def build_and_compile_cnn_model():
    model = keras.Sequential([
        keras.layers.InputLayer(input_shape=(8, 8)),
        keras.layers.Reshape(target_shape=(8, 8, 1)),
        keras.layers.Conv2D(32, 3, activation='relu'),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation='relu'),
        keras.layers.Dense(10)
    ])
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.SGD(learning_rate=0.05),  # tutorial: 0.001 (MNIST)
        metrics=['accuracy'])
    return model


# --- the tutorial's main.py ----------------------------------------------------------------------
def main(backup_dir, out_dir):
    per_worker_batch_size = 64
    tf_config = json.loads(os.environ['TF_CONFIG'])
    num_workers = len(tf_config['cluster']['worker'])

    strategy = tfdist.get_strategy()

    global_batch_size = per_worker_batch_size * num_workers
    multi_worker_dataset = mnist_dataset(global_batch_size)

    with strategy.scope():
        # Model building/compiling need to be within `strategy.scope()`.
        multi_worker_model = build_and_compile_cnn_model()

    backup = BackupAndRestore(backup_dir=backup_dir, save_freq=10)
    callbacks = _harness_first_callbacks() + [backup]
    callbacks += _harness_callbacks(multi_worker_model)
    epochs = int(os.environ.get("TUTORIAL_EPOCHS", 3))  # harness: shorter runs for the save tests
    history = multi_worker_model.fit(multi_worker_dataset, epochs=epochs, steps_per_epoch=70,
                                     callbacks=callbacks, verbose=2)
    _report(multi_worker_model, history, backup, out_dir)
    if os.environ.get("TUTORIAL_SAVE_SECTION"):
        save_section(strategy, multi_worker_model, multi_worker_dataset, out_dir)


# --- the tutorial's "Model saving and loading" and "Checkpoint saving and restoring" ----------------
def _is_chief(task_type, task_id):
    # Only `worker` tasks here: worker 0 is the chief (task_type None: a single process).
    return (task_type == 'worker' and task_id == 0) or task_type is None


def _get_temp_dir(dirpath, task_id):
    base_dirpath = 'workertemp_' + str(task_id)
    temp_dir = os.path.join(dirpath, base_dirpath)
    tf.io.gfile.makedirs(temp_dir)
    return temp_dir


def write_filepath(filepath, task_type, task_id):
    dirpath = os.path.dirname(filepath)
    base = os.path.basename(filepath)
    if not _is_chief(task_type, task_id):
        dirpath = _get_temp_dir(dirpath, task_id)
    return os.path.join(dirpath, base)


def save_section(strategy, multi_worker_model, multi_worker_dataset, out_dir):
    """TUTORIAL_SAVE_SECTION=1: the tutorial's saving sections, with its one Keras 3 edit
    (docs/keras_migration.md K6: the model path ends in `.keras`; the tutorial's is a directory)."""
    model_path = os.path.join(out_dir, 'keras-model.keras')  # tutorial: '/tmp/keras-model'
    task_type, task_id = (strategy.cluster_resolver.task_type,
                          strategy.cluster_resolver.task_id)
    write_model_path = write_filepath(model_path, task_type, task_id)
    multi_worker_model.save(write_model_path)
    if not _is_chief(task_type, task_id):
        tf.io.gfile.rmtree(os.path.dirname(write_model_path))
    _barrier(strategy)  # harness: the chief's file is complete before anyone loads it
    loaded_model = keras.models.load_model(model_path)
    # Now that the model is restored, and can continue with the training.
    single_worker_dataset = mnist_dataset(64)
    loaded = loaded_model.fit(single_worker_dataset, epochs=2, steps_per_epoch=20, verbose=0)

    checkpoint_dir = os.path.join(out_dir, 'ckpt')  # tutorial: '/tmp/ckpt'
    checkpoint = tf.train.Checkpoint(model=multi_worker_model)
    write_checkpoint_dir = write_filepath(checkpoint_dir, task_type, task_id)
    checkpoint_manager = tf.train.CheckpointManager(
        checkpoint, directory=write_checkpoint_dir, max_to_keep=1)
    checkpoint_manager.save()
    if not _is_chief(task_type, task_id):
        tf.io.gfile.rmtree(write_checkpoint_dir)
    _barrier(strategy)
    latest_checkpoint = tf.train.latest_checkpoint(checkpoint_dir)
    checkpoint.restore(latest_checkpoint)
    resumed = multi_worker_model.fit(multi_worker_dataset, epochs=2, steps_per_epoch=20, verbose=0)
    with open(os.path.join(out_dir, f"save-{task_type}-{task_id}.json"), "w") as f:
        json.dump({"loaded_iterations": int(loaded_model.optimizer.iterations.numpy()),
                   "loaded_loss": loaded.history["loss"],
                   "latest_checkpoint": os.path.basename(latest_checkpoint),
                   "resumed_iterations": int(multi_worker_model.optimizer.iterations.numpy()),
                   "resumed_loss": resumed.history["loss"],
                   "left_in_out_dir": sorted(os.listdir(out_dir))}, f)


def _barrier(strategy):
    # The notebook ran these steps one after another; as worker processes they need to wait
    # for the chief's writes. One all-reduce across the workers is the barrier.
    tfdist.checkpoint.any_worker(strategy, False)


# --- harness -------------------------------------------------------------------------------------
class _CrashAtStep(keras.callbacks.Callback):
    def __init__(self, step, signum=signal.SIGKILL):
        super().__init__()
        self.step = step
        self.signum = signum
        self.sent = False

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            stamp = os.environ.get("CRASH_STAMP")
            if stamp:  # when it died, for tests that time the survivors
                with open(stamp, "w") as f:
                    f.write(repr(time.time()))
            if not self.sent:
                self.sent = True
                os.kill(os.getpid(), self.signum)


def _harness_first_callbacks():
    """TERM_AT_STEP: before the backup callback, which then sees the signal at its next check."""
    info = tfdist.cluster.resolve()
    term = os.environ.get("TERM_AT_STEP")
    if term and info.task_type == "worker" and info.task_id == 1:
        return [_CrashAtStep(int(term), signal.SIGTERM)]
    return []


def _harness_callbacks(model):
    """CRASH_AT_STEP, STEPS_PER_EXECUTION, EXTRA_DIR (ModelCheckpoint + TensorBoard + export),
    and WITHOUT_FIX=name (runs with that tfdist.compat.keras_fit workaround removed: canaries)."""
    info = tfdist.cluster.resolve()
    if os.environ.get("WITHOUT_FIX"):
        from tfdist.compat import keras_fit
        keras_fit.uninstall(os.environ["WITHOUT_FIX"])
    callbacks = []
    crash = os.environ.get("CRASH_AT_STEP")
    if crash and info.task_type == "worker" and info.task_id == 1:
        callbacks.append(_CrashAtStep(int(crash)))
    if os.environ.get("STEPS_PER_EXECUTION"):
        model.steps_per_execution = int(os.environ["STEPS_PER_EXECUTION"])
    extra = os.environ.get("EXTRA_DIR")
    if extra:
        from tfdist.keras.callbacks import ModelCheckpoint, TensorBoard
        callbacks += [
            ModelCheckpoint(os.path.join(extra, "best.keras"), monitor="loss", save_best_only=True),
            TensorBoard(os.path.join(extra, "tb")),
        ]
    return callbacks


def _report(model, history, backup, out_dir):
    images, target = digits_data.load_raw()
    x_test = images[1437:].astype(np.float32) / 16.0
    y_test = target[1437:].astype(np.int64)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(40, drop_remainder=True)
    loss, accuracy = model.evaluate(test, verbose=0)
    predicted = model.predict(x_test, batch_size=40, verbose=0)
    predict_in_order = bool(np.allclose(predicted, model(x_test).numpy(), rtol=1e-4, atol=1e-5))
    info = tfdist.cluster.resolve()
    extra = os.environ.get("EXTRA_DIR")
    if extra and info.is_chief:
        model.save(os.path.join(extra, "final.keras"))
        model.export(os.path.join(extra, "saved_model"), verbose=False)
    with open(os.path.join(out_dir, f"{info.task_type}-{info.task_id}.json"), "w") as f:
        json.dump({"restored": [backup.restored_epoch, backup.restored_step],
                   "steps_per_execution": model.steps_per_execution,
                   "predict_in_order": predict_in_order,
                   "predict_rows": int(predicted.shape[0]),"history": history.history, "test_accuracy": accuracy, "test_loss": loss,
                   "iterations": int(model.optimizer.iterations.numpy()),
                   "weights": [w.tolist() for w in model.get_weights()]}, f)


if __name__ == '__main__':
    keras.utils.set_random_seed(int(os.environ.get("TUTORIAL_SEED", "0")))
    if os.environ.get("WITHOUT_FIX"):
        # Canary runs are expected to fail; exit at once rather than wait in TF's shutdown
        # barrier for a peer that is stuck in a collective.
        try:
            main(sys.argv[1], sys.argv[2])
        except Exception:  # noqa: BLE001 - the error text is what the canary checks
            import traceback
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
    else:
        main(sys.argv[1], sys.argv[2])
