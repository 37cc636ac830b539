"""Bound MultiWorkerMirroredStrategy's start-up wait for its peers (FINDINGS §8, issue 15).

TF 2.21's `CollectiveAllReduceExtended._initialize_multi_worker` configures the coordination
service with `cluster_register_timeout_in_ms=0` and no registration barrier, and no public API
(`CommunicationOptions`, the strategy's constructor) sets either. Measured here: the leader
(worker 0) of a two-worker cluster whose worker 1 never starts waits in `ensure_initialized`
forever, deaf even to SIGTERM (the main thread is inside C++); a non-leader whose leader never
starts does give up, with an unnamed "Deadline Exceeded", after its own register timeout.

The strategy leaves an already configured coordination service alone, so `configure` sets it
first, as the strategy would, plus a register timeout and `cluster_register_with_barrier` (every
task's registration then waits for all, and the leader's error names the missing tasks:
"Some timed out task names: /job:worker/replica:0/task:1"). Private touch points:
`tensorflow.python.eager.context` and `multi_worker_util.coordination_leader`. Upstream: no
issue filed for a public knob yet; canary: tests/test_compat.py::test_mwms_sets_no_register_timeout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.distribute import multi_worker_util
from tensorflow.python.eager import context
from tensorflow.python.training import server_lib

_COORDINATED_JOBS = ("chief", "worker")  # as the strategy: ps and evaluator tasks never register


def configure(cluster_spec: Mapping[str, Sequence[str]], task_type: str,
              startup_timeout: float) -> bool:
    """Configures the coordination service with a bounded, barrier-backed registration.

    Must run before TensorFlow's context initialises (before the strategy and any tensor).

    Args:
        cluster_spec: ``{job: [address, ...]}`` of the training cluster.
        task_type: This task's job.
        startup_timeout: Seconds every task waits for all the others to register.

    Returns:
        True if configured; False when this task does not register (ps, evaluator) or the
        service was configured already (by the user, or an earlier strategy in this process).
    """
    ctx = context.context()
    existing = ctx.coordination_service  # the config proto, None until configured
    if task_type not in _COORDINATED_JOBS or existing is not None:
        return False
    spec = server_lib.ClusterSpec(dict(cluster_spec))
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in _COORDINATED_JOBS if job in spec.jobs]
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=max(1, int(startup_timeout * 1000)),
    )
    ctx.coordination_service.cluster_register_with_barrier = True
    return True
