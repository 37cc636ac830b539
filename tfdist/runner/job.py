"""One training run, end to end: cluster -> strategy -> data -> model -> route -> report.

`run(options)` is what `tfdist-train` does after parsing flags and setting up the process
(`configure_process`, called by the binary's `main` only: it changes process-wide state).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging as logging_std
import os
from typing import Any

import tensorflow as tf
from absl import logging

import input_pipelines
import models
from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import data as data_lib
from tfdist import gradients as gradients_lib
from tfdist import parameter_server
from tfdist import precision
from tfdist import recompute
from tfdist import strategy as strategy_lib
from tfdist.outer_loop import NONFINITE_ACTIONS
from tfdist.runner import report as report_lib
from tfdist.runner import route_ctl
from tfdist.runner import route_estimator
from tfdist.runner import route_fit
from tfdist.runner.options import DEFAULT_TRAIN_STEPS
from tfdist.runner.options import RunError
from tfdist.runner.options import TrainOptions
from tfdist.runner.options import check_cluster
from tfdist.runner.settings import RouteSettings

ROUTE_FUNCTIONS = {"ctl": route_ctl.run, "fit": route_fit.run, "estimator": route_estimator.run}


def virtual_cpus(options: TrainOptions, cluster: cluster_lib.ClusterInfo) -> int | None:
    """Logical CPUs to split into: only for a single process mirroring on a machine without GPUs."""
    if options.virtual_cpus <= 1 or options.strategy not in ("auto", "mirrored"):
        return None
    if not cluster.is_local or tf.config.list_physical_devices("GPU"):
        return None
    return options.virtual_cpus


def configure_process(options: TrainOptions) -> None:
    """Process-wide set-up, before TensorFlow initialises: logical CPUs, seeds, determinism, precision.

    Only binaries call this (`tfdist-train`'s `main`), never library code.
    """
    import keras

    _quiet_foreign_info_logs()
    cpus = virtual_cpus(options, cluster_lib.resolve())
    if cpus:
        strategy_lib.configure_virtual_cpus(cpus)
    keras.utils.set_random_seed(options.seed)
    if options.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = precision_policy(options)
    if policy:
        keras.mixed_precision.set_global_policy(policy)


class _OwnInfoOnly(logging_std.Filter):
    """Passes warnings and errors, and INFO lines from tfdist, models and input_pipelines."""

    _OWN = (f"{os.sep}tfdist{os.sep}", f"{os.sep}models{os.sep}", f"{os.sep}input_pipelines{os.sep}")

    def filter(self, record: logging_std.LogRecord) -> bool:
        return record.levelno >= logging_std.WARNING or any(p in record.pathname for p in self._OWN)


def _quiet_foreign_info_logs() -> None:
    # TensorFlow logs INFO lines through absl (savers, collectives) that would bury the progress;
    # at the default verbosity only tfdist's own INFO lines pass. --verbosity=1 shows everything.
    if logging.get_verbosity() == logging.INFO:
        logging.get_absl_handler().addFilter(_OwnInfoOnly())


def mixed_precision_policy() -> str:
    """`mixed_float16` on GPUs (tensor cores); `mixed_bfloat16` on CPUs (no loss scaling needed)."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def precision_policy(options: TrainOptions) -> str | None:
    """The dtype policy `options` ask for, or None to leave the one in force."""
    if options.precision:
        return options.precision
    return mixed_precision_policy() if options.mixed_precision else None


def check(options: TrainOptions, cluster: cluster_lib.ClusterInfo) -> None:
    """Option checks that need the cluster; raises `RunError` before anything is built."""
    if options.route not in ROUTE_FUNCTIONS:
        raise RunError(f"unknown route {options.route!r}; valid: {', '.join(ROUTE_FUNCTIONS)}")
    check_cluster(options.route, options.strategy, cluster)
    checks.one_of("on_nonfinite", options.on_nonfinite, NONFINITE_ACTIONS, error=RunError)
    checks.non_negative_int("max_nonfinite_restores", options.max_nonfinite_restores, error=RunError)
    if options.precision:
        precision.check_policy(options.precision, error=RunError)
        if options.mixed_precision:
            raise RunError(f"Invalid value for argument `mixed_precision`. Received: "
                           f"mixed_precision=True with precision={options.precision!r}. Pass one "
                           "of them: precision names the policy itself.")
    recompute.check_mode(options.remat, error=RunError)


def _gradient_options(options: TrainOptions,
                      strategy: tf.distribute.Strategy) -> gradients_lib.GradientOptions | None:
    """The wire options of the flags (`None`: TensorFlow's own reduction)."""
    try:
        wire = gradients_lib.GradientOptions(
            compression=options.gradient_compression, loss_scale=options.gradient_loss_scale,
            bytes_per_pack=options.bytes_per_pack)
    except gradients_lib.GradientOptionsError as e:
        raise RunError(f"--gradient_compression/--gradient_loss_scale/--bytes_per_pack: {e}") from None
    if parameter_server.is_parameter_server(strategy) and (
            not wire.is_default or options.accumulation_steps > 1):
        raise RunError("--gradient_compression, --bytes_per_pack and --accumulation_steps act on "
                       "the all-reduce, which --strategy=parameter_server does not use: drop them")
    return None if wire.is_default else wire


def _train_steps(options: TrainOptions, train_examples: int | None) -> int:
    if options.train_steps is not None:
        return options.train_steps
    if options.epochs is None:
        return DEFAULT_TRAIN_STEPS
    if not train_examples:
        raise RunError(f"--epochs needs a dataset of known size; {options.dataset!r} does not say "
                       "how many examples it has. Pass --train_steps instead.")
    return options.epochs * max(1, train_examples // options.global_batch_size)


def _model_config(family: models.ModelFamily, data: input_pipelines.DatasetSources,
                  model_options: str) -> Any:
    try:
        overrides: dict[str, Any] = models.parse_options(model_options)
    except ValueError as e:
        raise RunError(f"--model_options={model_options}: {e}") from None
    for fixed in ("input_shape", "num_classes", "vocab_size"):
        if fixed in overrides:
            raise RunError(f"--model_options: {fixed} comes from the dataset; do not set it.")
    overrides.update(input_shape=data.input_shape, num_classes=data.num_classes)
    if data.vocab_size is not None:
        fields = {f.name for f in dataclasses.fields(family.config_class)}
        if "vocab_size" not in fields:
            raise RunError(f"--model={family.name} takes float features, but --dataset={data.name} "
                           "gives token ids. Use --model=transformer.")
        overrides["vocab_size"] = data.vocab_size
    try:
        return family.make_config(**overrides)
    except ValueError as e:
        raise RunError(f"--model={family.name}: {e} (--dataset={data.name} gives input_shape="
                       f"{data.input_shape}, {data.num_classes} classes)") from None


def run(options: TrainOptions, *, strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Trains, evaluates and exports as `options` say; the chief writes `model_dir/metrics.json`.

    Args:
        options: The run.
        strategy: A strategy to use instead of the one `options.strategy` names (e.g. one the
            program already uses: TensorFlow cannot run two `MirroredStrategy`s over the same
            devices in one process). Defaults to `None`.

    Returns:
        The report (what `metrics.json` holds), on every task.

    Raises:
        RunError: Options that do not fit the cluster, data, model or replicas, before
            training starts.
    """
    cluster = cluster_lib.resolve()
    check(options, cluster)
    # The strategy comes first: multi-worker collectives must be configured before any tensor
    # (the data and the model make some) initialises TensorFlow's context.
    if strategy is None:
        strategy = strategy_lib.get_strategy(
            options.strategy, virtual_cpus=virtual_cpus(options, cluster), cluster=cluster)
    try:
        data = input_pipelines.load(options.dataset, seed=options.seed)
    except (ValueError, FileNotFoundError) as e:
        raise RunError(f"--dataset={options.dataset}: {e}") from None
    family = models.get(options.model)
    config = _model_config(family, data, options.model_options)
    train_steps = _train_steps(options, data.train_examples)
    train_spec = data.train_spec(options.global_batch_size, seed=options.seed)
    if parameter_server.is_parameter_server(strategy) and isinstance(train_spec.source, tf.data.Dataset):
        # Each worker builds its own pipeline: a dataset made here could not be sent there.
        @tf.autograph.experimental.do_not_convert  # plain Python loading, traced once
        def worker_source(_: Any) -> tf.data.Dataset:
            return input_pipelines.load(options.dataset, seed=options.seed).train

        train_spec = dataclasses.replace(train_spec, source=worker_source)
    eval_spec = data.eval_spec(options.global_batch_size, seed=options.seed)
    try:
        train_spec.per_replica_batch_size(strategy.num_replicas_in_sync)  # fail before building
    except data_lib.DataConfigError as e:
        raise RunError(f"--global_batch_size: {e}") from None
    gradients = _gradient_options(options, strategy)
    if options.accumulation_steps > 1:
        train_spec = dataclasses.replace(train_spec, accumulation_steps=options.accumulation_steps)
        try:
            train_spec.micro_batch_size(strategy.num_replicas_in_sync)
        except data_lib.DataConfigError as e:
            raise RunError(f"--accumulation_steps: {e}") from None

    model_info = report_lib.model_info(family, config)
    say = report_lib.Printer(cluster)
    say(f"tfdist-train: route={options.route}, {strategy_lib.describe(strategy)}")
    say(f"tfdist-train: model={options.model} ({model_info['params']:,} parameters, "
        f"{model_info['flops_per_example']:,} FLOPs/example), dataset={data.name}, "
        f"global batch {options.global_batch_size}, {train_steps} steps")
    policy = precision_policy(options)
    if policy or options.remat != "none":
        say(f"tfdist-train: precision={policy or precision.current_policy()}, remat={options.remat}")
    settings = RouteSettings(
        model_dir=options.model_dir, train_steps=train_steps,
        learning_rate=options.learning_rate, steps_per_loop=options.steps_per_loop,
        eval_every=options.eval_every or train_steps, seed=options.seed, cluster=cluster,
        progress=options.progress, on_nonfinite=options.on_nonfinite,
        max_nonfinite_restores=options.max_nonfinite_restores, gradients=gradients,
    )
    build = recompute.builder(lambda: family.build(config), options.remat)
    # The policy in force while the route builds its model (the Estimator captures it when made).
    with precision.policy_scope(policy) if policy else contextlib.nullcontext():
        result = ROUTE_FUNCTIONS[options.route](strategy, build, train_spec, eval_spec, settings)
        report = report_lib.build(options, strategy, cluster, data, model_info, result)
    if cluster.is_chief and not cluster.is_evaluator:
        path = report_lib.write(report, options.model_dir)
        logging.info("tfdist-train: wrote %s", path)
    say.final(report, evaluator=cluster.is_evaluator)
    return report
