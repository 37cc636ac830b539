"""Precision policies: float32 or mixed bfloat16/float16, and where bfloat16 is fast.

The policy is Keras's (`keras.mixed_precision`): layers built while it is in force compute in
16 bits and keep float32 weights; the models' logits stay float32 (`models.common.logits`), so
losses are computed in float32. Every route honours the policy in force when it builds its model
(the Estimator captures it when it is made). bfloat16 has float32's exponent range, so it needs
no loss scaling; `mixed_float16` does (fit adds it; `tfdist.runner.settings.optimizer` wraps the
others' optimizer).

bfloat16 only pays where the hardware multiplies it natively: Intel AMX or AVX512_BF16 on CPUs,
compute capability 8.0 (Ampere) or newer on GPUs. Elsewhere it is emulated and slower than
float32, so tfdist never switches on its own: `recommend` logs once per process that this
machine would profit, and the user decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tfdist import checks

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# /proc/cpuinfo flags of CPUs that multiply bfloat16 natively (oneDNN uses them).
_FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_MIN_BF16_GPU_CAPABILITY = (8, 0)

_recommended = False


def check_policy(policy: str, *, name: str = "precision",
                 error: type[Exception] = ValueError) -> str:
    """Returns `policy` if it is one of `POLICIES`; raises `error` naming `name` otherwise."""
    return checks.one_of(name, policy, POLICIES, error=error)


def cpu_bfloat16_flags(cpuinfo: str | None = None) -> tuple[str, ...]:
    """The native-bfloat16 flags this CPU lists (`amx_bf16`, `avx512_bf16`); empty if none.

    Args:
        cpuinfo: The text of `/proc/cpuinfo`. Defaults to reading it (empty where it is absent).
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return ()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in _FAST_BF16_CPU_FLAGS if flag in present)
    return ()


def gpu_bfloat16_devices() -> tuple[str, ...]:
    """GPUs with native bfloat16 (compute capability >= 8.0), as `"name (cc 8.6)"` strings."""
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = details.get("compute_capability")
        if capability and tuple(capability) >= _MIN_BF16_GPU_CAPABILITY:
            found.append(f"{details.get('device_name', gpu.name)} (cc {capability[0]}.{capability[1]})")
    return tuple(found)


def fast_bfloat16() -> str | None:
    """Why this machine multiplies bfloat16 natively (e.g. `"CPU flags amx_bf16"`), or None."""
    gpus = gpu_bfloat16_devices()
    if gpus:
        return "GPU " + ", ".join(gpus)
    flags = cpu_bfloat16_flags()
    return f"CPU flags {', '.join(flags)}" if flags else None


def current_policy() -> str:
    """The name of the Keras dtype policy in force (`"float32"` unless someone set one)."""
    import keras

    return str(keras.mixed_precision.dtype_policy().name)


def recommend(log: Callable[[str], None] | None = None) -> str | None:
    """Once per process: if bfloat16 is fast here and the policy is float32, say so in a log line.

    Never changes the policy. Called by `tfdist.get_strategy`, so every route says it once.

    Args:
        log: Where the line goes. Defaults to absl's `logging.info`.

    Returns:
        The line logged, or None (already said, nothing to say, or a mixed policy in force).
    """
    global _recommended
    if _recommended:
        return None
    _recommended = True
    if current_policy() != "float32":
        return None
    reason = fast_bfloat16()
    if reason is None:
        return None
    line = (f"tfdist: this machine multiplies bfloat16 natively ({reason}); training stays in "
            "float32 unless asked: tfdist-train --precision=mixed_bfloat16, or "
            "keras.mixed_precision.set_global_policy('mixed_bfloat16') before building the model, "
            "typically ~1.5-2x the matmul throughput (docs/performance.md#bfloat16)")
    if log is None:
        from absl import logging

        logging.info("%s", line)
    else:
        log(line)
    return line


@contextlib.contextmanager
def policy_scope(policy: str) -> Iterator[str]:
    """Sets Keras's global dtype policy to `policy` for the block, then restores the caller's.

    Keras keeps the policy per thread: build models inside the block, on this thread.

    Raises:
        ValueError: `policy` is not one of `POLICIES`.
    """
    import keras

    check_policy(policy)
    caller = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_global_policy(caller)
