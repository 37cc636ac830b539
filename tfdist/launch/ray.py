"""Run a tfdist training function on Ray Train's ``TensorflowTrainer`` (``pip install tfdist[ray]``).

Ray Train starts one actor per worker and writes a worker-only TF_CONFIG into each (FINDINGS
§11). Its own Keras 3 example fails under ``MultiWorkerMirroredStrategy``
(ray-project/ray#47464, the bug of FINDINGS §1); `run_on_ray` wraps the training function so
each actor first:

1. validates Ray's TF_CONFIG with `tfdist.cluster.from_ray`, moving it onto ``127.0.0.1``
   with ``loopback=True`` (single-node runs), and exports the result as TF_CONFIG;
2. drops ``TF_USE_LEGACY_KERAS``, which Ray sets, so ``tf.keras`` stays Keras 3;
3. applies tfdist's Keras 3 workarounds (`tfdist.compat.apply`).

The training function then runs as under ``tfdist-launch``: it calls ``tfdist.get_strategy()``
and trains. This module imports neither Ray nor TensorFlow until it is called.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from tfdist import checks
from tfdist.launch.errors import LaunchError

__all__ = ["LOOPBACK_ENV", "init_loopback", "prepare_worker", "run_on_ray"]

# Ray's "no cluster" mode (as on macOS/Windows): every Ray process binds and advertises
# 127.0.0.1 only. It is read when ray is imported, in the driver and in every process Ray starts.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def init_loopback(num_cpus: int = 2, **kwargs: Any) -> Any:
    """Starts a local Ray instance that listens on loopback only (for one machine and tests).

    Sets `LOOPBACK_ENV` in this process's environment, so call it from a program's main, before
    anything imports ``ray``.

    Raises:
        LaunchError: ``ray`` was imported already, in cluster mode.
    """
    if "ray" in sys.modules and any(os.environ.get(k) != v for k, v in LOOPBACK_ENV.items()):
        raise LaunchError("init_loopback() must run before `import ray` (Ray reads "
                          f"{', '.join(LOOPBACK_ENV)} at import); call it first in your main.")
    os.environ.update(LOOPBACK_ENV)
    try:
        import ray  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise LaunchError("Ray is not installed: pip install 'tfdist[ray]'") from None
    return ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                    num_cpus=num_cpus, **kwargs)


def prepare_worker(*, loopback: bool) -> Any:
    """Readies this Ray Train worker for tfdist; returns its `tfdist.cluster.ClusterInfo`.

    Raises:
        tfdist.cluster.ClusterConfigError: Ray's TF_CONFIG is invalid (or collides on loopback).
    """
    from tfdist import cluster  # pylint: disable=import-outside-toplevel

    info = cluster.from_ray(loopback=loopback)
    os.environ["TF_CONFIG"] = info.to_tf_config()  # this actor is the worker's process: its "main"
    os.environ.pop("TF_USE_LEGACY_KERAS", None)  # Ray sets it; tfdist trains with Keras 3
    from tfdist import compat  # pylint: disable=import-outside-toplevel  (imports TensorFlow)

    compat.apply()
    return info


def run_on_ray(train_fn: Callable[[dict[str, Any]], Any], *, num_workers: int = 2,
               config: dict[str, Any] | None = None, loopback: bool = False, use_gpu: bool = False,
               resources_per_worker: dict[str, float] | None = None,
               storage_path: str | None = None, name: str | None = None, max_failures: int = 0) -> Any:
    """Runs ``train_fn(config)`` on `num_workers` Ray Train workers, with tfdist set up in each.

    Args:
        train_fn: A tfdist training function: builds its strategy with ``tfdist.get_strategy()``.
            Report metrics with ``ray.train.report`` as usual.
        num_workers: Ray Train workers (TensorFlow workers). Defaults to 2.
        config: Passed to `train_fn`. Defaults to ``{}``.
        loopback: Rewrite Ray's TF_CONFIG hosts to ``127.0.0.1`` (single-node runs).
            Defaults to False.
        use_gpu: One GPU per worker. Defaults to False.
        resources_per_worker: Ray resources per worker, e.g. ``{"CPU": 1}``. Defaults to Ray's.
        storage_path: Where Ray Train keeps results (a shared path for several nodes).
            Defaults to Ray's.
        name: The run's name. Defaults to Ray's.
        max_failures: Times Ray Train restarts the whole worker group after a worker fails;
            training resumes from the checkpoints `train_fn` writes. Defaults to 0.

    Returns:
        Ray Train's ``Result``.

    Raises:
        LaunchError: Ray is not installed, or `num_workers` is not a positive integer.
    """
    checks.positive_int("num_workers", num_workers, error=LaunchError)
    try:
        # pylint: disable=import-outside-toplevel
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer
    except ImportError:
        raise LaunchError("Ray Train is not installed: pip install 'tfdist[ray]'") from None

    def loop(loop_config: dict[str, Any]) -> None:
        prepare_worker(loopback=loopback)
        train_fn(loop_config)

    trainer = TensorflowTrainer(
        loop, train_loop_config=dict(config or {}),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources_per_worker),
        run_config=RunConfig(storage_path=storage_path, name=name,
                             failure_config=FailureConfig(max_failures=max_failures)))
    return trainer.fit()
