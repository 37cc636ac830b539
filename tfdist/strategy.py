"""Strategy factory: one function that turns a name (and the cluster) into a `tf.distribute` strategy.

Every route gets its strategy here, so upstream workarounds (`tfdist.compat`) are applied in one
place, and logical CPU devices (the way to test multi-replica code without GPUs) are configured
before TensorFlow initialises its devices.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import tensorflow as tf

from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import compat
from tfdist import parameter_server
from tfdist import peer_failure
from tfdist import precision
from tfdist.compat import coordination_startup
from tfdist.compat import mirrored_strategy_reuse
from tfdist.compat import strategy_workers

STRATEGY_NAMES = (
    "auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server")
COMMUNICATIONS = ("auto", "ring", "nccl")
STARTUP_TIMEOUT_ENV = "TFDIST_STARTUP_TIMEOUT"
DEFAULT_STARTUP_TIMEOUT = 300.0  # seconds: pods of a job may be scheduled minutes apart


class StrategyError(ValueError):
    """A strategy was asked for with arguments that cannot work."""


def configure_virtual_cpus(num: int) -> None:
    """Splits the first physical CPU into `num` logical CPU devices.

    Must run before TensorFlow initialises its devices (before the first op, tensor or strategy).
    Asking again for the number already configured is a no-op.

    Args:
        num: Number of logical CPU devices, at least 1.

    Raises:
        StrategyError: `num` < 1, or TensorFlow was initialised with a different device layout.
    """
    checks.positive_int("virtual_cpus", num, error=StrategyError)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num)]
        )
    except RuntimeError:
        # TensorFlow is already initialised; fine if the existing layout has enough CPUs.
        existing = len(tf.config.list_logical_devices("CPU"))
        if existing >= num:
            return
        raise StrategyError(
            f"Cannot split the CPU into virtual_cpus={num} logical devices: TensorFlow is already "
            f"initialised with {existing} logical CPU(s). Call tfdist.get_strategy(..., "
            f"virtual_cpus={num}) or tfdist.strategy.configure_virtual_cpus({num}) at the start "
            "of the program, before any TensorFlow op, tensor or model is created."
        ) from None


def _local_devices(virtual_cpus: int | None, num_gpus: int | None) -> list[str]:
    gpus = tf.config.list_logical_devices("GPU")
    if num_gpus is not None:
        if num_gpus > len(gpus):
            raise StrategyError(
                f"Invalid value for argument `num_gpus`. Received: num_gpus={num_gpus}, but this "
                f"machine has {len(gpus)} GPU(s). Pass num_gpus<={len(gpus)} or leave it unset."
            )
        return [g.name for g in gpus[:num_gpus]]
    if virtual_cpus is not None:
        cpus = tf.config.list_logical_devices("CPU")
        return [c.name for c in cpus[:virtual_cpus]]
    if gpus:
        return [g.name for g in gpus]
    return ["/cpu:0"]


def cross_device_ops_for(devices: Sequence[str]) -> tf.distribute.CrossDeviceOps | None:
    """How `get_strategy("mirrored")` reduces across `devices`: `None` for TensorFlow's choice.

    Logical CPUs of one process share one memory and one thread pool, so TensorFlow's default
    for them, `CollectiveAllReduce` (a ring through the collective executor), is pure overhead:
    `ReductionToOneDevice` (add the replicas' tensors on the first device, hand the sum to the
    others) costs less CPU per step, measured with the dense model (docs/performance.md,
    Mirrored overhead). GPUs keep TensorFlow's choice (NCCL or collectives).
    """
    if len(devices) > 1 and all(
            (tf.DeviceSpec.from_string(d).device_type or "CPU").upper() == "CPU" for d in devices):
        return tf.distribute.ReductionToOneDevice()
    return None


def _communication_options(communication: str) -> tf.distribute.experimental.CommunicationOptions:
    impl = {
        "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
        "ring": tf.distribute.experimental.CommunicationImplementation.RING,
        "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
    }[communication]
    return tf.distribute.experimental.CommunicationOptions(implementation=impl)


def get_strategy(
    name: str = "auto",
    *,
    devices: Sequence[str] | None = None,
    num_gpus: int | None = None,
    virtual_cpus: int | None = None,
    cluster: cluster_lib.ClusterInfo | None = None,
    communication: str = "auto",
    startup_timeout: float | None = None,
    variable_partitioner: parameter_server.Partitioner | None = None,
) -> tf.distribute.Strategy:
    """Creates a distribution strategy by name, with tfdist's upstream fixes applied.

    Args:
        name: One of `STRATEGY_NAMES`. `"auto"` picks `multi_worker_mirrored` when the cluster has
            more than one training worker, `mirrored` over all GPUs when there are several, or over
            `virtual_cpus` logical CPUs when that is set above 1, and the default strategy otherwise;
            with `ps` tasks in TF_CONFIG it is `parameter_server`. Under `parameter_server` a
            worker or ps task serves (`tfdist.parameter_server.serve`) and never returns.
            Defaults to `"auto"`.
        devices: Explicit device names for `mirrored` (e.g. `["/gpu:0", "/gpu:1"]`) or the single
            device of `one_device`. Defaults to all GPUs, else the logical CPUs, else `/cpu:0`.
        num_gpus: Use only the first `num_gpus` GPUs. Defaults to all.
        virtual_cpus: Split the CPU into this many logical devices and mirror over them (must be
            set before TensorFlow initialises). Defaults to no split.
        cluster: The job's place in the cluster. Defaults to `tfdist.cluster.resolve()`
            (TF_CONFIG, or a single local process).
        communication: Collective implementation for `multi_worker_mirrored`: `"auto"`, `"ring"`
            or `"nccl"`. Defaults to `"auto"`.
        startup_timeout: Seconds a `multi_worker_mirrored` task waits for every chief and
            worker task to join; then it raises `tfdist.peer_failure.PeerUnavailableError`
            naming the missing ones. Defaults to `$TFDIST_STARTUP_TIMEOUT`, else 300.
        variable_partitioner: For `parameter_server`: splits large variables across the ps
            tasks, e.g. `tf.distribute.experimental.partitioners.MinSizePartitioner(...)`.
            Defaults to no splitting.

    Returns:
        A `tf.distribute.Strategy`. The default strategy is a real strategy object, never `None`.
        Asking again for `mirrored` over the same devices returns the same strategy: TensorFlow
        cannot run two of them side by side in one process.

    Raises:
        StrategyError: Unknown name or communication, or arguments that do not fit the name.
        tfdist.cluster.ClusterConfigError: TF_CONFIG is invalid.
        tfdist.peer_failure.PeerUnavailableError: A peer did not join within `startup_timeout`.

    Example:

    ```python
    strategy = tfdist.get_strategy("mirrored", virtual_cpus=2)
    with strategy.scope():
        model = build_model()
    ```
    """
    if name not in STRATEGY_NAMES:
        raise StrategyError(
            f"Unknown strategy name. Received: name={name!r}. Valid names: {', '.join(STRATEGY_NAMES)}."
        )
    checks.one_of("communication", communication, COMMUNICATIONS, error=StrategyError)
    startup_timeout = resolve_startup_timeout(startup_timeout)
    if virtual_cpus is not None:
        configure_virtual_cpus(virtual_cpus)
    if cluster is None:
        cluster = cluster_lib.resolve()

    if name == "auto":
        name = _auto_name(cluster, devices, virtual_cpus)

    if variable_partitioner is not None and name != "parameter_server":
        raise StrategyError(
            f"Invalid value for argument `variable_partitioner`. Received a partitioner with "
            f"name={name!r}; only strategy 'parameter_server' splits variables across ps tasks.")
    if name == "parameter_server":
        try:
            return parameter_server.make_strategy(cluster, variable_partitioner)
        except parameter_server.ParameterServerError as e:
            raise StrategyError(str(e)) from None
    if name == "multi_worker_mirrored":
        strategy = _multi_worker(cluster, communication, startup_timeout)
    elif cluster.is_multi_worker and not cluster.is_evaluator and not cluster.is_ps:
        raise StrategyError(
            f"Strategy {name!r} cannot train a cluster of {cluster.num_workers} workers (TF_CONFIG "
            f"says this is {cluster.task_type}:{cluster.task_id}). Use name='multi_worker_mirrored' "
            "or 'auto', or unset TF_CONFIG for a single-process run."
        )
    elif name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        if devices is not None and len(devices) != 1:
            raise StrategyError(
                f"Strategy 'one_device' takes exactly one device. Received: devices={list(devices)!r}."
            )
        device = devices[0] if devices else _local_devices(None, num_gpus)[0]
        strategy = tf.distribute.OneDeviceStrategy(device)
    else:  # mirrored
        chosen = list(devices) if devices else _local_devices(virtual_cpus, num_gpus)
        # Built with `cross_device_ops_for(chosen)`.
        strategy = mirrored_strategy_reuse.mirrored_strategy(chosen)
    compat.apply(strategy)
    precision.recommend()  # once per process, a log line where bfloat16 is fast; never a switch
    return strategy


def _auto_name(
    cluster: cluster_lib.ClusterInfo, devices: Sequence[str] | None, virtual_cpus: int | None
) -> str:
    if cluster.num_ps and not cluster.is_evaluator:
        return "parameter_server"
    if cluster.is_multi_worker and not cluster.is_evaluator and not cluster.is_ps:
        return "multi_worker_mirrored"
    if devices is not None and len(devices) > 1:
        return "mirrored"
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return "mirrored"
    if virtual_cpus is not None and virtual_cpus > 1:
        return "mirrored"
    return "default"


def resolve_startup_timeout(startup_timeout: float | None,
                            environ: Mapping[str, str] | None = None) -> float:
    """The start-up wait in seconds: the argument, else `$TFDIST_STARTUP_TIMEOUT`, else 300.

    Raises:
        StrategyError: The value is not a positive finite number of seconds.
    """
    if startup_timeout is None:
        raw = (os.environ if environ is None else environ).get(STARTUP_TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_STARTUP_TIMEOUT
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise StrategyError(
                f"Invalid value for environment variable {STARTUP_TIMEOUT_ENV}. Received: "
                f"{STARTUP_TIMEOUT_ENV}={raw!r}. Set it to a number of seconds > 0, e.g. 300."
            )
        return value
    return checks.seconds("startup_timeout", startup_timeout, example=300, error=StrategyError)


def _multi_worker(cluster: cluster_lib.ClusterInfo, communication: str,
                  startup_timeout: float) -> tf.distribute.Strategy:
    if cluster.is_evaluator or cluster.is_ps:
        raise StrategyError(
            f"Strategy 'multi_worker_mirrored' runs on chief and worker tasks; this task is "
            f"{cluster.task_type}:{cluster.task_id}. Use name='auto' (the default strategy) on it."
        )
    options = _communication_options(communication)
    if cluster.is_local:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.cluster_spec),
        task_type=cluster.task_type,
        task_id=cluster.task_id,
        rpc_layer=cluster.rpc_layer or "grpc",
    )
    coordination_startup.configure(cluster.cluster_spec, cluster.task_type, startup_timeout)
    # The strategy connects to its peers here: a missing one ends the wait with a named error.
    with peer_failure.translate(cluster, startup_timeout=startup_timeout):
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver, communication_options=options
        )


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of training worker processes the strategy spans (1 unless multi-worker)."""
    return strategy_workers.num_workers(strategy)


# `_kind` of a strategy -> its `get_strategy` name.
_NAMES = {
    "DefaultDistributionStrategy": "default",
    "OneDeviceStrategy": "one_device",
    "MirroredStrategy": "mirrored",
    "MultiWorkerMirroredStrategy": "multi_worker_mirrored",
    "ParameterServerStrategy": "parameter_server",
}


def _kind(strategy: tf.distribute.Strategy) -> str:
    """Class name without "V2" or a leading "_"; TF's CollectiveAllReduceStrategy by its public name."""
    kind = type(strategy).__name__.replace("V2", "").lstrip("_")
    return {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}.get(kind, kind)


def name_of(strategy: tf.distribute.Strategy) -> str:
    """The `get_strategy` name of a strategy object, e.g. `"mirrored"` (else its class name)."""
    kind = _kind(strategy)
    return _NAMES.get(kind, kind)


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line for logs: strategy kind, replicas, workers and local devices.

    Args:
        strategy: Any `tf.distribute.Strategy`.

    Returns:
        For example `MirroredStrategy: 2 replicas, 1 worker, devices=[CPU:0, CPU:1]`.
    """
    try:
        worker_devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no device list: it runs where ops are placed
        worker_devices = ("default placement",)
    devices = [d.split("device:")[-1] for d in worker_devices]
    workers = num_workers(strategy)
    kind = _kind(strategy)
    return (
        f"{kind}: {strategy.num_replicas_in_sync} replica(s), {workers} worker(s), "
        f"devices=[{', '.join(devices)}]"
    )
