"""One phase of an elastic job: the custom loop and Keras `fit`, each resumed to a target step.

Usage: elastic_job.py WORK_DIR TARGET_STEP OUT_DIR

Both routes run in the same process, under one strategy (MultiWorkerMirroredStrategy under a
multi-worker TF_CONFIG), at the global batch GLOBAL_BATCH whatever the number of workers, with
an exponentially decaying learning rate. `WORK_DIR/ctl` is the loop's model dir and
`WORK_DIR/backup` the `fit` backup; a later phase at another size resumes from them. Each
process writes OUT_DIR/<TARGET_STEP>-worker-<id>.json: the step each route started and ended
at, the learning rate after the resume, the losses of each 5 steps, the global batch and the
replica count.

ELASTIC_JOB_FAIL_SLOT=<slot>: the process in that launcher slot (TFDIST_SLOT) exits 3 at once,
on every attempt: a permanently failing slot, by design rather than by timing.
"""

import json
import os
import sys

if os.environ.get("ELASTIC_JOB_FAIL_SLOT") not in (None, "") and \
        os.environ.get("ELASTIC_JOB_FAIL_SLOT") == os.environ.get("TFDIST_SLOT"):
    print(f"elastic_job: slot {os.environ['TFDIST_SLOT']} fails by design", flush=True)
    sys.exit(3)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfdist  # noqa: E402
from tfdist import data  # noqa: E402
from tfdist.keras import callbacks  # noqa: E402

GLOBAL_BATCH = 24  # divides over 1, 2 and 3 replicas
LOOP = 5  # steps per loop call (ctl) and per epoch (fit)


def schedule() -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=10, decay_rate=0.5)


def spec() -> data.DataSpec:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(480, 8)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    return data.DataSpec(source=tf.data.Dataset.from_tensor_slices((x, y)),
                         global_batch_size=GLOBAL_BATCH, shuffle_buffer=480, seed=3)


def build_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(2)])


def run_ctl(strategy, model_dir: str, target: int) -> dict:
    trainer = tfdist.loop.Trainer(
        strategy=strategy, model=build_model, optimizer=keras.optimizers.Adam(schedule()),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), train_data=spec())
    with tfdist.loop.Controller(trainer, model_dir=model_dir, steps_per_loop=LOOP,
                                progress=False, summaries=False, export=False) as controller:
        start = controller.global_step
        lr = trainer.learning_rate()
        losses = []
        for step in range(start + LOOP, target + 1, LOOP):
            losses.append(float(controller.train(step)["loss"]))
        return dict(start=start, end=controller.global_step, lr_at_start=lr, losses=losses)


class _Record(keras.callbacks.Callback):
    """After the backup has restored: the step and learning rate fit starts from."""

    def on_train_begin(self, logs=None):
        self.start = int(self.model.optimizer.iterations.numpy())
        self.lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def run_fit(strategy, backup_dir: str, target: int) -> dict:
    with strategy.scope():
        model = build_model()
        model.compile(optimizer=keras.optimizers.Adam(schedule()),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    backup = callbacks.BackupAndRestore(backup_dir, save_freq=LOOP, delete_checkpoint=False)
    record = _Record()
    history = model.fit(data.for_fit(strategy, spec()), epochs=target // LOOP,
                        steps_per_epoch=LOOP, callbacks=[backup, record], verbose=0)
    return dict(start=record.start, end=int(model.optimizer.iterations.numpy()),
                lr_at_start=record.lr, losses=[float(v) for v in history.history.get("loss", [])],
                restored_replicas=backup.restored_replicas,
                restored_input_position=backup.restored_input_position)


def main() -> None:
    work_dir, target, out_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    strategy = tfdist.get_strategy()
    replicas = strategy.num_replicas_in_sync
    print(f"elastic_job: global batch {GLOBAL_BATCH} over {replicas} replica(s), "
          f"{spec().per_replica_batch_size(replicas)} per replica", flush=True)
    report = dict(replicas=replicas, global_batch=GLOBAL_BATCH,
                  per_replica=spec().per_replica_batch_size(replicas),
                  ctl=run_ctl(strategy, os.path.join(work_dir, "ctl"), target),
                  fit=run_fit(strategy, os.path.join(work_dir, "backup"), target))
    task = os.environ.get("TFDIST_TASK_ID", "0")
    with open(os.path.join(out_dir, f"{target}-worker-{task}.json"), "w") as f:
        json.dump(report, f)
    print(f"elastic_job: {json.dumps(report)}", flush=True)


if __name__ == "__main__":
    main()
