"""Keras `fit` under a real `tf.distribute.ParameterServerStrategy`, upstream and with tfdist.

An in-process cluster (2 workers and 1 ps as `tf.distribute.Server`s on portpicker ports, this
process the coordinator), as TF's own tests build one. The same `fit` calls (a finite dataset
whose last batch is short; a repeated one with `steps_per_epoch`) run first with upstream Keras,
then after `tfdist.compat.apply()`. Prints one JSON line: the exception type and message of each
call, or null when `fit` returned. tfdist's patches do not cover this strategy, so
upstream's outcome must come through unchanged.
"""

import json
import os
import sys

import keras
import numpy as np
import portpicker
import tensorflow as tf


def _outcome(model, dataset, **fit_kwargs):
    try:
        model.fit(dataset, epochs=1, verbose=0, **fit_kwargs)
    except Exception as e:  # noqa: BLE001 - the outcome is what the test compares
        return [type(e).__name__, str(e)]
    return None


def main() -> None:
    os.environ["GRPC_FAIL_FAST"] = "use_caller"  # as the PS tutorial sets on every task
    spec = {
        "chief": [f"localhost:{portpicker.pick_unused_port()}"],
        "worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(2)],
        "ps": [f"localhost:{portpicker.pick_unused_port()}"],
    }
    cluster = tf.train.ClusterSpec(spec)
    for job in ("worker", "ps"):
        for index in range(len(spec[job])):
            tf.distribute.Server(cluster, job_name=job, task_index=index, protocol="grpc")
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type="chief", task_id=0, rpc_layer="grpc")
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    examples = tf.data.Dataset.from_tensor_slices((x, np.arange(60) % 2))
    runs = {
        "finite": (examples.batch(8), {}),  # the last batch is short
        "repeated": (examples.batch(8, drop_remainder=True).repeat(), {"steps_per_epoch": 4}),
    }
    upstream = {name: _outcome(model, data, **kw) for name, (data, kw) in runs.items()}

    import tfdist

    tfdist.compat.apply(strategy)
    patched = {name: _outcome(model, data, **kw) for name, (data, kw) in runs.items()}
    print(json.dumps({"upstream": upstream, "tfdist": patched}), flush=True)


if __name__ == "__main__":
    main()
    sys.stdout.flush()
