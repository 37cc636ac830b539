"""tfdist-train: train a registered model on a dataset by any route, under any strategy.

    tfdist-train --model_dir=runs/default                       # CNN on digits, custom loop
    tfdist-train --route=fit --strategy=default --model_dir=/tmp/fit
    tfdist-launch --workers 2 -- tfdist-train --route=estimator --model_dir=/tmp/est
    tfdist-train --flagfile=train.flags

Prints progress and the final evaluation; the chief writes `<model_dir>/metrics.json` and
exports the model. TensorFlow's C++ start-up noise is left out; `--verbosity=1` brings it back. Flags: `tfdist/flags.py`; the run itself: `tfdist.runner.job.run`.
See docs/training.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from absl import app
from absl import flags

from tfdist import absl_entry
from tfdist import flags as tfdist_flags
from tfdist import quiet

if TYPE_CHECKING:
    from tfdist import peer_failure

FLAGS = flags.FLAGS
USAGE_ERROR = 2


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> int:
    """Sets up the process, then trains; bad combinations exit 2 with one `error:` line.

    Args:
        argv: What is left of the command line after the flags (only the program name).
        flag_values: The parsed flags. Defaults to absl's global `FLAGS` (the console script).
    """
    if len(argv) > 1:
        print(f"tfdist-train: error: unexpected arguments: {' '.join(argv[1:])} "
              "(flags are --name=value; see --help)", file=sys.stderr)
        return USAGE_ERROR
    options = tfdist_flags.to_options(flag_values)
    # Before TensorFlow loads: its C++ start-up noise stays out unless --verbosity=1 (-v 1) or
    # the user set TF_CPP_MIN_LOG_LEVEL.
    quiet.importing_tensorflow(quiet.tf_log_level_env(verbose=flag_values.verbosity >= 1))
    from tfdist import checkpoint, cluster, data, outer_loop, peer_failure, runner, strategy
    from tfdist.estimator import NanLossDuringTrainingError

    # First, before TensorFlow initialises: logical CPUs, seeds, determinism, precision policy.
    runner.configure_process(options)
    try:
        runner.run(options)
    except (runner.RunError, data.DataConfigError, strategy.StrategyError,
            cluster.ClusterConfigError) as e:
        print(f"tfdist-train: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except (checkpoint.CheckpointError,  # no readable checkpoint, a full disk
            outer_loop.NonFiniteLossError, NanLossDuringTrainingError) as e:
        print(f"tfdist-train: error: {e}", file=sys.stderr)
        return 1
    except peer_failure.PeerUnavailableError as e:
        exit_after_peer_failure(e)
    return 0


def exit_after_peer_failure(error: peer_failure.PeerUnavailableError) -> NoReturn:
    """Prints the one-line peer failure and ends the process with its retryable status.

    `os._exit`, not a normal exit: after a peer failure TensorFlow's collective executor and
    coordination agent may wait for the dead peer during interpreter teardown. Checkpoints are
    written synchronously, so nothing worth keeping is lost. Binaries only, never library code.
    """
    print(error.exit_line(), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(error.exit_code)


def run_from_notebook(*args: str, **flag_kwargs: Any) -> int:
    """`tfdist-train` from Python: a notebook or Colab cell, a script, a test. Never reads sys.argv.

    Inside a Jupyter/Colab kernel `sys.argv` is the kernel's (`-f kernel.json`), which absl's
    `app.run` would reject (googlecolab/colabtools#1323); this parses only the flags given, on
    flag values of its own, so it can be called again in the same process. It trains in this
    process, so TensorFlow settings made earlier in it (logical CPUs, the dtype policy) stay.

    Args:
        *args: Flags as command-line arguments, e.g. `"--route=fit"`.
        **flag_kwargs: Flags as keywords: `route="fit"`, `train_steps=200`, `deterministic=True`
            (`--deterministic`), `False` for `--noname`, lists joined with commas.

    Returns:
        The exit status `tfdist-train` would have: 0 on success, 2 after one `error:` line on
        stderr for bad flags, 1 when training failed (e.g. a non-finite loss).

    Example:

    ```python
    import tfdist.train
    status = tfdist.train.run_from_notebook(model_dir="/tmp/run", route="fit", train_steps=200)
    ```
    """
    argv = [*args, *absl_entry.to_argv(flag_kwargs)]
    return absl_entry.call("tfdist-train", tfdist_flags.define_flags, main, argv)


def run() -> None:
    """The `tfdist-train` console script: defines the flags, then runs `main`."""
    tfdist_flags.define_flags()
    # --help lists the main program's key flags; ours live in tfdist.flags, so adopt them.
    for flag in FLAGS.get_key_flags_for_module(tfdist_flags):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


if __name__ == "__main__":
    run()
