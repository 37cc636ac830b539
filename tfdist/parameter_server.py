"""Parameter-server training: the chief's `ParameterServerStrategy` and the servers of the other tasks.

The same program runs on every task of a `chief` + `worker` + `ps` cluster (FINDINGS §9). On the
chief, `tfdist.get_strategy("parameter_server")` builds a `tf.distribute.ParameterServerStrategy`
and its `ClusterCoordinator`; the chief is the only process that runs the training loop. On a
`worker` or `ps` task the same call starts a `tf.distribute.Server` and serves until the process
receives SIGTERM (what `tfdist-launch` sends once the chief has finished), then exits with code 0:
the call never returns there.

The gRPC settings TensorFlow's tutorial asks every task to set (`GRPC_FAIL_FAST=use_caller`, so a
lost worker fails its functions over to the others instead of hanging) are set here.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any, NoReturn

import tensorflow as tf

from tfdist import cluster as cluster_lib

# Set on every task before TensorFlow's first gRPC channel (tutorial `parameter_server_training`).
GRPC_ENV = {"GRPC_FAIL_FAST": "use_caller"}

Partitioner = Callable[..., Any]


class ParameterServerError(ValueError):
    """A parameter-server job was asked for on a cluster that cannot run one."""


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    """True for a `tf.distribute.ParameterServerStrategy` (the chief of a parameter-server job)."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def configure_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Sets `GRPC_ENV` (unless the user set those variables) before any gRPC channel exists."""
    target: MutableMapping[str, str] = os.environ if environ is None else environ
    for key, value in GRPC_ENV.items():
        target.setdefault(key, value)


def check_cluster(cluster: cluster_lib.ClusterInfo) -> None:
    """Raises `ParameterServerError` unless the cluster has a chief, workers and ps tasks."""
    spec = cluster.cluster_spec or {}
    missing = [job for job in ("chief", "worker", "ps") if not spec.get(job)]
    if missing:
        jobs = {job: len(tasks) for job, tasks in spec.items()}
        raise ParameterServerError(
            f"Strategy 'parameter_server' needs TF_CONFIG with 'chief', 'worker' and 'ps' tasks. "
            f"Received: cluster={jobs or 'no TF_CONFIG'} (missing {', '.join(missing)}). Start the "
            "job with e.g. `tfdist-launch --chief --workers 2 --ps 1 -- ...`."
        )


def _training_cluster(cluster: cluster_lib.ClusterInfo) -> tf.train.ClusterSpec:
    """The cluster without its side-car evaluator, which must not join the training cluster."""
    return tf.train.ClusterSpec(
        {job: tasks for job, tasks in cluster.cluster_spec.items() if job != "evaluator"})


def _server(cluster: cluster_lib.ClusterInfo) -> tf.distribute.Server:
    return tf.distribute.Server(
        _training_cluster(cluster), job_name=cluster.task_type,
        task_index=cluster.task_id, protocol=cluster.rpc_layer or "grpc", start=True)


def serve(cluster: cluster_lib.ClusterInfo) -> NoReturn:
    """Serves this worker or ps task until SIGTERM (or SIGINT), then exits the process with code 0.

    A TensorFlow server cannot be stopped in-process, so the process ends here; `tfdist-launch`
    sends SIGTERM to the servers once the chief has finished.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _server(cluster)
    logging.info("tfdist: %s:%d serves until SIGTERM", cluster.task_type, cluster.task_id)
    print(f"tfdist: {cluster.task_type}:{cluster.task_id} serving", flush=True)
    while not stop.wait(3600):
        pass
    print(f"tfdist: {cluster.task_type}:{cluster.task_id} stopped", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the gRPC server has no clean shutdown; nothing else runs in this process


def make_strategy(cluster: cluster_lib.ClusterInfo,
                  variable_partitioner: Partitioner | None = None) -> tf.distribute.Strategy:
    """On the chief: the strategy and its coordinator. On a worker or ps task: `serve` (no return).

    Args:
        cluster: The task's place in a chief + worker + ps cluster.
        variable_partitioner: Splits large variables across the ps tasks, e.g.
            `tf.distribute.experimental.partitioners.MinSizePartitioner(min_shard_bytes=...,
            max_shards=num_ps)`. Defaults to no splitting.

    Raises:
        ParameterServerError: Not such a cluster, an evaluator task, or a partitioner that is
            not callable.
    """
    check_cluster(cluster)
    if variable_partitioner is not None and not callable(variable_partitioner):
        raise ParameterServerError(
            f"Invalid value for argument `variable_partitioner`. Received: "
            f"variable_partitioner={variable_partitioner!r}. Pass a partitioner such as "
            "tf.distribute.experimental.partitioners.MinSizePartitioner(...), or None."
        )
    configure_environment()
    if cluster.task_type in ("worker", "ps"):
        serve(cluster)
    if cluster.task_type != "chief":
        raise ParameterServerError(
            f"Strategy 'parameter_server' runs on the chief (and serves on worker and ps tasks); "
            f"this task is {cluster.task_type}:{cluster.task_id}. A side-car evaluator must not "
            "join the training cluster: give it TF_CONFIG without the training jobs, or "
            "evaluate inline on the chief."
        )
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        _training_cluster(cluster), task_type="chief", task_id=0,
        rpc_layer=cluster.rpc_layer or "grpc")
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=variable_partitioner)
    tf.distribute.coordinator.ClusterCoordinator(strategy)  # one per strategy; see coordinator()
    return strategy


def coordinator(strategy: tf.distribute.Strategy) -> tf.distribute.coordinator.ClusterCoordinator:
    """The strategy's `ClusterCoordinator` (TensorFlow keeps one per strategy)."""
    return tf.distribute.coordinator.ClusterCoordinator(strategy)
