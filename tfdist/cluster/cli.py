"""``python -m tfdist.cluster``: resolve, validate and describe this task's cluster.

    python -m tfdist.cluster                  # $TF_CONFIG, else the tfdist Indexed Job variables
    python -m tfdist.cluster --tf-config '{"cluster": {...}, "task": {...}}'
    python -m tfdist.cluster --slurm --port 9000
    python -m tfdist.cluster --kubeflow
    python -m tfdist.cluster --check --timeout 30          # can every peer be reached?
    python -m tfdist.cluster --exec -- python train.py     # export TF_CONFIG, then run

Exit status: 0; 1 when ``--check`` finds an unreachable peer; 2 for an invalid cluster or bad
arguments. Only ``--check`` imports TensorFlow (to report versions and devices).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tfdist.cluster.check import check_peers
from tfdist.cluster.kubernetes import from_kubeflow
from tfdist.cluster.resolver import resolve
from tfdist.cluster.slurm import from_slurm
from tfdist.cluster.spec import ClusterConfigError, ClusterInfo

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tfdist.cluster",
                                     description="Resolve, validate and describe this task's cluster.")
    parser.add_argument("--tf-config", metavar="JSON", help="TF_CONFIG to check (default: $TF_CONFIG)")
    parser.add_argument("--slurm", action="store_true", help="build the cluster from Slurm variables")
    parser.add_argument("--port", type=int, help="first port on each node with --slurm (default: 8888)")
    parser.add_argument("--kubeflow", action="store_true", help='accept TFJob "master" and any-case jobs')
    parser.add_argument("--check", action="store_true",
                        help="check that every peer resolves and answers; exit 1 if one does not")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="with --check: seconds to wait for all peers (default: 10)")
    parser.add_argument("--linger", type=float, default=5.0, metavar="S",
                        help="with --check: keep this task's port open S seconds after its own "
                             "check, for slower peers (default: 5)")
    parser.add_argument("--exec", action="store_true",
                        help="last option, then -- COMMAND: set TF_CONFIG (evaluator kept out of "
                             "the cluster) and run COMMAND in this process")
    return parser


def _report_tensorflow() -> None:
    """TensorFlow/Keras versions and devices (the only TensorFlow import of this package)."""
    from tfdist import quiet  # pylint: disable=import-outside-toplevel

    quiet.importing_tensorflow(quiet.tf_log_level_env(verbose=False))  # without the start-up noise
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    devices = ", ".join(f"{d.device_type}:{d.name.rpartition(':')[2]}"
                        for d in tf.config.list_physical_devices()) or "none"
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, devices: {devices}")


def _print_peers(statuses: list, note: str) -> None:
    if note:
        print(f"note: {note}")
    for status in statuses:
        verdict = "ok" if status.reachable else "UNREACHABLE"
        print(f"peer {status.task:<12} {status.address:<40} {verdict}: {status.detail}", flush=True)


def _check(info: ClusterInfo, timeout: float, linger: float) -> int:
    print(info.describe(), flush=True)
    statuses, _ = check_peers(info, timeout=timeout, linger=linger, report=_print_peers)
    _report_tensorflow()
    bad = [s for s in statuses if not s.reachable]
    if bad:
        names = ", ".join(f"{s.task} ({s.address})" for s in bad)
        print(f"error: {len(bad)} of {len(statuses)} peer(s) unreachable within {timeout:g} s: {names}",
              file=sys.stderr)
        return 1
    print(f"all {len(statuses)} peer(s) reachable")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI: prints the resolved cluster, or one ``error:`` line and returns 2."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    if "--exec" in argv:  # everything after it is the command, even words that look like options
        split = argv.index("--exec")
        argv, command = argv[:split + 1], argv[split + 1:]
    args = parser.parse_args(argv)
    if command is not None:
        command = command[1:] if command[:1] == ["--"] else command
        if not command:
            parser.error("--exec needs a command, e.g. --exec -- python train.py")
        if args.check:
            parser.error("--exec cannot be combined with --check")
    if args.slurm and (args.tf_config is not None or args.kubeflow):
        parser.error("--slurm cannot be combined with --tf-config or --kubeflow")
    if args.port is not None and not args.slurm:
        parser.error("--port only applies with --slurm")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0; received {args.timeout:g}")
    try:
        if args.slurm:
            info = from_slurm(port=8888 if args.port is None else args.port)
        else:
            info = (from_kubeflow if args.kubeflow else resolve)(args.tf_config)
    except ClusterConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if command is not None:
        os.environ["TF_CONFIG"] = info.without_evaluator().to_tf_config()
        sys.stdout.flush()
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            print(f"error: cannot run {command[0]!r}: {exc.strerror or exc}", file=sys.stderr)
            return 127
    if args.check:
        return _check(info, args.timeout, args.linger)
    print(info.describe())
    return 0
