"""`TrainOptions`: everything one `tfdist-train` run is asked to do (the flags, as a value)."""

from __future__ import annotations

import dataclasses

from tfdist import cluster as cluster_lib

ROUTES = ("ctl", "fit", "estimator")
# Kept free of TensorFlow imports (flags use it); tests check it equals tfdist.strategy's list.
STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker_mirrored", "parameter_server")
DEFAULT_TRAIN_STEPS = 600


class RunError(ValueError):
    """Options that cannot work together; raised before anything is built."""


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """One training run. `tfdist-train` builds it from its flags; tests and notebooks directly.

    Args:
        model_dir: Checkpoints, exports and `metrics.json`.
        route: `"ctl"` (tfdist.loop), `"fit"` (Keras `fit`) or `"estimator"`. Defaults to `"ctl"`.
        strategy: A `tfdist.get_strategy` name. Defaults to `"auto"`.
        virtual_cpus: Logical CPUs to mirror over on a machine without GPUs (single process,
            `auto` or `mirrored`); 1 for no split. Defaults to 2.
        model: A `models` registry name. Defaults to `"cnn"`.
        model_options: Overrides of the model's config, e.g. `"depth=56,width=32"` (see
            `models.registry.parse_options`). Defaults to none.
        dataset: An `input_pipelines` dataset (`digits`, `synthetic:...`, `tfds:NAME`,
            `tfrecord:DIR`). Defaults to `"digits"`.
        train_steps: Global step to train to. Defaults to `epochs` worth of steps, or 600.
        epochs: Train for this many passes over the training data instead. Defaults to `None`.
        global_batch_size: Examples per step across all replicas. Defaults to 64.
        learning_rate: Adam's learning rate. Defaults to 0.001.
        steps_per_loop: Steps per `tf.function` call. Defaults to 50.
        eval_every: Evaluate every this many steps; 0 evaluates only at the end. Defaults to 0.
        seed: Seed for initialisation, shuffling and generated data. Defaults to 0.
        deterministic: Make ops deterministic (same flags and seed, same metrics).
            Defaults to `False`.
        mixed_precision: Compute in 16-bit floats (`mixed_float16` on GPUs, `mixed_bfloat16`
            on CPUs). Defaults to `False`.
        precision: A `tfdist.precision.POLICIES` name, e.g. `"mixed_bfloat16"`; `""` leaves the
            policy in force (float32 unless `mixed_precision`). Defaults to `""`.
        remat: Recompute activations in the backward pass instead of storing them: a
            `tfdist.recompute.MODES` name (`"none"`, `"full"`: each of the model's own layers
            recomputed once, whole; `"activations"`). Defaults to `"none"`.
        progress: Print progress (chief only). Defaults to `True`.
        on_nonfinite: A NaN/inf training loss: `"stop"` with an error naming the step, or
            `"restore"` the newest checkpoint (fit: backup) and train on. Defaults to `"stop"`.
        max_nonfinite_restores: Restores allowed with `"restore"`. Defaults to 3.
        gradient_compression: The dtype gradients are all-reduced in: `"none"`, `"bfloat16"`
            or `"float16"` (`tfdist.gradients.GradientOptions`). Defaults to `"none"`.
        gradient_loss_scale: With `"float16"`: multiply gradients by this before the cast.
            Defaults to `None` (no scaling).
        bytes_per_pack: Split the all-reduce into packs of about this many bytes; 0 is one pack.
            Defaults to 0.
        accumulation_steps: Micro-batches per optimizer step and per all-reduce; the global
            batch stays `global_batch_size`. Defaults to 1.
    """

    model_dir: str
    route: str = "ctl"
    strategy: str = "auto"
    virtual_cpus: int = 2
    model: str = "cnn"
    model_options: str = ""
    dataset: str = "digits"
    train_steps: int | None = None
    epochs: int | None = None
    global_batch_size: int = 64
    learning_rate: float = 1e-3
    steps_per_loop: int = 50
    eval_every: int = 0
    seed: int = 0
    deterministic: bool = False
    mixed_precision: bool = False
    precision: str = ""
    remat: str = "none"
    progress: bool = True
    on_nonfinite: str = "stop"
    max_nonfinite_restores: int = 3
    gradient_compression: str = "none"
    gradient_loss_scale: float | None = None
    bytes_per_pack: int = 0
    accumulation_steps: int = 1


def check_cluster(route: str, strategy: str, cluster: cluster_lib.ClusterInfo) -> None:
    """Checks the route and strategy against this task's role (no TensorFlow needed).

    Raises:
        RunError: One line naming the flag and the fix.
    """
    if route == "fit" and cluster.is_evaluator:
        raise RunError("--route=fit has no evaluator task (fit evaluates on the training "
                       "workers): drop the evaluator, or use --route=ctl or --route=estimator")
    if cluster.num_ps or strategy == "parameter_server":
        _check_parameter_server(route, strategy, cluster)
        return
    if cluster.is_multi_worker and not cluster.is_evaluator and strategy not in (
            "auto", "multi_worker_mirrored"):
        raise RunError(f"--strategy={strategy} cannot train the {cluster.num_workers} workers "
                       "TF_CONFIG lists: use --strategy=auto or --strategy=multi_worker_mirrored")


def _check_parameter_server(route: str, strategy: str, cluster: cluster_lib.ClusterInfo) -> None:
    """Parameter-server jobs: route 1 only, with --strategy=auto or parameter_server."""
    if route != "ctl":
        raise RunError(f"--route={route} has no parameter-server training (Keras 3 `fit` dropped "
                       "it: keras-team/keras#18624): use --route=ctl with --strategy=parameter_server")
    if strategy not in ("auto", "parameter_server"):
        raise RunError(f"--strategy={strategy} cannot train the ps tasks TF_CONFIG lists: use "
                       "--strategy=auto or --strategy=parameter_server")
    if not cluster.num_ps:
        raise RunError("--strategy=parameter_server needs TF_CONFIG with chief, worker and ps "
                       "tasks: start the job with e.g. `tfdist-launch --chief --workers 2 --ps 1`")
