"""`resolve()`: this process's place in the cluster, from whichever source describes it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tfdist.cluster import kubernetes
from tfdist.cluster import tf_config as tf_config_source
from tfdist.cluster.spec import ClusterInfo

__all__ = ["resolve"]


def resolve(tf_config: str | Mapping[str, Any] | None = None, *,
            environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves and validates this task's cluster.

    Sources, first match wins: the `tf_config` argument; ``$TF_CONFIG`` (set by tfdist-launch,
    a Kubeflow TFJob, Ray Train, or by hand); the tfdist Indexed Job variables
    (``TFDIST_K8S_TASKS`` and ``JOB_COMPLETION_INDEX``, see `tfdist.cluster.kubernetes`). With
    none of them this is a local single process. Slurm is not guessed: call `from_slurm`.

    Args:
        tf_config: TF_CONFIG as a JSON string or mapping; if None, the environment is read.
        environ: Environment to read; defaults to ``os.environ``.

    Returns:
        The validated info. A missing, blank or ``{}`` TF_CONFIG (and no Indexed Job) means a
        local single process.

    Raises:
        ClusterConfigError: If the description is invalid in any way.
    """
    env = os.environ if environ is None else environ
    if tf_config is None and not env.get("TF_CONFIG", "").strip() and kubernetes.is_indexed_job(env):
        return kubernetes.from_indexed_job(env)
    return tf_config_source.from_tf_config(tf_config, environ=env)
