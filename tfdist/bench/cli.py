"""The `tfdist-bench` command line: parse and check (before TensorFlow loads), run, print, write.

Every bad input ends in one `tfdist-bench: error: ...` line on stderr and exit status 2, naming
the flag, what it received and how to fix it. A failed measurement (e.g. a worker process died)
exits 1 with the worker's last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tfdist import cli_args
from tfdist import quiet
from tfdist.bench import options as options_lib

if TYPE_CHECKING:
    from tfdist.bench import levers

PROG = "tfdist-bench"
USAGE_ERROR = 2
FAILURE = 1


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 1; received {text!r} (e.g. 100,200,300)")
    return tuple(dict.fromkeys(values))


def _choice(valid: tuple[str, ...]):
    def parse(text: str) -> str:
        if text not in valid:
            raise argparse.ArgumentTypeError(
                f"unknown value {text!r}; pass one of: {', '.join(valid)}")
        return text
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (defined once, here)."""
    parser = cli_args.OneLineParser(
        prog=PROG,
        description="Time tfdist's training routes against a hand-written strategy.run loop, "
                    "under the default strategy, MirroredStrategy and real multi-worker "
                    "processes, interleaved in one run; with FLOP/s against a measured matmul "
                    "peak and the input pipelines' own throughput. See docs/benchmarks.md.",
        epilog="Routes: " + "; ".join(f"{k}: {v}" for k, v in
                                      options_lib.ROUTE_DESCRIPTIONS.items()) + ".")
    what = parser.add_argument_group("what to measure")
    what.add_argument("--model", type=_choice(options_lib.MODELS), default="dense",
                      help=f"{', '.join(options_lib.MODELS)}; default dense (784-1024-1024-10 MLP)")
    what.add_argument("--strategies", default=",".join(options_lib.STRATEGIES),
                      help="comma-separated subset of " + ",".join(options_lib.STRATEGIES)
                           + "; default all (multi_worker: real worker processes, one core each, "
                             "against one worker with as many cores)")
    what.add_argument("--routes",
                      help="comma-separated subset of " + ",".join(options_lib.ROUTES)
                           + "; default all (reference always runs: ratios need it); with "
                             "--targets, the multi-worker launches also time ctl if listed")
    sizes = parser.add_argument_group("sizes (defaults depend on --model)")
    sizes.add_argument("--batch", type=cli_args.int_at_least(1, 512), help="global batch size")
    sizes.add_argument("--steps", type=cli_args.int_at_least(1, 100), help="steps per timed call")
    sizes.add_argument("--steps-per-call", type=cli_args.int_at_least(1, 50),
                       help="steps per tf.function call (ctl steps_per_loop, fit "
                            "steps_per_execution, Estimator steps_per_loop)")
    sizes.add_argument("--reps", type=cli_args.int_at_least(1, 3), default=3,
                       help="timed repetitions in this process, interleaved; default 3")
    sizes.add_argument("--mw-reps", type=cli_args.int_at_least(1, 2), default=2,
                       help="timed repetitions in each multi-worker launch; default 2")
    sizes.add_argument("--pipeline-batches", type=cli_args.int_at_least(1, 100), default=100,
                       help="batches each input pipeline is timed over; default 100")
    sizes.add_argument("--peak-size", type=cli_args.int_at_least(64, 2048), default=2048,
                       help="side of the float32 matmuls that measure the machine's peak; "
                            "smaller is quicker, less exact; default 2048")
    sizes.add_argument("--call-lengths", type=_lengths, default=(),
                       help="also time every in-process route at these steps per call, e.g. "
                            "100,200,300: time should grow in proportion (no teardown stall)")
    setup = parser.add_argument_group("set-up")
    setup.add_argument("--virtual-cpus", type=cli_args.int_at_least(2, 2), default=2,
                       help="logical CPUs for mirrored; default 2")
    setup.add_argument("--workers", type=cli_args.int_at_least(2, 2), default=2,
                       help="worker processes for multi_worker, one core each; default 2")
    setup.add_argument("--ps", type=cli_args.int_at_least(1, 2), default=1,
                       help="with --parameter-server: ps tasks; more than 1 splits the large "
                            "variables (e.g. --model embedding's table) across them; default 1")
    setup.add_argument("--timeout", type=cli_args.seconds(allow_zero=False), default=600.0,
                       help="seconds allowed for each multi-worker launch; default 600")
    setup.add_argument("--seed", type=int, default=0, help="data and model seed; default 0")
    what.add_argument("--wire", metavar="VARIANTS",
                      help="extra multi-worker launches with gradient levers, comma-separated; "
                           "each variant joins bf16, fp16[/SCALE], accumN, packN (bytes per "
                           "pack), flat with +, e.g. bf16,accum4,bf16+accum4")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    out.add_argument("-v", "--verbose", action="store_true",
                     help="keep TensorFlow's C++ start-up noise and info logs (a "
                          "TF_CPP_MIN_LOG_LEVEL you set is kept either way)")
    out.add_argument("--plot", metavar="PATH", help="also draw a PNG (needs matplotlib)")
    out.add_argument("--markdown", action="store_true", help="print Markdown tables")
    what.add_argument("--predict", action="store_true",
                      help="measure the predict route (tfdist-predict vs Keras predict, mirrored, "
                           "1 worker x N cores, N workers x 1 core, input pipeline) instead of "
                           "the training routes")
    what.add_argument("--parameter-server", action="store_true",
                      help="measure parameter-server training (1 chief + --workers workers + "
                           "--ps ps; "
                           "routes ctl and estimator) against the same workers under "
                           "MultiWorkerMirroredStrategy, instead of the training routes")
    sizes.add_argument("--predict-rows", type=cli_args.int_at_least(1, 32768), default=32768,
                       help="examples each predict row scores; default 32768")
    what.add_argument("--levers", action="store_true",
                      help="measure the device levers instead of the routes: float32 vs "
                           "mixed_bfloat16 on --model (reference route, default strategy), and "
                           "peak memory and step time with and without recomputation (a "
                           "Transformer, one fresh process per mode); docs/performance.md")
    sizes.add_argument("--remat-modes", default="none,full",
                       help="with --levers: comma-separated tfdist.recompute modes to compare "
                            "(none,full,activations; none first is the baseline); "
                            "'' skips recomputation; default none,full")
    sizes.add_argument("--remat-batch", type=cli_args.int_at_least(1, 32), default=32,
                       help="with --levers: the recomputation model's batch; default 32")
    sizes.add_argument("--remat-seq-len", type=cli_args.int_at_least(1, 256), default=256,
                       help="with --levers: its sequence length (attention memory grows with "
                            "its square); default 256")
    sizes.add_argument("--remat-blocks", type=cli_args.int_at_least(1, 8), default=8,
                       help="with --levers: its encoder blocks (recomputation keeps one block's "
                            "activations at a time: more blocks, more saving); default 8")
    what.add_argument("--targets", action="store_true",
                      help="measure every target of issue 19 in one run (multi-worker with and "
                           "without bf16 compression and accumulation, mirrored vs default, "
                           "mixed_bfloat16 vs float32, exact-FLOP share of peak, recomputation) "
                           "and print one table: measured, spread, met, where the time goes; "
                           "with --markdown the table for docs/benchmarks.md; sized for <= 8 min on "
                           "a quiet 2-core machine (27 min measured under load)")
    parser.add_argument("--_worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--_remat_worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--_predict_worker", metavar="SPEC", help=argparse.SUPPRESS)
    return parser


def _wire(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    variants = tuple(dict.fromkeys(v.strip() for v in text.split(",")))
    for variant in variants:
        options_lib.parse_wire(variant)  # a bad one fails here, before TensorFlow loads
    return variants


def to_options(args: argparse.Namespace) -> options_lib.BenchOptions:
    """The parsed command line as checked `BenchOptions`.

    Raises:
        tfdist.cli_args.UsageError: A value that cannot work.
    """
    defaults = options_lib.MODEL_DEFAULTS[args.model]
    default_routes = ("reference",) if args.targets else options_lib.ROUTES
    routes = options_lib.parse_list("--routes", "route", args.routes or ",".join(default_routes),
                                    options_lib.ROUTES)
    if "reference" not in routes:
        routes = ("reference", *routes)
    steps = args.steps or defaults.steps
    options = options_lib.BenchOptions(
        model=args.model,
        strategies=options_lib.parse_list("--strategies", "strategy", args.strategies,
                                           options_lib.STRATEGIES),
        routes=routes,
        batch=args.batch or defaults.batch,
        steps=steps,
        steps_per_call=args.steps_per_call or min(defaults.steps_per_call, steps),
        reps=args.reps, mw_reps=args.mw_reps, virtual_cpus=args.virtual_cpus,
        workers=args.workers, ps=args.ps, pipeline_batches=args.pipeline_batches, peak_size=args.peak_size,
        call_lengths=args.call_lengths, timeout=args.timeout,
        json_path=args.json, plot_path=args.plot, seed=args.seed,
        wire=_wire(args.wire),
    )
    _check_modes(args, options)
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        directory = os.path.dirname(os.path.abspath(path)) if path else None
        if directory and not os.path.isdir(directory):
            raise cli_args.UsageError(
                f"{flag}: directory {directory!r} does not exist (received {flag}={path}); "
                "create it or pass another path")
    return options_lib.check(options)


def _check_modes(args: argparse.Namespace, options: options_lib.BenchOptions) -> None:
    """Flags that belong to one measurement mode, and modes passed together."""
    modes = [flag for flag, on in (("--predict", args.predict),
                                   ("--parameter-server", args.parameter_server),
                                   ("--levers", args.levers),
                                   ("--targets", args.targets)) if on]
    if len(modes) > 1:
        raise cli_args.UsageError(
            f"{' and '.join(modes)} are separate measurements (received {' '.join(modes)}); "
            "pass one of them per run")
    if args.ps != 1 and not args.parameter_server:
        raise cli_args.UsageError(
            f"--ps sets the ps tasks of --parameter-server (received --ps={args.ps} without "
            "it); add --parameter-server or drop --ps")
    if args.targets and options.wire:
        from tfdist.bench import targets as targets_lib

        raise cli_args.UsageError(
            f"--targets times its own wire variants ({','.join(targets_lib.WIRE)}) (received "
            f"--wire={','.join(options.wire)} --targets); drop --wire, or run it without "
            "--targets")
    if not args.parameter_server:
        return
    if options.wire:
        raise cli_args.UsageError(
            f"--wire levers are timed in the multi-worker rows, not with --parameter-server "
            f"(received --wire={','.join(options.wire)} --parameter-server); drop one of them")
    if options.batch % options.workers:  # its multi_worker row splits the batch
        raise cli_args.UsageError(
            f"--batch must divide over the {options.workers} workers of --parameter-server's "
            f"multi_worker row (received --batch={options.batch}, --workers={options.workers});"
            f" e.g. --batch={max(1, options.batch // options.workers) * options.workers}")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `tfdist-bench`; returns the exit status (0, 1 on a failed measurement, 2 on bad input)."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
        if args._worker:
            from tfdist.bench import multiworker

            return multiworker.worker_main(args._worker)
        if args._remat_worker:
            from tfdist.bench import levers

            return levers.remat_worker_main(args._remat_worker)
        if args._predict_worker:
            from tfdist.bench import predict as predict_bench

            return predict_bench.worker_main(args._predict_worker)
        options = to_options(args)
        args.remat_modes_parsed = remat_modes(args.remat_modes)
    except cli_args.ParserExit as exit_:
        return exit_.code
    except cli_args.UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return USAGE_ERROR

    # Binary-only, before TensorFlow loads: keep its C++ start-up noise off the table.
    quiet.importing_tensorflow(quiet.tf_log_level_env(verbose=args.verbose))
    from tfdist.bench import benchmark
    from tfdist.bench import multiworker
    from tfdist.bench import plot
    from tfdist.bench import report as report_lib
    from tfdist.strategy import StrategyError

    if args.predict:
        return _predict(args, options)
    if args.parameter_server:
        return _parameter_server(options)
    if args.levers:
        return _levers(args, options)
    if args.targets:
        return _targets(args, options)
    try:
        report = benchmark.run(options)
    except (multiworker.BenchError, StrategyError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return FAILURE
    print(report_lib.render(report, markdown=args.markdown), flush=True)
    if options.json_path:
        with open(options.json_path, "w") as f:
            json.dump(report, f, indent=1)
    if options.plot_path:
        reason = plot.write(report, options.plot_path)
        if reason:
            print(f"{PROG}: {reason}", file=sys.stderr, flush=True)
    return 0


def _parameter_server(options: options_lib.BenchOptions) -> int:
    import tempfile

    from tfdist.bench import multiworker
    from tfdist.bench import parameter_server

    try:
        with tempfile.TemporaryDirectory(prefix="tfdist-bench-ps-") as work_dir:
            report = parameter_server.run(
                options, work_dir, say=lambda line: print(line, file=sys.stderr, flush=True))
    except multiworker.BenchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return FAILURE
    print(parameter_server.render(report), flush=True)
    if options.json_path:
        with open(options.json_path, "w") as f:
            json.dump({"parameter_server": report}, f, indent=1)
    return 0


def _predict(args: argparse.Namespace, options: options_lib.BenchOptions) -> int:
    from tfdist.bench import multiworker
    from tfdist.bench import predict as predict_bench

    try:
        section = predict_bench.run(
            model_name=options.model, batch=options.batch, rows=args.predict_rows,
            reps=options.reps, workers=options.workers, virtual_cpus=options.virtual_cpus,
            timeout=options.timeout, seed=options.seed,
            say=lambda line: print(line, file=sys.stderr, flush=True))
    except multiworker.BenchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return FAILURE
    print(predict_bench.render(section, markdown=args.markdown), flush=True)
    if options.json_path:
        with open(options.json_path, "w") as f:
            json.dump({"predict": section}, f, indent=1)
    return 0


def remat_modes(text: str) -> tuple[str, ...]:
    """`--remat-modes` as a tuple ('' for none), checked before TensorFlow loads."""
    from tfdist import recompute

    if not text.strip():
        return ()
    return options_lib.parse_list("--remat-modes", "mode", text, recompute.MODES)


def _section(key: str, measure: Callable[[str, Callable[[str], None]], dict[str, Any]],
             render: Callable[[dict[str, Any]], str], json_path: str | None) -> int:
    """Runs `measure(work_dir, say)` in a scratch directory, prints `render(section)`, writes
    `{key: section}` to `json_path`; a `BenchError` is one `tfdist-bench: error:` line."""
    import shutil
    import tempfile

    from tfdist.bench import multiworker

    work_dir = tempfile.mkdtemp(prefix=f"tfdist-bench-{key}-")
    try:
        section = measure(work_dir, lambda line: print(line, file=sys.stderr, flush=True))
    except multiworker.BenchError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr, flush=True)
        return FAILURE
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    print(render(section), flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump({key: section}, f, indent=1)
    return 0


def _levers(args: argparse.Namespace, options: options_lib.BenchOptions) -> int:
    from tfdist.bench import levers

    return _section(
        "levers",
        lambda work_dir, say: levers.run(
            model_name=options.model, batch=options.batch, steps=options.steps,
            steps_per_call=options.steps_per_call, reps=options.reps,
            peak_size=options.peak_size, seed=options.seed, remat_modes=args.remat_modes_parsed,
            remat_workload=_remat_workload(args),
            timeout=options.timeout, work_dir=work_dir, say=say),
        lambda section: levers.render(section, markdown=args.markdown), options.json_path)


def _remat_workload(args: argparse.Namespace) -> levers.RematWorkload:
    from tfdist.bench import levers

    return levers.RematWorkload(batch=args.remat_batch, seq_len=args.remat_seq_len,
                                num_layers=args.remat_blocks)


def _targets(args: argparse.Namespace, options: options_lib.BenchOptions) -> int:
    from tfdist.bench import targets

    workload = _remat_workload(args)
    return _section(
        "targets",
        lambda work_dir, say: targets.run(options, remat_workload=workload, work_dir=work_dir,
                                          say=say),
        lambda section: targets.render(section, markdown=args.markdown), options.json_path)


def run() -> None:
    """The `tfdist-bench` console script (also `python -m tfdist.bench`)."""
    status = main()
    from tfdist.bench import teardown

    # Skips TensorFlow's teardown, which can block for minutes on live tf.data iterators.
    teardown.exit_now(status)

