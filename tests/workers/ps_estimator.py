"""A tf.estimator-shaped parameter-server job: the same program on chief, worker, ps and evaluator.

`python ps_estimator.py MODEL_DIR MAX_STEPS [SYNC_DIR]` under `tfdist-launch --chief --workers N
--ps M [--evaluator]` (issue 16). The shape of a TF1 `tf.estimator` job with ps tasks: an
`input_fn(mode, input_context)` that shards itself, a `model_fn` with an embedding table,
`RunConfig` + `train_and_evaluate`. Worker and ps tasks serve inside the Estimator's strategy
until the launcher stops them; the chief trains and prints one JSON line (the checkpoint it
started from, the final global step, the steps each worker ran, the first and last loss); the
evaluator prints one JSON line with its last evaluation.

With SYNC_DIR, the ps task writes its pid to SYNC_DIR/ps-0.pid, and the chief, after its
checkpoint at step MAX_STEPS / 2, prints its steps so far and its first loss, writes SYNC_DIR/saved and waits for
SYNC_DIR/killed (the test kills the ps in between). A peer failure ends the chief the way
docs/failures.md tells scripts to: the one line on stderr, exit status 250.
"""

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfdist
import tfdist.estimator as est

VOCAB, DIM = 100, 8  # every id is seen in training: held-out examples are learnable


def _examples(mode):
    seed = 0 if mode == est.ModeKeys.TRAIN else 1
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(2048 if seed == 0 else 512, 1))
    return ids.astype(np.int32), (ids[:, 0] % 2).astype(np.int64)  # learnable only by embedding


def input_fn(mode, input_context=None):
    dataset = tf.data.Dataset.from_tensor_slices(_examples(mode))
    if input_context:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if mode == est.ModeKeys.TRAIN:
        return dataset.shuffle(512, seed=1).repeat().batch(32)
    return dataset.batch(64)


def model_fn(features, labels, mode):
    model = keras.Sequential([keras.layers.Embedding(VOCAB, DIM, name="embedding"),
                              keras.layers.Flatten(), keras.layers.Dense(2, name="head")])
    logits = model(features)
    if mode == est.ModeKeys.PREDICT:
        return est.EstimatorSpec(mode, predictions={"classes": tf.argmax(logits, 1)})
    loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    accuracy.update_state(labels, logits)
    return est.EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.Adam(0.05),
                             eval_metric_ops={"accuracy": accuracy})


class Losses(est.SessionRunHook):
    """Records the loss of every loop call (the chief's)."""

    def __init__(self):
        self.losses = []

    def before_run(self, run_context):
        return est.SessionRunArgs("loss")

    def after_run(self, run_context, run_values):
        self.losses.append(float(run_values.results))


class PauseForKill(est.CheckpointSaverListener):
    """After the save at `step`: report, write SYNC_DIR/saved, wait for SYNC_DIR/killed."""

    def __init__(self, estimator, losses, step, sync_dir):
        self._estimator, self._losses, self._step, self._sync = estimator, losses, step, sync_dir

    def after_save(self, session, global_step_value):
        if global_step_value != self._step:
            return
        counts = self._estimator.steps_by_worker
        print(json.dumps({"paused_at": global_step_value, "first_loss": self._losses.losses[0],
                          "steps_by_worker": {str(k): v for k, v in sorted(counts.items())}}), flush=True)
        open(os.path.join(self._sync, "saved"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(self._sync, "killed")):
            if time.monotonic() > deadline:
                raise TimeoutError("no SYNC_DIR/killed after 120 s")
            time.sleep(0.1)


def main(model_dir, max_steps, sync_dir=None):
    config = est.RunConfig(save_checkpoints_steps=10, save_summary_steps=None,
                           log_step_count_steps=None, steps_per_loop=10, steps_per_function=5)
    if sync_dir and config.task_type == "ps":
        with open(os.path.join(sync_dir, f"ps-{config.task_id}.pid"), "w") as f:
            f.write(str(os.getpid()))
    estimator = est.Estimator(model_fn, model_dir=model_dir, config=config)
    start = tf.train.latest_checkpoint(model_dir)
    losses = Losses()
    listeners = [PauseForKill(estimator, losses, max_steps // 2, sync_dir)] if sync_dir else []
    train_spec = est.TrainSpec(input_fn, max_steps=max_steps, hooks=[losses],
                               saving_listeners=listeners)
    eval_spec = est.EvalSpec(input_fn, steps=None, start_delay_secs=0, throttle_secs=0)
    try:
        result, _ = est.train_and_evaluate(estimator, train_spec, eval_spec)
    except tfdist.PeerUnavailableError as e:  # docs/failures.md: status 250 from a script
        print(e.exit_line(), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(e.exit_code)
    if config.task_type == "evaluator":
        print(json.dumps({k: float(v) for k, v in result.items()}), flush=True)
        return
    counts = estimator.steps_by_worker
    print(json.dumps({
        "started_from": start, "global_step": int(estimator.get_variable_value("global_step")),
        "latest_checkpoint": estimator.latest_checkpoint(),
        "steps_by_worker": {str(k): v for k, v in sorted(counts.items())},
        "first_loss": losses.losses[0], "last_loss": losses.losses[-1],
    }), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
