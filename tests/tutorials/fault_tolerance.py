"""The TF2 part of TF's guide "Migrate fault tolerance mechanisms" (site/en/guide/migrate/
fault_tolerance), written after its structure with the edits of docs/tutorials.md applied:

- `tf.keras.callbacks.BackupAndRestore` -> `tfdist.keras.callbacks.BackupAndRestore`
  (Keras 3's own corrupts itself under multi-worker training and cannot resume mid-epoch).
`tf.keras` is Keras 3 in TF 2.21, so the rest runs as written.

Offline and small: random 28x28 "images" in place of MNIST, and fewer epochs and steps
(`EPOCHS`, `STEPS_PER_EPOCH`; the guide has 10 and 100), the interruptions and backups scaled
alike. argv = OUT_DIR: what each section did is written to OUT_DIR/report.json for the tests.
"""

import json
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf

import tfdist

EPOCHS = 4  # the guide: 10
STEPS_PER_EPOCH = 20  # the guide: 100
BATCH_SIZE = 32  # Keras's default, as the guide uses

# --- data: the shapes of MNIST, scaled to [0, 1], small -----------------------------------------
rng = np.random.default_rng(0)
x_train = rng.random((EPOCHS * STEPS_PER_EPOCH * BATCH_SIZE, 28, 28), dtype=np.float32)
y_train = rng.integers(0, 10, size=len(x_train)).astype(np.int64)
x_test = rng.random((64, 28, 28), dtype=np.float32)
y_test = rng.integers(0, 10, size=len(x_test)).astype(np.int64)


# --- epoch-level backups ---------------------------------------------------------------------------
class InterruptAtEpoch(tf.keras.callbacks.Callback):
    # A callback that interrupts training artificially.
    def __init__(self, interrupting_epoch=1):
        super().__init__()
        self.interrupting_epoch = interrupting_epoch

    def on_epoch_end(self, epoch, log=None):
        if epoch == self.interrupting_epoch:
            raise RuntimeError('Interruption')


def create_model():
    return tf.keras.models.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28)),
        tf.keras.layers.Dense(512, activation='relu'),
        tf.keras.layers.Dropout(0.2),
        tf.keras.layers.Dense(10)
    ])


def epoch_level(report):
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = create_model()
    model.compile(optimizer='adam', loss=loss, metrics=['accuracy'])
    log_dir = tempfile.mkdtemp()
    backup_restore_callback = tfdist.keras.callbacks.BackupAndRestore(backup_dir=log_dir)
    try:
        model.fit(x=x_train, y=y_train, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                  validation_data=(x_test, y_test),
                  callbacks=[backup_restore_callback, InterruptAtEpoch()], verbose=0)
    except Exception as e:
        print(f'{type(e).__name__}:{e}')
        report["interrupted"] = f'{type(e).__name__}:{e}'
    report["steps_before"] = int(model.optimizer.iterations.numpy())

    # A fresh model resumes from the backup.
    model = create_model()
    model.compile(optimizer='adam', loss=loss, metrics=['accuracy'], steps_per_execution=10)
    history = model.fit(x=x_train, y=y_train, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                        validation_data=(x_test, y_test), callbacks=[backup_restore_callback],
                        verbose=0)
    report.update(restored=[backup_restore_callback.restored_epoch,
                            backup_restore_callback.restored_step],
                  epochs_run=len(history.history["loss"]),
                  steps_after=int(model.optimizer.iterations.numpy()),
                  backup_left=os.path.exists(log_dir))


# --- step-level backups (save_freq) -------------------------------------------------------------------
class InterruptAtStep(tf.keras.callbacks.Callback):
    # A callback that interrupts training artificially.
    def __init__(self, interrupting_step=35):
        super().__init__()
        self.total_step_count = 0
        self.interrupting_step = interrupting_step

    def on_batch_begin(self, batch, logs=None):
        self.total_step_count += 1

    def on_batch_end(self, batch, logs=None):
        if self.total_step_count == self.interrupting_step:
            print("\nInterrupting at step count", self.total_step_count)
            raise RuntimeError('Interruption')


def step_level(report):
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    log_dir_2 = tempfile.mkdtemp()
    backup_restore_callback = tfdist.keras.callbacks.BackupAndRestore(
        backup_dir=log_dir_2, save_freq=6)  # the guide: 30 of 100 steps per epoch
    model = create_model()
    model.compile(optimizer='adam', loss=loss, metrics=['accuracy'])
    try:
        model.fit(x=x_train, y=y_train, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                  validation_data=(x_test, y_test),
                  callbacks=[backup_restore_callback, InterruptAtStep()], verbose=0)
    except Exception as e:
        print(f'{type(e).__name__}:{e}')
        report["interrupted"] = f'{type(e).__name__}:{e}'
    report["steps_before"] = int(model.optimizer.iterations.numpy())

    model = create_model()
    model.compile(optimizer='adam', loss=loss, metrics=['accuracy'], steps_per_execution=2)
    history = model.fit(x=x_train, y=y_train, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH,
                        validation_data=(x_test, y_test), callbacks=[backup_restore_callback],
                        verbose=0)
    report.update(restored=[backup_restore_callback.restored_epoch,
                            backup_restore_callback.restored_step],
                  epochs_run=len(history.history["loss"]),
                  steps_after=int(model.optimizer.iterations.numpy()))


# --- a custom loop with tf.train.Checkpoint and CheckpointManager --------------------------------------
def custom_loop(report):
    model = create_model()
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.001)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    log_dir = tempfile.mkdtemp()
    epochs = 5
    steps_per_epoch = 5

    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    checkpoint_manager = tf.train.CheckpointManager(checkpoint, log_dir, max_to_keep=2)
    losses = []
    for epoch in range(epochs):
        if epoch > 0:
            tf.train.load_checkpoint(save_path)  # noqa: F821 -- bound by the previous epoch's save, as in the guide
        print(f"\nStart of epoch {epoch}")
        for step in range(steps_per_epoch):
            with tf.GradientTape() as tape:
                logits = model(x_test, training=True)  # the guide: all of x_train
                loss_value = loss_fn(y_test, logits)
                grads = tape.gradient(loss_value, model.trainable_weights)
                optimizer.apply_gradients(zip(grads, model.trainable_weights))
            save_path = checkpoint_manager.save()
            print(f"Checkpoint saved to {save_path}")
            print(f"Training loss at step {step}: {loss_value}")
            losses.append(float(loss_value))
    report.update(checkpoints=[os.path.basename(p) for p in checkpoint_manager.checkpoints],
                  iterations=int(optimizer.iterations.numpy()), losses=losses)


def main(out_dir):
    tf.keras.utils.set_random_seed(0)
    report = {}
    for name, section in (("epoch_level", epoch_level), ("step_level", step_level),
                          ("custom_loop", custom_loop)):
        report[name] = {}
        try:
            section(report[name])
        except Exception as e:  # noqa: BLE001 - report each section, then fail the program
            report[name]["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if any("error" in r for r in report.values()):
        sys.exit(1)


if __name__ == '__main__':
    main(sys.argv[1])
