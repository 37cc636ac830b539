"""Test set-up: split the CPU into logical devices before TensorFlow initialises.

Multi-replica tests then use real `MirroredStrategy` instances over 2 or 4 logical CPUs.
"""

import os
import runpy
from pathlib import Path

# What every child process gets at start-up (tests/startup/sitecustomize.py), here too: Keras
# imported without scikit-learn.
runpy.run_path(str(Path(__file__).parent / "startup" / "sitecustomize.py"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests in this process are single-process jobs; multi-worker tests set TF_CONFIG for children.
os.environ.pop("TF_CONFIG", None)

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 4

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)],
)


# The slowest files (real worker processes, whole training runs) first: `make test` hands whole
# files to two pytest-xdist workers in this order (`--no-loadscope-reorder`), so the long ones
# start at once and the many quick files fill in around them, instead of one long file running
# alone at the end. Measured: the slowest files of a run's `--durations` report.
SLOW_FILES_FIRST = (
    "test_notebooks_a.py", "test_notebooks_b.py",  # one per xdist worker: each runs kernels
    "test_elastic.py", "test_peer_failure.py", "test_parameter_server.py",
    "test_estimator_parameter_server.py", "test_faults.py", "test_train.py",
    "test_tutorials.py", "test_launch.py", "test_bench.py", "test_multihost.py", "test_quiet.py",
    "test_fit.py", "test_compat.py", "test_estimator_canned.py", "test_estimator_training.py",
    "test_predict.py", "test_loop.py", "test_outer_loop.py", "test_sidecar_evaluator.py",
    "test_checkpoint_faults.py", "test_nonfinite_policy.py", "test_strategy.py",
    "test_checkpoint.py", "test_precision.py", "test_gradients_multiworker.py", "test_gradients.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within files kept


@pytest.fixture
def cpus():
    """Names of the logical CPU devices, e.g. `cpus(2)` -> ['/cpu:0', '/cpu:1']."""

    def _cpus(n: int) -> list[str]:
        assert n <= NUM_LOGICAL_CPUS, f"tests split the CPU into {NUM_LOGICAL_CPUS} devices"
        return [f"/cpu:{i}" for i in range(n)]

    return _cpus
