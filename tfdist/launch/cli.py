"""The ``tfdist-launch`` command line: parse, validate, plan, run, and return the exit status.

Every bad input ends in one ``tfdist-launch: error: ...`` line on stderr and exit status 2,
before any process starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import sys
from collections.abc import Iterator, Sequence

from tfdist import cli_args
from tfdist import quiet
from tfdist.launch import elastic
from tfdist.launch import kubernetes
from tfdist.launch import layout
from tfdist.launch.errors import LaunchError
from tfdist.launch.group import describe_status
from tfdist.launch.launcher import Launcher, LaunchResult
from tfdist.launch.output import Output

PROG = "tfdist-launch"
USAGE_ERROR = 2
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal went away


def _port_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'must be comma-separated ports, e.g. "2222,2223"; received {text!r}') from None


def _worker_range(text: str) -> elastic.WorkerRange:
    try:
        return elastic.WorkerRange.parse(text)
    except LaunchError:
        raise argparse.ArgumentTypeError(
            f'must be a count >= 1 ("2") or a range MIN:MAX with 1 <= MIN <= MAX ("2:4"); '
            f"received {text!r}") from None


def _host_list(text: str) -> tuple[str, ...]:
    hosts = tuple(part.strip() for part in text.split(","))
    if not all(hosts):
        raise argparse.ArgumentTypeError(
            f'must be comma-separated host names, e.g. "node1,node2"; received {text!r}')
    return hosts


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defined once, here)."""
    parser = cli_args.OneLineParser(
        prog=PROG, usage=f"{PROG} [options] -- COMMAND [ARGS...]",
        description="Run a command as the processes of a TensorFlow cluster, each with its "
                    "TF_CONFIG: free loopback ports, prefixed output, stop-all on failure, "
                    "restarts; on several hosts with --hosts or --slurm.",
        epilog="Exit status: 0 if every process succeeded; else the first failing process's "
               "(128+N for signal N); 124 on --timeout; 130/143 after Ctrl-C/SIGTERM; 2 on bad input.")
    job = parser.add_argument_group("cluster")
    job.add_argument("--workers", type=_worker_range, default=elastic.WorkerRange(1, 1),
                     metavar="N|MIN:MAX",
                     help="worker processes (per host with --hosts or --slurm); default 1. "
                          "MIN:MAX starts MAX and, when a worker slot fails more than "
                          "--max-restarts times, restarts the group with one fewer, down to MIN")
    job.add_argument("--chief", action="store_true", help="add a chief process (on the first host)")
    job.add_argument("--ps", type=cli_args.int_at_least(0), default=0, metavar="M",
                     help="parameter-server processes (per host); needs --chief")
    job.add_argument("--evaluator", action="store_true",
                     help="add an evaluator process (on the first host), outside the training cluster")
    run = parser.add_argument_group("running")
    run.add_argument("--max-restarts", type=cli_args.int_at_least(0), default=0, metavar="K",
                     help="restart the whole group up to K times after a failure; default 0 "
                          "(with --workers MIN:MAX: failures allowed per worker slot)")
    run.add_argument("--timeout", type=cli_args.seconds(allow_zero=True), metavar="S", help="stop everything after S seconds")
    run.add_argument("--grace", type=cli_args.seconds(allow_zero=True), default=10.0, metavar="S",
                     help="seconds the others get to exit after a failure, and from SIGTERM to "
                          "SIGKILL; default 10")
    run.add_argument("--log-dir", metavar="DIR",
                     help="also write each process's output to DIR/<task>-<id>.log")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="keep TensorFlow's C++ start-up noise and info logs in the output "
                          "(a TF_CPP_MIN_LOG_LEVEL you set is kept either way)")
    run.add_argument("--dry-run", action="store_true",
                     help="print each process's environment and command; start nothing")
    net = parser.add_argument_group("ports and hosts")
    net.add_argument("--ports", type=_port_list, metavar="P,P,...",
                     help="explicit ports for chief, workers, ps (single host); default: free ports")
    net.add_argument("--port-base", type=int, metavar="P", help="use consecutive ports from P on each host")
    net.add_argument("--hosts", type=_host_list, metavar="H,H,...",
                     help="every host of a multi-host job, in the same order on each host "
                          '("name" or "name:port"); default 8888 as the base port')
    net.add_argument("--host-index", type=cli_args.int_at_least(0), metavar="I",
                     help="this host's index in --hosts")
    net.add_argument("--slurm", action="store_true",
                     help="take --hosts and --host-index from Slurm (srun --ntasks-per-node=1)")
    k8s = parser.add_argument_group("Kubernetes manifests (print them; start nothing)")
    k8s.add_argument("--emit", choices=kubernetes.KINDS,
                     help="print manifests for this job: a Kubeflow TFJob, or an Indexed Job + "
                          "headless Service (no Kubeflow needed); the command runs in each pod")
    k8s.add_argument("--image", help="with --emit: container image with TensorFlow and tfdist")
    k8s.add_argument("--name", default="tfdist", help="with --emit: job name (a DNS label); default tfdist")
    k8s.add_argument("--namespace", default="default", help="with --emit: namespace; default default")
    k8s.add_argument("--cpu", help='with --emit: CPU request and limit per pod, e.g. "4"')
    k8s.add_argument("--memory", help='with --emit: memory request and limit per pod, e.g. "8Gi"')
    k8s.add_argument("--gpus", type=cli_args.int_at_least(0), default=0, metavar="G",
                     help="with --emit: nvidia.com/gpu per pod; default 0")
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = build_parser()
    if "--" in argv:
        split = argv.index("--")
        args = parser.parse_args(argv[:split])
        if args.command:
            raise cli_args.UsageError(
                f"unexpected arguments before '--': {shlex.join(args.command)}")
        command = argv[split + 1:]
    else:
        args = parser.parse_args(argv)
        command = args.command
    if not command:
        raise cli_args.UsageError(f"no command given; usage: {PROG} [options] -- COMMAND [ARGS...]")
    return args, command


def _topology(args: argparse.Namespace) -> layout.Topology:
    hosts, host_index = args.hosts, args.host_index
    if args.slurm:
        if hosts is not None or host_index is not None:
            raise LaunchError("--slurm sets the hosts itself; drop --hosts and --host-index.")
        hosts, host_index = layout.slurm_hosts()
    elif hosts is not None and host_index is None:
        raise LaunchError("--hosts needs --host-index (this host's position in the list).")
    elif hosts is None and host_index is not None:
        raise LaunchError("--host-index only applies with --hosts.")
    return layout.Topology(num_workers=args.workers.max, chief=args.chief, num_ps=args.ps,
                           evaluator=args.evaluator, hosts=hosts, host_index=host_index or 0,
                           ports=args.ports, port_base=args.port_base)


def _emit(args: argparse.Namespace, command: list[str]) -> str:
    """The manifests asked for with --emit (validated), as YAML."""
    given = (("--hosts", args.hosts), ("--host-index", args.host_index), ("--slurm", args.slurm),
             ("--ports", args.ports), ("--timeout", args.timeout), ("--log-dir", args.log_dir),
             ("--dry-run", args.dry_run))
    local_only = [flag for flag, value in given if value is not None and value is not False]
    if local_only:
        raise LaunchError(f"--emit prints manifests for Kubernetes; drop {', '.join(local_only)} "
                          "(they apply to processes started here).")
    if args.workers.elastic:
        raise LaunchError(f"--emit takes a fixed --workers N; received --workers {args.workers}. "
                          "Emit the job at MAX and resize it by changing the Indexed Job's "
                          "parallelism and completions (docs/elastic.md).")
    if not args.image:
        raise LaunchError("--emit needs --image: the container image with TensorFlow and tfdist.")
    manifest = kubernetes.Manifest(
        name=args.name, image=args.image, command=tuple(command), num_workers=args.workers.max,
        chief=args.chief, num_ps=args.ps, evaluator=args.evaluator, namespace=args.namespace,
        port=args.port_base or kubernetes.k8s_source.DEFAULT_PORT, cpu=args.cpu, memory=args.memory,
        gpus=args.gpus, max_restarts=args.max_restarts)
    return kubernetes.render(args.emit, manifest)


def check_command(command: Sequence[str]) -> None:
    """Raises `LaunchError` unless ``command[0]`` names an executable (on PATH or as a path)."""
    program = command[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise LaunchError(f"command not found or not executable: {program!r}")
    elif shutil.which(program) is None:
        raise LaunchError(f"command not found: {program!r} (not on PATH)")


def _dry_run(launcher: Launcher) -> None:
    for spec, task in zip(launcher.specs(launcher.plan), launcher.plan.local_tasks):
        variables = " ".join(f"{k}={shlex.quote(v)}" for k, v in task.env(0).items())
        print(f"[{spec.name}] {variables} {shlex.join(spec.argv)}", flush=True)
    if launcher.topology.picks_ports:
        launcher.output.message("dry run: nothing started (free ports are picked again at launch)")


@contextlib.contextmanager
def _forward_signals(launcher: Launcher) -> Iterator[None]:
    """Routes Ctrl-C, SIGTERM and SIGHUP to the launcher while it runs; restores them after."""
    previous = {sig: signal.signal(sig, lambda signum, frame: launcher.interrupt(signum))
                for sig in _FORWARDED}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary(result: LaunchResult) -> str:
    restarts = f" after {result.restarts} restart(s)" if result.restarts else ""
    if result.resizes:
        sizes = " -> ".join([str(result.resizes[0].from_workers)]
                            + [str(r.to_workers) for r in result.resizes])
        restarts += f", resized {sizes} worker(s)"
    if result.exit_status == 0:
        return f"all {len(result.results)} process(es) succeeded{restarts}"
    failed = next((r for r in result.results if r.returncode != 0 and not r.stopped), None)
    if result.signal is None and not result.timed_out and failed is not None:
        return f"{failed.name} failed ({describe_status(failed.returncode)}){restarts}"
    return f"exit status {result.exit_status}{restarts}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfdist-launch``; returns the exit status (see ``--help``)."""
    try:
        args, command = _parse(sys.argv[1:] if argv is None else list(argv))
        if args.emit:
            sys.stdout.write(_emit(args, command))
            return 0
        if args.image:
            raise LaunchError("--image only applies with --emit.")
        topology = _topology(args)
        check_command(command)
        log_env, drop_noise = quiet.child_log_settings(args.verbose, os.environ)
        output = Output(stream=sys.stdout, messages=sys.stderr, log_dir=args.log_dir,
                        drop_startup_noise=drop_noise)
        launcher = Launcher(command, topology, max_restarts=args.max_restarts, timeout=args.timeout,
                            grace=args.grace, env=log_env, output=output,
                            min_workers=args.workers.min)
        exposed = launcher.plan.non_loopback_addresses()
        if exposed:
            output.message(layout.security_warning(exposed))
        if args.dry_run:
            _dry_run(launcher)
            return 0
        if not topology.picks_ports:
            layout.check_ports_free(launcher.plan)
        with _forward_signals(launcher):
            result = launcher.run()
    except cli_args.ParserExit as exit_:
        return exit_.code
    except (cli_args.UsageError, LaunchError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return USAGE_ERROR
    except KeyboardInterrupt:  # Ctrl-C before any process started
        return 128 + signal.SIGINT
    output.message(_summary(result))
    return result.exit_status
