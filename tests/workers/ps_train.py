"""Parameter-server training with route 1, the same program on every task (issue 16).

`python ps_train.py MODEL_DIR STEPS [SYNC_DIR]` under `tfdist-launch --chief --workers N --ps M`: worker
and ps tasks serve inside `tfdist.get_strategy` until the launcher stops them; the chief trains
a model whose embedding table (1000 x 16 float32, 64 KB) is larger than the 16 KB per-shard
size, so with 2 ps tasks it is split in two. The chief prints one JSON line: the step it
resumed from, the final global step, the steps each worker ran, the loss of the first and the
last loop call, the embedding's shard shapes and devices, and the newest checkpoint.

With SYNC_DIR, each worker writes its pid to SYNC_DIR/worker-N.pid, and the chief, after its
first loop call, writes SYNC_DIR/first_done and waits for SYNC_DIR/killed (the test kills a
worker in between, while nothing is scheduled) before it trains on.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfdist
from tfdist.compat import keras_sharded_variables

VOCAB, DIM = 1000, 16


def build_model() -> keras.Model:
    return keras.Sequential([
        keras.Input((1,), dtype="int32"),
        keras.layers.Embedding(VOCAB, DIM, name="embedding"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, name="head"),
    ])


def _wait_for(path: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path} after {timeout:g} s")
        time.sleep(0.1)


def main(model_dir: str, steps: int, sync_dir: str | None = None) -> None:
    cluster = tfdist.cluster.resolve()
    if sync_dir and cluster.task_type == "worker":
        with open(os.path.join(sync_dir, f"worker-{cluster.task_id}.pid"), "w") as f:
            f.write(str(os.getpid()))
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=16 * 1024, max_shards=max(1, cluster.num_ps))
    strategy = tfdist.get_strategy("parameter_server", variable_partitioner=partitioner)
    # Only the chief gets here: the other tasks serve until the launcher stops them.
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(4096, 1)).astype(np.int32)
    labels = (ids[:, 0] % 2).astype(np.int32)  # learnable only through the embedding

    def examples(_=None):  # built on each worker (a dataset made here could not be sent there)
        return tf.data.Dataset.from_tensor_slices((ids, labels))

    trainer = tfdist.loop.Trainer(
        strategy=strategy, model=build_model, optimizer=keras.optimizers.Adam(0.02),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
        train_data=tfdist.data.DataSpec(source=examples, global_batch_size=32, seed=1),
        eval_data=tfdist.data.DataSpec(source=examples().take(256), global_batch_size=64,
                                       training=False),
        steps_per_function=5)
    controller = tfdist.loop.Controller(
        trainer, model_dir=model_dir, steps_per_loop=10, checkpoint_every=10, progress=False,
        summaries=False, export=False)
    start = controller.global_step
    first = controller.train(start + 10)  # one loop call
    if sync_dir:
        open(os.path.join(sync_dir, "first_done"), "w").close()
        _wait_for(os.path.join(sync_dir, "killed"))
    last = controller.train(steps)
    evaluation = controller.evaluate()
    embedding = trainer.model.get_layer("embedding").embeddings
    shards = (keras_sharded_variables.shards(embedding)
              if keras_sharded_variables.is_sharded(embedding) else [embedding.value])
    print(json.dumps({
        "restored_from": controller.restored_from, "start": start,
        "global_step": controller.global_step,
        "steps_by_worker": {str(k): v for k, v in sorted(trainer.steps_by_worker.items())},
        "optimizer_iterations": int(trainer.optimizer.iterations.numpy()),
        "first_loss": first["loss"], "last_loss": last["loss"],
        "eval_accuracy": evaluation["sparse_categorical_accuracy"],
        "shards": [[list(s.shape), s.device] for s in shards],
        "latest_checkpoint": controller.checkpoints.latest(),
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
