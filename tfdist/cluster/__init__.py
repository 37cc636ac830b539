"""Resolve and validate where this process sits in a TensorFlow cluster.

Every way a job learns its place in a cluster is resolved into one immutable `ClusterInfo`,
validated up front so a bad config fails at once with one actionable line instead of a hang or
an opaque gRPC error minutes into start-up. One module per source:

- `tf_config`: ``$TF_CONFIG`` (tfdist-launch, Ray Train, by hand)
- `slurm`: an ``srun`` job step, through python-hostlist
- `kubernetes`: a Kubeflow TFJob, or a plain Indexed Job + headless Service
- `ray`: Ray Train's TF_CONFIG, optionally moved onto loopback

`spec` holds `ClusterInfo`, the validation and `make_tf_config`; `resolver` picks the source;
`check` tests that peers answer; `cli` is ``python -m tfdist.cluster``. No TensorFlow import
(``--check`` imports it to report versions).
"""

from tfdist.cluster.kubernetes import from_indexed_job
from tfdist.cluster.kubernetes import from_kubeflow
from tfdist.cluster.ray import from_ray
from tfdist.cluster.resolver import resolve
from tfdist.cluster.slurm import expand_hostlist
from tfdist.cluster.slurm import from_slurm
from tfdist.cluster.spec import JOB_NAMES
from tfdist.cluster.spec import ClusterConfigError
from tfdist.cluster.spec import ClusterInfo
from tfdist.cluster.spec import hosts_to_addresses
from tfdist.cluster.spec import make_tf_config
from tfdist.cluster.tf_config import from_tf_config
from tfdist.cluster.cli import main  # noqa: E402  (after the sources it uses)

__all__ = ["JOB_NAMES", "ClusterConfigError", "ClusterInfo", "expand_hostlist", "from_indexed_job",
           "from_kubeflow", "from_ray", "from_slurm", "from_tf_config", "hosts_to_addresses", "main",
           "make_tf_config", "resolve"]
