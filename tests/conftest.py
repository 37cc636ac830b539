"""Test set-up: split the CPU into logical devices before TensorFlow initialises.

Multi-replica tests then use real `MirroredStrategy` instances over 2 or 4 logical CPUs.
"""

import os

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


@pytest.fixture
def cpus():
    """Names of the logical CPU devices, e.g. `cpus(2)` -> ['/cpu:0', '/cpu:1']."""

    def _cpus(n: int) -> list[str]:
        assert n <= NUM_LOGICAL_CPUS, f"tests split the CPU into {NUM_LOGICAL_CPUS} devices"
        return [f"/cpu:{i}" for i in range(n)]

    return _cpus
