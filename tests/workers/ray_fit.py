"""A 2-worker Keras 3 `fit` through tfdist on a local, loopback-only Ray instance.

argv: OUT_DIR. Each worker writes OUT_DIR/worker-<i>.json: its TF_CONFIG addresses, final
weights, and (worker 0, while the TensorFlow servers are up) the TCP listeners of this Ray
session's processes as `ss -ltnpH` shows them. The driver writes OUT_DIR/driver.json.
"""

import json
import os
import subprocess
import sys

from tfdist.launch import ray as tfdist_ray


def train(config):
    import numpy as np
    import keras
    import psutil
    import tensorflow as tf

    import tfdist
    from tfdist import cluster

    info = cluster.resolve()
    strategy = tfdist.get_strategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int64")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32 * info.num_workers)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(2)])
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(dataset, epochs=2, steps_per_epoch=20, verbose=0)
    result = {"addresses": info.worker_addresses, "task": [info.task_type, info.task_id],
              "weights": [w.tolist() for w in model.get_weights()],
              "accuracy": history.history["accuracy"][-1],
              "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS")}
    if info.task_id == 0:  # the TensorFlow servers of both workers are up now
        session = psutil.Process(config["driver_pid"])
        pids = {session.pid, *(p.pid for p in session.children(recursive=True))}
        lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
        result["listeners"] = [line for line in lines.splitlines() if any(f"pid={p}," in line for p in pids)]
    with open(os.path.join(config["out_dir"], f"worker-{info.task_id}.json"), "w") as f:
        json.dump(result, f)


def main(out_dir):
    tfdist_ray.init_loopback(num_cpus=2, log_to_driver=False)
    tfdist_ray.run_on_ray(train, num_workers=2, loopback=True, resources_per_worker={"CPU": 1},
                          config={"out_dir": out_dir, "driver_pid": os.getpid()},
                          storage_path=os.path.join(out_dir, "ray_results"), name="tfdist-ray-test")
    with open(os.path.join(out_dir, "driver.json"), "w") as f:
        json.dump({"ok": True}, f)


if __name__ == "__main__":
    main(sys.argv[1])
