"""tfdist-launch: run a TensorFlow job as N processes with TF_CONFIG, like torchrun.

Command line: ``tfdist-launch --workers 2 -- python train.py`` (or ``python -m tfdist.launch``).
From Python: ``tfdist.launch.run("train.py", num_workers=2)``. No TensorFlow import: the
children import it. See docs/launch.md.
"""

from tfdist.launch.api import run
from tfdist.launch.cli import main
from tfdist.launch.errors import LaunchError
from tfdist.launch.group import ProcessGroup
from tfdist.launch.group import ProcessResult
from tfdist.launch.group import ProcessSpec
from tfdist.launch.launcher import Launcher
from tfdist.launch.launcher import LaunchResult
from tfdist.launch.layout import Topology
from tfdist.launch.output import Output

__all__ = ["LaunchError", "LaunchResult", "Launcher", "Output", "ProcessGroup", "ProcessResult",
           "ProcessSpec", "Topology", "main", "run"]
