"""Source: the TF_CONFIG that Ray Train's ``TensorflowTrainer`` writes into each worker actor.

Ray writes a worker-only cluster with each actor's node address (FINDINGS §11). On one machine
that address may be the machine's network interface; ``loopback=True`` rewrites every host to
``127.0.0.1`` (ports kept) so a single-node run never talks beyond loopback.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from tfdist.cluster.spec import ClusterInfo, build
from tfdist.cluster.tf_config import load

__all__ = ["from_ray", "to_loopback"]


def to_loopback(info: ClusterInfo) -> ClusterInfo:
    """`info` with every host replaced by ``127.0.0.1``, ports kept, validated again.

    Raises:
        ClusterConfigError: Two tasks share a port, so they would collide on loopback.
    """
    jobs = {job: [f"127.0.0.1:{address.rpartition(':')[2]}" for address in addresses]
            for job, addresses in info.jobs}
    rewritten = dataclasses.replace(info, jobs=tuple((j, tuple(a)) for j, a in jobs.items()))
    return build(json.loads(rewritten.to_tf_config()), "Ray TF_CONFIG on loopback")


def from_ray(environ: Mapping[str, str] | None = None, *, loopback: bool = False) -> ClusterInfo:
    """Resolves the TF_CONFIG Ray Train set in this worker, optionally moved onto loopback.

    Args:
        environ: Environment to read; defaults to ``os.environ``.
        loopback: Rewrite every host to ``127.0.0.1`` (single-node runs). Defaults to False.

    Raises:
        ClusterConfigError: TF_CONFIG is missing, invalid, or collides on loopback.
    """
    config = load(None, environ)
    if config is None:
        return ClusterInfo()
    info = build(config, "TF_CONFIG")
    return to_loopback(info) if loopback else info
