"""`RunConfig`: where and how an Estimator runs, with the TF_CONFIG role from `tfdist.cluster`.

Arguments and defaults follow `tf.estimator.RunConfig`. The TF_CONFIG-derived properties
(`task_type`, `task_id`, `is_chief`, ...) come from `tfdist.cluster.resolve()`, so a bad TF_CONFIG
fails at construction with the cluster layer's one-line `ClusterConfigError`. TF1 session
arguments are rejected with what to do instead.
"""

from __future__ import annotations

import copy
from typing import Any

import tensorflow as tf

from tfdist import checks
from tfdist import cluster as cluster_lib
from tfdist import gradients as gradients_lib
from tfdist import outer_loop

_DEFAULT = object()  # "not passed", so save_checkpoints_secs can default to 600 as in tf.estimator
_DEFAULT_CHECKPOINT_SECS = 600

# TF1 arguments with no TF2 meaning: what to do instead.
_OBSOLETE = {
    "session_config": "TF2 has no sessions; set threads with tf.config.threading and GPU memory "
    "growth with tf.config.experimental.set_memory_growth at program start",
    "device_fn": "TF2 places ops itself; use a tf.distribute strategy (train_distribute)",
    "protocol": "set TF_CONFIG's \"rpc_layer\" instead",
    "experimental_distribute": "pass train_distribute / eval_distribute",
    "experimental_max_worker_delay_secs": "workers start together under "
    "MultiWorkerMirroredStrategy",
    "session_creation_timeout_secs": "TF2 has no sessions",
    "keep_checkpoint_every_n_hours": "keep more checkpoints with keep_checkpoint_max",
    "checkpoint_save_graph_def": "TF2 checkpoints hold no graph",
}

_REPLACEABLE = (
    "model_dir",
    "tf_random_seed",
    "save_summary_steps",
    "save_checkpoints_steps",
    "save_checkpoints_secs",
    "keep_checkpoint_max",
    "log_step_count_steps",
    "train_distribute",
    "eval_distribute",
    "steps_per_loop",
    "steps_per_function",
    "gradients",
    "accumulation_steps",
    "on_nonfinite",
    "max_nonfinite_restores",
)


def _check(name: str, value: Any, *, allow_none: bool = True, minimum: int = 1) -> None:
    checks.integer(name, value, minimum=minimum, allow_none=allow_none)


def _check_strategy(name: str, value: Any) -> None:
    if value is None:
        return
    checks.instance(name, value, tf.distribute.Strategy,
                    what="a tf.distribute.Strategy (e.g. tfdist.get_strategy())", allow_none=True)


class RunConfig:
    """Where an Estimator writes, how often it saves, which strategy it runs under, and its role.

    Args:
        model_dir: Directory for checkpoints, summaries and exports. Defaults to `None`
            (the Estimator's `model_dir`, or a temporary directory).
        tf_random_seed: Seed for variable initialisation. Sets the Python, NumPy, TensorFlow and
            Keras seeds while `model_fn` first builds its variables (TensorFlow's global seed
            stays set afterwards). Defaults to `None`.
        save_summary_steps: Write training summaries (chief) every this many steps; `None`
            disables them. Defaults to 100.
        save_checkpoints_steps: Save a checkpoint every this many steps. Set at most one of
            this and `save_checkpoints_secs`. Defaults to `None`.
        save_checkpoints_secs: Save a checkpoint every this many seconds (workers agree on
            when). Defaults to 600 when neither is given; pass `None` for both to save only
            when `train` ends.
        keep_checkpoint_max: Checkpoints kept in `model_dir`. Defaults to 5.
        log_step_count_steps: Log loss and steps/sec (chief) every this many steps; `None`
            disables it. Defaults to 100.
        train_distribute: The strategy to train under. Defaults to `None`:
            `tfdist.get_strategy()` (multi-worker when TF_CONFIG lists several workers,
            parameter-server when it has ps tasks).
        eval_distribute: The strategy an `evaluator` task evaluates under. Defaults to `None`
            (the default strategy). Training processes evaluate under their training strategy.
        steps_per_loop: Training steps per `tf.function` call (tfdist addition). Hooks'
            `before_run`/`after_run` wrap each call, so the default of 1 runs them every step
            as tf.estimator did; raise it for speed. Defaults to 1.
        steps_per_function: Under `ParameterServerStrategy` (TF_CONFIG with ps tasks): most
            training steps per function the chief schedules on a worker; a loop call of
            `steps_per_loop` steps is split into such functions (tfdist addition). Defaults
            to 10.
        on_nonfinite: A NaN or infinite loss: `"stop"` raises `NanLossDuringTrainingError`
            naming the step; `"restore"` goes back to the newest checkpoint and trains on (the
            batches since are skipped), at most `max_nonfinite_restores` times (tfdist
            addition, the policy of every route). Defaults to `"stop"`.
        max_nonfinite_restores: Restores allowed with `"restore"`. Defaults to 3.
        gradients: How gradients are all-reduced (`tfdist.gradients.GradientOptions`:
            compression, packing; tfdist addition). Defaults to TensorFlow's float32 reduction.
        accumulation_steps: Micro-batches per step (tfdist addition): each replica's batch is
            cut into this many, `model_fn` runs on each, and their gradients are all-reduced
            and applied once. The batch `input_fn` returns must divide by it (with
            `tfdist.data.input_fn(spec)`, set `spec.accumulation_steps` to the same value).
            Defaults to 1.

    Raises:
        ValueError: Both checkpoint cadences set, a non-positive count, or TF1-only arguments.
        TypeError: A strategy that is not a `tf.distribute.Strategy`.
        tfdist.cluster.ClusterConfigError: TF_CONFIG is invalid.

    Example:

    ```python
    config = tfdist.estimator.RunConfig(
        train_distribute=tfdist.get_strategy(), save_checkpoints_steps=500)
    ```
    """

    def __init__(
        self,
        model_dir: str | None = None,
        tf_random_seed: int | None = None,
        save_summary_steps: int | None = 100,
        save_checkpoints_steps: Any = _DEFAULT,
        save_checkpoints_secs: Any = _DEFAULT,
        keep_checkpoint_max: int = 5,
        log_step_count_steps: int | None = 100,
        train_distribute: tf.distribute.Strategy | None = None,
        eval_distribute: tf.distribute.Strategy | None = None,
        *,
        steps_per_loop: int = 1,
        steps_per_function: int = 10,
        on_nonfinite: str = "stop",
        max_nonfinite_restores: int = 3,
        gradients: gradients_lib.GradientOptions | None = None,
        accumulation_steps: int = 1,
        **obsolete: Any,
    ) -> None:
        for name, value in obsolete.items():
            if name not in _OBSOLETE:
                raise TypeError(
                    f"RunConfig got an unexpected argument `{name}`. Valid arguments: "
                    f"{', '.join(_REPLACEABLE)}."
                )
            if value is not None:
                raise ValueError(
                    f"RunConfig({name}=...) is not supported: {_OBSOLETE[name]}. Remove the "
                    "argument (see docs/estimator_migration.md)."
                )
        steps_given = save_checkpoints_steps is not _DEFAULT and save_checkpoints_steps is not None
        secs_given = save_checkpoints_secs is not _DEFAULT and save_checkpoints_secs is not None
        if steps_given and secs_given:
            raise ValueError(
                "Both checkpoint cadences are set. Received: save_checkpoints_steps="
                f"{save_checkpoints_steps!r}, save_checkpoints_secs={save_checkpoints_secs!r}. "
                "Set one of them (the other to None)."
            )
        if save_checkpoints_steps is _DEFAULT:
            save_checkpoints_steps = None
        if save_checkpoints_secs is _DEFAULT:
            save_checkpoints_secs = None if steps_given else _DEFAULT_CHECKPOINT_SECS
        _check("save_checkpoints_steps", save_checkpoints_steps)
        checks.seconds("save_checkpoints_secs", save_checkpoints_secs, allow_none=True)
        _check("save_summary_steps", save_summary_steps)
        _check("log_step_count_steps", log_step_count_steps)
        _check("keep_checkpoint_max", keep_checkpoint_max, allow_none=False)
        _check("steps_per_loop", steps_per_loop, allow_none=False)
        _check("steps_per_function", steps_per_function, allow_none=False)
        checks.one_of("on_nonfinite", on_nonfinite, outer_loop.NONFINITE_ACTIONS)
        checks.non_negative_int("max_nonfinite_restores", max_nonfinite_restores)
        checks.positive_int("accumulation_steps", accumulation_steps, owner="RunConfig")
        if gradients is not None and not isinstance(gradients, gradients_lib.GradientOptions):
            raise ValueError(
                f"Invalid value for argument `gradients` of RunConfig. Received: "
                f"gradients={gradients!r}. Pass a tfdist.gradients.GradientOptions or None.")
        if tf_random_seed is not None and not checks.is_integer(tf_random_seed):
            raise ValueError(
                "Invalid value for argument `tf_random_seed`. Received: "
                f"tf_random_seed={tf_random_seed!r}. Pass an integer or None."
            )
        if model_dir is not None and not isinstance(model_dir, str):
            model_dir = str(model_dir)  # pathlib paths
        _check_strategy("train_distribute", train_distribute)
        _check_strategy("eval_distribute", eval_distribute)
        self._model_dir = model_dir
        self._tf_random_seed = tf_random_seed
        self._save_summary_steps = save_summary_steps
        self._save_checkpoints_steps = save_checkpoints_steps
        self._save_checkpoints_secs = save_checkpoints_secs
        self._keep_checkpoint_max = keep_checkpoint_max
        self._log_step_count_steps = log_step_count_steps
        self._train_distribute = train_distribute
        self._eval_distribute = eval_distribute
        self._steps_per_loop = steps_per_loop
        self._steps_per_function = steps_per_function
        self._on_nonfinite = on_nonfinite
        self._max_nonfinite_restores = max_nonfinite_restores
        self._gradients = gradients
        self._accumulation_steps = accumulation_steps
        self._cluster = cluster_lib.resolve()

    # --- the arguments ---------------------------------------------------------------------------

    model_dir = property(lambda self: self._model_dir)
    tf_random_seed = property(lambda self: self._tf_random_seed)
    save_summary_steps = property(lambda self: self._save_summary_steps)
    save_checkpoints_steps = property(lambda self: self._save_checkpoints_steps)
    save_checkpoints_secs = property(lambda self: self._save_checkpoints_secs)
    keep_checkpoint_max = property(lambda self: self._keep_checkpoint_max)
    log_step_count_steps = property(lambda self: self._log_step_count_steps)
    train_distribute = property(lambda self: self._train_distribute)
    eval_distribute = property(lambda self: self._eval_distribute)
    steps_per_loop = property(lambda self: self._steps_per_loop)
    steps_per_function = property(lambda self: self._steps_per_function)
    on_nonfinite = property(lambda self: self._on_nonfinite)
    max_nonfinite_restores = property(lambda self: self._max_nonfinite_restores)
    gradients = property(lambda self: self._gradients)
    accumulation_steps = property(lambda self: self._accumulation_steps)
    session_config = property(lambda self: None)

    # --- the role, from TF_CONFIG ----------------------------------------------------------------

    @property
    def cluster(self) -> cluster_lib.ClusterInfo:
        """This task's place in the cluster (`tfdist.cluster.ClusterInfo`)."""
        return self._cluster

    @property
    def task_type(self) -> str:
        """"chief", "worker", "ps" or "evaluator" ("worker" for a local process)."""
        return self._cluster.task_type

    @property
    def task_id(self) -> int:
        return self._cluster.task_id

    @property
    def is_chief(self) -> bool:
        """True for the chief, for worker 0 when there is no chief, and for a local process."""
        return self._cluster.is_chief

    @property
    def num_worker_replicas(self) -> int:
        """Training tasks (chief plus workers); 1 for a local process."""
        return self._cluster.num_workers

    @property
    def num_ps_replicas(self) -> int:
        return self._cluster.num_ps

    @property
    def global_id_in_cluster(self) -> int | None:
        """Chief 0, then workers in order; `None` for evaluator and ps tasks."""
        return self._cluster.rank

    @property
    def cluster_spec(self) -> tf.train.ClusterSpec:
        """The cluster as a `tf.train.ClusterSpec` (empty for a local process)."""
        return tf.train.ClusterSpec(self._cluster.cluster_spec)

    @property
    def master(self) -> str:
        """The gRPC target of this task ("" for a local process), as in tf.estimator."""
        address = self._cluster.task_address
        return f"grpc://{address}" if address else ""

    # --- copies ----------------------------------------------------------------------------------

    def replace(self, **kwargs: Any) -> RunConfig:
        """A copy with some arguments changed.

        Replacing one checkpoint cadence clears the other unless both are replaced.

        Raises:
            ValueError: An argument that cannot be replaced, or an invalid value.
        """
        for key in kwargs:
            if key not in _REPLACEABLE:
                raise ValueError(
                    f"RunConfig.replace cannot change `{key}`. Replaceable: "
                    f"{', '.join(_REPLACEABLE)}."
                )
        values = {key: getattr(self, key) for key in _REPLACEABLE}
        if "save_checkpoints_steps" in kwargs and "save_checkpoints_secs" not in kwargs:
            values["save_checkpoints_secs"] = None
        if "save_checkpoints_secs" in kwargs and "save_checkpoints_steps" not in kwargs:
            values["save_checkpoints_steps"] = None
        values.update(kwargs)
        new = RunConfig(**values)
        new._cluster = self._cluster  # resolved once; TF_CONFIG does not change under a process
        return new

    def __copy__(self) -> RunConfig:
        new = RunConfig.__new__(RunConfig)
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> RunConfig:
        return copy.copy(self)  # strategies cannot be deep-copied and need not be

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={getattr(self, key)!r}" for key in _REPLACEABLE)
        return f"RunConfig({fields}, task={self.task_type}:{self.task_id})"
