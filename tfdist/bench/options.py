"""`BenchOptions`: what one `tfdist-bench` run measures (the command line, as a value).

Kept free of TensorFlow imports: the command line is checked here before TensorFlow loads, so a
typo costs a fraction of a second, not a TensorFlow start-up.
"""

from __future__ import annotations

import dataclasses

from tfdist.cli_args import UsageError

ROUTES = ("reference", "ctl", "fit", "keras_fit", "estimator")
ROUTE_DESCRIPTIONS = {
    "reference": "hand-written strategy.run loop, iterator kept alive",
    "ctl": "tfdist.loop Trainer + Controller.train",
    "fit": "Model.fit, steps_per_execution, tfdist.data.for_fit",
    "keras_fit": "Model.fit as users write it: steps_per_execution=1, plain dataset",
    "estimator": "tfdist.estimator.Estimator.train(steps=N)",
}
# In-process strategies, and `multi_worker`: real worker processes started by tfdist.launch.
STRATEGIES = ("default", "mirrored", "multi_worker")
MODELS = ("dense", "cnn", "resnet", "embedding")


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    """Per-model defaults sized so the default run stays within a few minutes on 2 CPU cores."""

    batch: int
    steps: int
    steps_per_call: int


MODEL_DEFAULTS = {
    "dense": ModelDefaults(batch=512, steps=100, steps_per_call=50),
    "cnn": ModelDefaults(batch=256, steps=100, steps_per_call=50),
    "resnet": ModelDefaults(batch=64, steps=10, steps_per_call=5),
    "embedding": ModelDefaults(batch=512, steps=100, steps_per_call=50),
}


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """One benchmark run.

    Args:
        model: `dense` (784-1024-1024-10 MLP), `cnn`, `resnet` or `embedding` (16 skewed ids
            -> 100,000x64 table -> mean-pool -> dense head; from the `models` registry).
            Defaults to `"dense"`.
        strategies: Any of `STRATEGIES`. Defaults to all three.
        routes: Any of `ROUTES`; the reference is always run (every ratio needs it).
            Defaults to all five.
        batch: Global batch size. Defaults to the model's default.
        steps: Steps per timed call of a route. Defaults to the model's default.
        steps_per_call: Steps per `tf.function` call (ctl `steps_per_loop`, fit
            `steps_per_execution`, Estimator `steps_per_loop`). Defaults to the model's default.
        reps: Timed repetitions of every route, interleaved. Defaults to 3.
        mw_reps: Timed repetitions in each multi-worker run. Defaults to 2.
        virtual_cpus: Logical CPUs `mirrored` splits the CPU into. Defaults to 2.
        workers: Worker processes of `multi_worker`, one core each. Defaults to 2.
        ps: ps tasks of the `--parameter-server` launch (more than 1 splits large variables,
            e.g. the embedding table, across them). Defaults to 1.
        pipeline_batches: Batches each input pipeline is timed over. Defaults to 100.
        peak_size: Side of the square float32 matmuls that measure the machine's peak (every
            "% of peak" divides by it). Smaller is quicker and less exact. Defaults to 2048.
        call_lengths: Also time every in-process route at each of these steps per call
            (e.g. `(100, 200, 300)`): a teardown stall shows as a jump, not a line. Defaults to
            none.
        timeout: Seconds allowed for each multi-worker launch. Defaults to 600.
        json_path: Also write the results here. Defaults to `None`.
        plot_path: Also draw them here (PNG; needs matplotlib). Defaults to `None`.
        seed: Seed for the data and the models. Defaults to 0.
        wire: Gradient-lever variants (see `parse_wire`), e.g. `("bf16", "accum4")`, each
            timed on the reference and ctl routes in the multi-worker launch, interleaved with
            the rows without levers. With `accumN` the micro-batch stays `batch` and a step
            trains N x `batch` examples (one all-reduce). Defaults to none.
    """

    model: str = "dense"
    strategies: tuple[str, ...] = STRATEGIES
    routes: tuple[str, ...] = ROUTES
    batch: int = 512
    steps: int = 100
    steps_per_call: int = 50
    reps: int = 3
    mw_reps: int = 2
    virtual_cpus: int = 2
    workers: int = 2
    ps: int = 1
    pipeline_batches: int = 100
    peak_size: int = 2048
    call_lengths: tuple[int, ...] = ()
    timeout: float = 600.0
    json_path: str | None = None
    plot_path: str | None = None
    seed: int = 0
    wire: tuple[str, ...] = ()

    @property
    def local_strategies(self) -> tuple[str, ...]:
        """The strategies measured inside this process."""
        return tuple(s for s in self.strategies if s != "multi_worker")


@dataclasses.dataclass(frozen=True)
class WireVariant:
    """Gradient levers of one `--wire` variant (`tfdist.gradients.GradientOptions` + accumulation)."""

    compression: str = "none"
    loss_scale: float | None = None
    bytes_per_pack: int = 0
    flat: bool = False
    accumulation_steps: int = 1


_COMPRESSIONS = {"bf16": "bfloat16", "fp16": "float16"}


def parse_wire(variant: str) -> WireVariant:
    """Parses one `--wire` variant: parts joined by `+`.

    Parts: `bf16`, `fp16` or `fp16/SCALE` (compression, optionally loss-scaled), `accumN`
    (N micro-batches per step), `packN` (`bytes_per_pack=N`), `flat` (one buffer per dtype).
    E.g. `bf16+accum4`.

    Raises:
        tfdist.cli_args.UsageError: An unknown part, naming it and the valid forms.
    """
    fields: dict[str, object] = {}
    for part in variant.split("+"):
        name, _, scale = part.partition("/")
        try:
            if name in _COMPRESSIONS and (not scale or name == "fp16"):
                fields["compression"] = _COMPRESSIONS[name]
                if scale:
                    fields["loss_scale"] = float(scale)
                    if not fields["loss_scale"] > 0:  # type: ignore[operator]
                        raise ValueError
            elif name.startswith("accum") and int(name[5:]) >= 1:
                fields["accumulation_steps"] = int(name[5:])
            elif name.startswith("pack") and int(name[4:]) >= 0:
                fields["bytes_per_pack"] = int(name[4:])
            elif name == "flat":
                fields["flat"] = True
            else:
                raise ValueError
        except ValueError:
            raise UsageError(
                f"--wire: unknown lever {part!r} in variant {variant!r}; use bf16, fp16, "
                "fp16/SCALE, accumN, packN or flat, joined by + (e.g. --wire=bf16,bf16+accum4)"
            ) from None
    return WireVariant(**fields)  # type: ignore[arg-type]


def parse_list(flag: str, noun: str, text: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    """Parses a comma-separated subset of `valid` (order kept, duplicates dropped).

    Raises:
        tfdist.cli_args.UsageError: An unknown or empty name, naming `flag` and the valid names.
    """
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",")))
    unknown = [n for n in names if n not in valid]
    if unknown:  # an empty name is unknown too: `split` always yields one
        raise UsageError(
            f"{flag}: unknown {noun} {', '.join(repr(n) for n in unknown)} (received {flag}={text}); "
            f"pass a comma-separated subset of: {','.join(valid)}")
    return names


def check(options: BenchOptions) -> BenchOptions:
    """Checks values that depend on each other; returns `options`.

    Raises:
        tfdist.cli_args.UsageError: One line naming the flag, what it received and the fix.
    """
    if options.steps % options.steps_per_call:
        raise UsageError(
            f"--steps must be a multiple of --steps-per-call (received --steps={options.steps}, "
            f"--steps-per-call={options.steps_per_call}); e.g. --steps="
            f"{max(1, options.steps // options.steps_per_call) * options.steps_per_call}")
    uneven = [n for n in options.call_lengths if n % options.steps_per_call]
    if uneven:
        lengths = ",".join(str(max(1, n // options.steps_per_call) * options.steps_per_call)
                           for n in options.call_lengths)
        raise UsageError(
            f"--call-lengths must be multiples of --steps-per-call (received --call-lengths="
            f"{','.join(map(str, options.call_lengths))}, --steps-per-call="
            f"{options.steps_per_call}); e.g. --call-lengths={lengths}")
    if "mirrored" in options.strategies and options.batch % options.virtual_cpus:
        raise UsageError(
            f"--batch must divide over the {options.virtual_cpus} mirrored replicas (received "
            f"--batch={options.batch}, --virtual-cpus={options.virtual_cpus}); e.g. --batch="
            f"{max(1, options.batch // options.virtual_cpus) * options.virtual_cpus}")
    if options.wire and "multi_worker" not in options.strategies:
        raise UsageError(
            f"--wire measures multi-worker launches (received --wire={','.join(options.wire)}, "
            f"--strategies={','.join(options.strategies)}); add multi_worker to --strategies")
    if "multi_worker" in options.strategies and options.batch % options.workers:
        raise UsageError(
            f"--batch must divide over the {options.workers} workers (received --batch="
            f"{options.batch}, --workers={options.workers}); e.g. --batch="
            f"{max(1, options.batch // options.workers) * options.workers}")
    return options
