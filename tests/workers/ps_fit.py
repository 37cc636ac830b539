"""Keras `fit` under a real `tf.distribute.ParameterServerStrategy`, upstream and with tfdist.

An in-process cluster (2 workers and 1 ps as `tf.distribute.Server`s on portpicker ports, this
process the coordinator), as TF's own tests build one. The same `fit` calls (a finite dataset
whose last batch is short; a repeated one with `steps_per_epoch`) run first with upstream Keras,
then after `tfdist.compat.apply()`. Prints one JSON line: the exception type and message of each
call, or null when `fit` returned. Upstream fails inside Keras; tfdist says to use the
custom-loop route instead (issue 16).

The strategy splits variables of 64 KB or more in two (both shards on the one ps), so the same
cluster also probes `tfdist.compat.keras_sharded_variables`: what upstream Keras does with a
sharded embedding (gradient, checkpoint) and whether tfdist's workaround works, on the
coordinator.
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
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=64 * 1024, max_shards=2)
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
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
    print(json.dumps({"upstream": upstream, "tfdist": patched,
                      "sharded": _sharded_probe(strategy, sys.argv[1])}), flush=True)


def _error(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the outcome is what the test compares
        return [type(e).__name__, str(e).splitlines()[0]]
    return None


def _sharded_probe(strategy, tmp_dir):
    from tfdist.compat import keras_sharded_variables

    with strategy.scope():
        model = keras.Sequential([keras.Input((1,), dtype="int32"), keras.layers.Embedding(4096, 16),
                                  keras.layers.Flatten(), keras.layers.Dense(1)])
    table = model.layers[0].embeddings
    ids = tf.constant([[1], [4000]])

    def gradients(variables):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(ids))
        return tape.gradient(loss, variables)

    grads = gradients(keras_sharded_variables.differentiable(model.trainable_variables))
    path = tf.train.Checkpoint(model=keras_sharded_variables.checkpointable(model)).write(
        os.path.join(tmp_dir, "sharded"))
    return {
        "shards": [list(v.shape) for v in keras_sharded_variables.shards(table)],
        "upstream_gradient": _error(lambda: gradients(model.trainable_variables)),
        "upstream_checkpoint": _error(lambda: tf.train.Checkpoint(model=model).write(
            os.path.join(tmp_dir, "upstream"))),
        "tfdist_gradient_shapes": [list(tf.convert_to_tensor(g).shape) for g in grads],
        "tfdist_checkpoint": dict(tf.train.list_variables(path)),
    }


if __name__ == "__main__":
    main()
    sys.stdout.flush()
