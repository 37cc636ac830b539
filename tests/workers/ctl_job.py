"""A small custom-loop job used in-process by tests and as a worker program.

With CTL_JOB_SIGTERM_SELF=worker:1 that worker sends itself SIGTERM once ready.

Usage: ctl_job.py MODEL_DIR OUT_DIR STEPS [READY_FILE]  (writes OUT_DIR/<task>-<id>.json)
With READY_FILE, on the first attempt (READY_FILE does not exist yet): trains 10 more steps,
writes READY_FILE, then waits -- all workers in lockstep -- until some worker got SIGTERM (the
test sends it, or CTL_JOB_SIGTERM_SELF), then trains on: the preemption lands at the first loop
boundary (steps_per_loop=5), so every process saves at start + 15 and exits 143. However late the
signal comes, that step is certain. A restart (READY_FILE exists) just trains to STEPS.
"""

import json
import os
import signal
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import tfdist
from tfdist import data

GLOBAL_BATCH = 32
SIGTERM_POLL_SECS = 0.05
SIGTERM_POLLS = 2400  # ~2 min of waiting (more under load): below every test's budget


def dataset(num: int = 512, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, 8)).astype(np.float32)
    y = (x[:, :4].sum(axis=1) > 0).astype(np.int64)
    return tf.data.Dataset.from_tensor_slices((x, y))


def build_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)]
    )


def make_trainer(strategy, *, shuffle_buffer=256, optimizer="sgd", num=512):
    return tfdist.loop.Trainer(
        strategy=strategy,
        model=build_model,
        optimizer=keras.optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
        train_data=data.DataSpec(
            source=dataset(num), global_batch_size=GLOBAL_BATCH, shuffle_buffer=shuffle_buffer
        ),
        eval_data=data.DataSpec(source=dataset(256, seed=1), global_batch_size=GLOBAL_BATCH,
                                training=False),
    )


def main(model_dir: str, out_dir: str, steps: int, ready_file: str | None = None) -> None:
    info = tfdist.cluster.resolve()
    if info.is_evaluator:
        return evaluator(model_dir, out_dir, steps)
    # Decided before any training: a peer writes READY_FILE only after training steps that need
    # this process, so every worker of an attempt sees the same answer.
    await_sigterm = ready_file is not None and not os.path.exists(ready_file)
    strategy = tfdist.get_strategy()
    with strategy.scope():
        optimizer = keras.optimizers.SGD(0.1)
    trainer = make_trainer(strategy, optimizer=optimizer)
    # The `with` block handles SIGTERM throughout, also between the two `train` calls.
    with tfdist.loop.Controller(
        trainer, model_dir=model_dir, steps_per_loop=5, checkpoint_every=20, progress=False
    ) as controller:
        start = controller.global_step
        first = controller.evaluate()
        if await_sigterm:
            controller.train(start + 10)
            with open(ready_file, "w") as f:
                f.write(str(controller.global_step))
            if os.environ.get("CTL_JOB_SIGTERM_SELF") == f"{info.task_type}:{info.task_id}":
                os.kill(os.getpid(), signal.SIGTERM)  # a preemption of this one worker
            wait_for_sigterm(strategy, controller)
            controller.train(controller.global_step + 5)  # raises Preempted at its first boundary
        results = controller.train(steps)
        last = controller.evaluate()
    report = {
        "start": start,
        "end": controller.global_step,
        "losses": [first["loss"], last["loss"]],
        "weights": [w.tolist() for w in trainer.model.get_weights()],
        "results": results,
    }
    with open(f"{out_dir}/{info.task_type}-{info.task_id}.json", "w") as f:
        json.dump(report, f)


def wait_for_sigterm(strategy, controller) -> None:
    """Returns on every worker in the same poll once any worker got SIGTERM (one all-reduce each)."""
    for _ in range(SIGTERM_POLLS):
        if tfdist.checkpoint.any_worker(strategy, controller.preemption_requested):
            return
        time.sleep(SIGTERM_POLL_SECS)
    sys.exit("ctl_job: no SIGTERM arrived")


def evaluator(model_dir: str, out_dir: str, steps: int) -> None:
    """The evaluator task: evaluates each new checkpoint until the one at `steps`."""
    trainer = make_trainer(tfdist.get_strategy())
    controller = tfdist.loop.Controller(trainer, model_dir=model_dir, progress=False)
    seen = []
    original = controller.evaluate

    def evaluate(eval_steps=None):
        results = original(eval_steps)
        seen.append(results["global_step"])
        return results

    controller.evaluate = evaluate
    last = controller.evaluate_continuously(steps, timeout=240)
    with open(f"{out_dir}/evaluator-0.json", "w") as f:
        json.dump({"evaluated_steps": seen, "last": last}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
