"""tfdist-train's command-line flags, defined in one place and only when the binary runs.

`define_flags()` is called by `tfdist.train.run` (the console script), never at import, so
importing tfdist in a notebook or a test defines no flags. Every check here runs while flags are
parsed -- before TensorFlow is imported or anything is built -- and fails with one line naming
the flag. Defaults come from `tfdist.runner.options.TrainOptions`, so the binary and in-process
runs agree.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from absl import flags

from input_pipelines import registry as dataset_registry
from models import registry as model_registry
from tfdist import cluster as cluster_lib
from tfdist import precision as precision_lib
from tfdist import recompute as recompute_lib
from tfdist.runner import options as options_lib

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(options_lib.TrainOptions)
             if f.default is not dataclasses.MISSING}


def _check_dataset(value: str) -> bool:
    try:
        dataset_registry.parse(value)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def _check_model_options(value: str) -> bool:
    try:
        model_registry.parse_options(value)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


def _check_learning_rate(value: float) -> bool:
    if not (math.isfinite(value) and value > 0):
        raise flags.ValidationError("must be a positive number, e.g. 0.001")
    return True


def _check_steps_or_epochs(values: dict) -> bool:
    if values["train_steps"] is not None and values["epochs"] is not None:
        raise flags.ValidationError("set --train_steps or --epochs, not both")
    return True


def _check_loss_scale(values: dict) -> bool:
    scale = values["gradient_loss_scale"]
    if scale is None:
        return True
    if values["gradient_compression"] != "float16":
        raise flags.ValidationError(
            f"--gradient_loss_scale={scale:g} needs --gradient_compression=float16 (received "
            f"--gradient_compression={values['gradient_compression']})")
    if not (math.isfinite(scale) and scale > 0):
        raise flags.ValidationError(f"--gradient_loss_scale must be a positive number, e.g. "
                                    f"1024 (received {scale:g})")
    return True


def _check_cluster(values: dict) -> bool:
    try:
        cluster = cluster_lib.resolve()
        options_lib.check_cluster(values["route"], values["strategy"], cluster)
    except ValueError as e:  # ClusterConfigError and RunError
        raise flags.ValidationError(str(e)) from None
    return True


def _check_precision(values: dict) -> bool:
    if values["precision"] and values["mixed_precision"]:
        raise flags.ValidationError(
            f"set --precision or --mixed_precision, not both (received --precision="
            f"{values['precision']} --mixed_precision); --precision names the policy itself")
    return True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines tfdist-train's flags and their validators on `flag_values`.

    Args:
        flag_values: Where to define them. Defaults to `absl.flags.FLAGS`.
    """
    d, fv = _DEFAULTS, flag_values
    flags.DEFINE_enum("route", d["route"], options_lib.ROUTES,
                      "Training route: ctl (tfdist.loop custom loop), fit (Keras Model.fit) or "
                      "estimator (tfdist.estimator).", flag_values=fv)
    flags.DEFINE_enum("strategy", d["strategy"], options_lib.STRATEGIES,
                      "Distribution strategy; auto picks parameter_server when TF_CONFIG has ps "
                      "tasks, multi_worker_mirrored under a multi-worker TF_CONFIG, else mirrored over all GPUs or --virtual_cpus logical CPUs.",
                      flag_values=fv)
    flags.DEFINE_integer("virtual_cpus", d["virtual_cpus"],
                         "On a machine without GPUs, split the CPU into this many logical devices "
                         "for auto/mirrored in a single process (1: no split).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("model", d["model"], model_registry.names(), "Model from the models registry.",
                      flag_values=fv)
    flags.DEFINE_string("model_options", d["model_options"],
                        "Overrides of the model's config, e.g. depth=56,width=32 (resnet) or "
                        "hidden=512x256 (mlp).", flag_values=fv)
    flags.DEFINE_string("dataset", d["dataset"],
                        "Dataset: digits, synthetic[:shape=32x32x3,classes=10,size=4096], "
                        "tfds:NAME[,train_split=...,eval_split=...,data_dir=...], tfrecord:DIR.",
                        flag_values=fv)
    flags.DEFINE_string("model_dir", None,
                        "Checkpoints, exports and metrics.json (shared by all workers); "
                        "an existing run there is resumed (ctl, estimator).", flag_values=fv)
    flags.DEFINE_integer("train_steps", None,
                         f"Global step to train to (default {options_lib.DEFAULT_TRAIN_STEPS}).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("epochs", None, "Train for this many passes over the training data instead "
                         "of --train_steps.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("global_batch_size", d["global_batch_size"],
                         "Examples per step across all replicas and workers.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_float("learning_rate", d["learning_rate"], "Adam learning rate.", flag_values=fv)
    flags.DEFINE_integer("steps_per_loop", d["steps_per_loop"],
                         "Training steps per tf.function call (fit: steps_per_execution).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("eval_every", d["eval_every"],
                         "Evaluate (and checkpoint) every this many steps; 0: only at the end.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("seed", d["seed"], "Seed for initialisation, shuffling and generated data.",
                         flag_values=fv)
    flags.DEFINE_boolean("deterministic", d["deterministic"],
                         "Deterministic ops: the same flags and seed give the same metrics.",
                         flag_values=fv)
    flags.DEFINE_boolean("mixed_precision", d["mixed_precision"],
                         "Compute in 16-bit floats: mixed_float16 on GPUs, mixed_bfloat16 on CPUs.",
                         flag_values=fv)
    flags.DEFINE_enum("precision", d["precision"] or None, list(precision_lib.POLICIES),
                      "Keras dtype policy for every route: float32, mixed_bfloat16 (fast where the "
                      "CPU has AMX/AVX512_BF16 or the GPU compute capability >= 8.0; tfdist says so "
                      "in a log line) or mixed_float16 (loss-scaled). Default: float32, or what "
                      "--mixed_precision picks.", flag_values=fv)
    flags.DEFINE_enum("remat", d["remat"], list(recompute_lib.MODES),
                      "Recompute activations in the backward pass instead of storing them "
                      "(less memory, more compute): none, full (each of the model's own layers "
                      "once, whole: the Transformer's encoder blocks) or activations "
                      "(docs/performance.md#recomputation).", flag_values=fv)
    flags.DEFINE_enum("on_nonfinite", d["on_nonfinite"], ["stop", "restore"],
                      "A NaN/inf training loss: stop with an error naming the step, or restore "
                      "the newest checkpoint (fit: backup) and train on.", flag_values=fv)
    flags.DEFINE_integer("max_nonfinite_restores", d["max_nonfinite_restores"],
                         "Restores allowed with --on_nonfinite=restore before giving up.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_enum("gradient_compression", d["gradient_compression"],
                      ["none", "bfloat16", "float16"],
                      "All-reduce gradients in this dtype (cast before, back after): half the "
                      "bytes on the wire.", flag_values=fv)
    flags.DEFINE_float("gradient_loss_scale", d["gradient_loss_scale"],
                       "With --gradient_compression=float16: multiply gradients by this before "
                       "the cast (and divide after) so small ones survive float16.",
                       flag_values=fv)
    flags.DEFINE_integer("bytes_per_pack", d["bytes_per_pack"],
                         "Split the gradient all-reduce into packs of about this many bytes "
                         "(0: one pack).", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("accumulation_steps", d["accumulation_steps"],
                         "Micro-batches per optimizer step and per all-reduce (gradient "
                         "accumulation); --global_batch_size stays the examples per step.",
                         lower_bound=1, flag_values=fv)
    flags.mark_flag_as_required("model_dir", flag_values=fv)
    flags.register_validator("dataset", _check_dataset, flag_values=fv)
    flags.register_validator("model_options", _check_model_options, flag_values=fv)
    flags.register_validator("learning_rate", _check_learning_rate, flag_values=fv)
    flags.register_multi_flags_validator(["train_steps", "epochs"], _check_steps_or_epochs,
                                         flag_values=fv)
    flags.register_multi_flags_validator(["gradient_compression", "gradient_loss_scale"],
                                         _check_loss_scale, flag_values=fv)
    flags.register_multi_flags_validator(["route", "strategy"], _check_cluster, flag_values=fv)
    flags.register_multi_flags_validator(["precision", "mixed_precision"], _check_precision,
                                         flag_values=fv)


def to_options(flag_values: flags.FlagValues = flags.FLAGS) -> options_lib.TrainOptions:
    """The parsed flags as `TrainOptions`."""
    names = [f.name for f in dataclasses.fields(options_lib.TrainOptions) if f.name in flag_values]
    # Flag values are typed Optional; required flags and validators make them complete here.
    values: dict[str, Any] = {name: flag_values[name].value for name in names}
    values["precision"] = values.get("precision") or ""
    return options_lib.TrainOptions(**values)
