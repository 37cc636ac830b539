"""Canary program: a second MirroredStrategy over the same devices, then an all-reduce of another shape.

Prints one JSON line: the error type and message (None when upstream no longer breaks).
Run in its own process: the failed collective aborts the process's collective executor.
"""

import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
devices = ["/cpu:0", "/cpu:1"]


def all_reduce(strategy, size):
    @tf.function
    def step():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.ones([size]))
        return strategy.experimental_local_results(strategy.run(replica_fn))[0]
    return step()


first = tf.distribute.MirroredStrategy(devices)
all_reduce(first, 3)
second = tf.distribute.MirroredStrategy(devices)
try:
    result = all_reduce(second, 5)
    print(json.dumps({"error": None, "result": result.numpy().tolist()}))
except Exception as err:  # noqa: BLE001
    print(json.dumps({"error": type(err).__name__, "message": str(err)[:300]}))
