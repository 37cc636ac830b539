"""Tests for tfdist.strategy: names, auto selection, logical CPUs, errors."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import cluster, strategy
from tests.multiworker import REPO_ROOT


def test_unknown_name_lists_valid_names():
    with pytest.raises(strategy.StrategyError) as err:
        tfdist.get_strategy("tpu")
    assert "Received: name='tpu'" in str(err.value)
    assert "auto, default, one_device, mirrored, multi_worker_mirrored" in str(err.value)


def test_unknown_communication():
    with pytest.raises(strategy.StrategyError, match="Received: communication='mpi'"):
        tfdist.get_strategy("default", communication="mpi")


def test_default_is_a_real_strategy():
    s = tfdist.get_strategy("default")
    assert s is tf.distribute.get_strategy()
    assert s.num_replicas_in_sync == 1
    assert tfdist.describe(s).startswith("DefaultDistributionStrategy: 1 replica(s)")


def test_auto_on_one_cpu_is_the_default_strategy():
    assert tfdist.get_strategy() is tf.distribute.get_strategy()


def test_one_device(cpus):
    s = tfdist.get_strategy("one_device", devices=cpus(2)[1:])
    assert isinstance(s, tf.distribute.OneDeviceStrategy)
    assert "CPU:1" in tfdist.describe(s)
    with pytest.raises(strategy.StrategyError, match="exactly one device"):
        tfdist.get_strategy("one_device", devices=cpus(2))


@pytest.mark.parametrize("n", [2, 4])
def test_mirrored_over_logical_cpus(cpus, n):
    s = tfdist.get_strategy("mirrored", devices=cpus(n))
    assert s.num_replicas_in_sync == n
    assert tfdist.describe(s).startswith(f"MirroredStrategy: {n} replica(s), 1 worker(s)")


def test_mirrored_is_one_strategy_per_device_set_however_spelled(cpus):
    # A second MirroredStrategy over the same devices breaks the first one's all-reduces.
    short = cpus(2)  # ["/cpu:0", "/cpu:1"]
    full = [f"/job:localhost/replica:0/task:0/device:CPU:{i}" for i in range(2)]
    s = tfdist.get_strategy("mirrored", devices=short)
    assert tfdist.get_strategy("mirrored", devices=full) is s
    assert tfdist.get_strategy("mirrored", devices=["/device:CPU:1", "/CPU:0"]) is s
    assert tfdist.get_strategy("mirrored", devices=short) is s
    assert tfdist.get_strategy("mirrored", devices=cpus(3)) is not s
    total = s.reduce("SUM", s.run(lambda: tf.constant(1.0)), axis=None)
    assert float(total) == 2.0


def _op_types(fn):
    graph = fn.get_concrete_function().graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {n.op for n in nodes}


def test_mirrored_over_logical_cpus_reduces_on_one_device_and_trains_alike(cpus):
    # Logical CPUs share one memory: adding on one device beats TensorFlow's collective ring.
    assert isinstance(strategy.cross_device_ops_for(cpus(2)), tf.distribute.ReductionToOneDevice)
    assert strategy.cross_device_ops_for(["/gpu:0", "/gpu:1"]) is None  # TensorFlow's choice
    assert strategy.cross_device_ops_for(cpus(1)) is None
    s = tfdist.get_strategy("mirrored", devices=cpus(2))

    @tf.function
    def all_reduce():
        def replica():
            grads = [tf.ones([3, 2]), tf.ones([2])]
            return tf.distribute.get_replica_context().all_reduce("SUM", grads)
        return s.run(replica)

    types = _op_types(all_reduce)
    assert "AddN" in types and not any(t.startswith("Collective") for t in types), types
    for reduced in all_reduce():  # the sum, on both replicas
        for local in s.experimental_local_results(reduced):
            np.testing.assert_array_equal(local.numpy(), 2.0)
    # Training is unchanged: 2 replicas of 8 give the weights one device gets from 16.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    weights = {}
    for name, run_on in (("default", tfdist.get_strategy("default")), ("mirrored", s)):
        keras.utils.set_random_seed(1)
        with run_on.scope():
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, "tanh"),
                                      keras.layers.Dense(1)])
            optimizer = keras.optimizers.SGD(0.1)
            optimizer.build(model.trainable_variables)
        dataset = run_on.experimental_distribute_dataset(
            tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(16))

        def step(batch, model=model, optimizer=optimizer):
            with tf.GradientTape() as tape:
                loss = tf.nn.compute_average_loss(
                    tf.square(model(batch[0]) - batch[1])[:, 0], global_batch_size=16)
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                          model.trainable_variables))

        @tf.function
        def train(iterator, run_on=run_on, step=step):
            for _ in tf.range(5):
                run_on.run(step, args=(next(iterator),))

        train(iter(dataset))
        weights[name] = model.get_weights()
    for a, b in zip(weights["default"], weights["mirrored"]):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_auto_with_virtual_cpus_mirrors_over_them():
    # The test process already split the CPU into 4; asking for 2 reuses them.
    s = tfdist.get_strategy(virtual_cpus=2)
    assert isinstance(s, tf.distribute.MirroredStrategy)
    assert s.num_replicas_in_sync == 2


def test_virtual_cpus_after_initialisation_says_what_to_do():
    with pytest.raises(strategy.StrategyError) as err:
        tfdist.get_strategy(virtual_cpus=8)
    message = str(err.value)
    assert "already initialised with 4 logical CPU(s)" in message
    assert "at the start of the program" in message


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_virtual_cpus_must_be_a_positive_int(bad):
    with pytest.raises(strategy.StrategyError, match="Received: virtual_cpus="):
        strategy.configure_virtual_cpus(bad)


def test_more_gpus_than_present():
    with pytest.raises(strategy.StrategyError, match="Received: num_gpus=2, but this machine has 0"):
        tfdist.get_strategy("mirrored", num_gpus=2)


def _two_workers(task_type="worker", task_id=0):
    return cluster.resolve(
        cluster.make_tf_config(
            workers=["localhost:20001", "localhost:20002"], task_type=task_type, task_id=task_id
        )
    )


def test_single_process_strategy_in_a_multi_worker_cluster_is_an_error():
    with pytest.raises(strategy.StrategyError, match="cannot train a cluster of 2 workers"):
        tfdist.get_strategy("mirrored", cluster=_two_workers())


def test_evaluator_gets_the_default_strategy_from_auto():
    info = cluster.resolve(
        json.dumps(
            {
                "cluster": {"worker": ["localhost:20001", "localhost:20002"]},
                "task": {"type": "evaluator", "index": 0},
            }
        )
    )
    assert tfdist.get_strategy(cluster=info) is tf.distribute.get_strategy()
    with pytest.raises(strategy.StrategyError, match="this task is evaluator:0"):
        tfdist.get_strategy("multi_worker_mirrored", cluster=info)


def test_virtual_cpus_in_a_fresh_process():
    code = (
        "import tfdist; s = tfdist.get_strategy(virtual_cpus=3); "
        "print(tfdist.describe(s))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "MirroredStrategy: 3 replica(s), 1 worker(s), devices=[CPU:0, CPU:1, CPU:2]" in out.stdout


def test_name_of_gives_back_the_get_strategy_name(cpus):
    for name, kwargs in [("default", {}), ("one_device", {"devices": cpus(1)}),
                         ("mirrored", {"devices": cpus(2)})]:
        assert strategy.name_of(tfdist.get_strategy(name, **kwargs)) == name
