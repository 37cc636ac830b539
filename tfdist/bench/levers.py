"""`tfdist-bench --levers`: the device levers side by side, bfloat16 and recomputation.

- **Precision.** The `reference` route (the hand-written `strategy.run` loop, default
  strategy) on the same model and data, once per policy (`float32`, `mixed_bfloat16`), timed
  interleaved in this process; plus the 2048^2 matmul chain's peak in float32 and in bfloat16
  (what the hardware can do before any model overhead).
- **Recomputation.** Peak memory cannot be reset within a process, and the CPU allocator keeps
  no statistics (`tf.config.experimental.get_memory_info("CPU:0")` raises), so each mode trains
  in a fresh process: the process's peak resident set (`ru_maxrss`) after the timed steps, the
  resident set once the model and optimizer exist (before tracing), and the step time (wall
  clock, and the process's CPU time, which other processes' load disturbs less). The model is
  chosen to show the lever: a Transformer of 8 encoder blocks whose attention scores dominate
  memory, so that the activations outweigh TensorFlow and the built model (~700-850 MB that no
  mode shrinks) and `full`, which keeps only each block's inputs, lowers the whole process's
  peak. Modes run interleaved, `--reps` processes each.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tfdist.bench import multiworker
from tfdist.bench import timing

PRECISIONS = ("float32", "mixed_bfloat16")
BFLOAT16_SPEEDUP = 1.6
REMAT_PEAK_FRACTION = 0.7  # at least 30% lower
REMAT_STEP_RATIO = 1.35


@dataclasses.dataclass(frozen=True)
class RematWorkload:
    """The recomputation benchmark's model: a Transformer over long sequences.

    Attributes:
        seq_len: Positions per example (attention memory grows with its square).
        features: Input features per position.
        embed_dim: Model width.
        num_heads: Attention heads.
        ff_dim: Feed-forward width.
        num_layers: Encoder blocks (recomputation keeps one block's activations at a time
            instead of all of them: more blocks, more saving).
        batch: Examples per step.
        steps: Timed steps (one `tf.function` call each), after one warm-up step.
    """

    seq_len: int = 256
    features: int = 16
    embed_dim: int = 64
    num_heads: int = 4
    ff_dim: int = 256
    num_layers: int = 8
    batch: int = 32
    steps: int = 4

    @property
    def description(self) -> str:
        return (f"Transformer, {self.num_layers} blocks, width {self.embed_dim}, "
                f"{self.num_heads} heads, ff {self.ff_dim}, sequences of {self.seq_len}, "
                f"batch {self.batch}")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def remat_worker_main(spec_text: str) -> int:
    """Runs in the child process: trains the workload once under one mode, prints one JSON line."""
    spec = json.loads(spec_text)
    import keras
    import numpy as np
    import tensorflow as tf

    import models
    from tfdist import recompute

    work = RematWorkload(**spec["workload"])
    keras.utils.set_random_seed(spec["seed"])
    build = recompute.builder(lambda: models.build(
        "transformer", input_shape=(work.seq_len, work.features), num_classes=10,
        embed_dim=work.embed_dim, num_heads=work.num_heads, ff_dim=work.ff_dim,
        num_layers=work.num_layers), spec["mode"])
    model = build()
    optimizer = keras.optimizers.SGD(0.01)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(spec["seed"])
    x = tf.constant(rng.normal(size=(work.batch, work.seq_len, work.features)), tf.float32)
    y = tf.constant(rng.integers(0, 10, size=work.batch), tf.int32)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    base = _rss_mb()
    first_loss = float(step())  # traces
    seconds, cpu_seconds = [], []
    for _ in range(work.steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        float(step())
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    print(json.dumps({"mode": spec["mode"], "base_rss_mb": base, "peak_rss_mb": _rss_mb(),
                      "step_seconds": seconds, "step_cpu_seconds": cpu_seconds,
                      "first_loss": first_loss}), flush=True)
    return 0


def _remat_once(mode: str, workload: RematWorkload, seed: int, timeout: float) -> dict[str, Any]:
    spec = json.dumps({"mode": mode, "workload": dataclasses.asdict(workload), "seed": seed})
    argv = [sys.executable, "-m", "tfdist.bench", "--_remat_worker", spec]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise multiworker.BenchError(
            f"the --remat={mode} process did not finish within --timeout={timeout:g} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise multiworker.BenchError(
            f"the --remat={mode} process failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_remat(modes: tuple[str, ...], workload: RematWorkload, *, reps: int, seed: int,
                  timeout: float, say: Callable[[str], None]) -> dict[str, Any]:
    """Peak memory and step time of each mode, one fresh process per (mode, repetition)."""
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for rep in range(reps):
        for mode in modes:
            say(f"tfdist-bench: recomputation {mode}, repetition {rep + 1} of {reps} ...")
            samples[mode].append(_remat_once(mode, workload, seed, timeout))
    rows: dict[str, Any] = {}
    for mode, runs in samples.items():
        step_medians = [timing.summary(r["step_seconds"])["median"] for r in runs]
        rows[mode] = {
            "peak_rss_mb": timing.summary([r["peak_rss_mb"] for r in runs]),
            "base_rss_mb": timing.summary([r["base_rss_mb"] for r in runs]),
            "training_mb": timing.summary([r["peak_rss_mb"] - r["base_rss_mb"] for r in runs]),
            "step_seconds": timing.summary(step_medians),
            "step_cpu_seconds": timing.summary(
                [timing.summary(r["step_cpu_seconds"])["median"] for r in runs]),
            "first_loss": runs[0]["first_loss"],
        }
    return {"workload": dataclasses.asdict(workload), "description": workload.description,
            "modes": rows}


def measure_precision(model_name: str, *, batch: int, steps: int, steps_per_call: int, reps: int,
                      peak_size: int, seed: int, work_dir: str,
                      say: Callable[[str], None]) -> dict[str, Any]:
    """The reference route once per policy in `PRECISIONS`, interleaved; and both matmul peaks."""
    import functools

    import keras
    import tensorflow as tf

    from tfdist import precision
    from tfdist.bench import peak as peak_lib
    from tfdist.bench import routes as routes_lib
    from tfdist.bench import workloads

    say("tfdist-bench: matmul peaks, float32 and bfloat16 ...")
    peaks = {"float32": peak_lib.measure(size=peak_size),
             "mixed_bfloat16": peak_lib.measure(size=peak_size, dtype="bfloat16")}
    keras.utils.set_random_seed(seed)
    workload = workloads.load(model_name, seed=seed)
    strategy = tf.distribute.get_strategy()
    built = {}
    for policy in PRECISIONS:
        with precision.policy_scope(policy):  # the model's layers take the policy when built
            built[policy] = routes_lib.build("reference", strategy, workload, batch,
                                             steps_per_call, os.path.join(work_dir, policy))
    for route in built.values():
        route.run(steps_per_call)  # warm-up
    say(f"tfdist-bench: reference route, {', '.join(PRECISIONS)}: {reps} reps ...")
    seconds = timing.interleaved({p: functools.partial(r.run, steps) for p, r in built.items()},
                                 reps)
    rows = {}
    for policy in PRECISIONS:
        rates = [steps * batch / s for s in seconds[policy]]
        rows[policy] = {"examples_per_sec": timing.summary(rates), "seconds": seconds[policy],
                        "peak": peaks[policy]["peak"],
                        "ratio_to_float32": timing.paired_ratio(seconds["float32"],
                                                                seconds[policy])}
    return {"model": workload.name, "description": workload.description, "batch": batch,
            "steps": steps, "policies": rows, "fast_bfloat16": precision.fast_bfloat16()}


def cpu_ratio(row: dict[str, Any], base: dict[str, Any]) -> str:
    """", CPU time 1.23x" for a recomputation mode against `none` (reports before it: "")."""
    if "step_cpu_seconds" not in row or "step_cpu_seconds" not in base:
        return ""
    return (f", CPU time {row['step_cpu_seconds']['median'] / base['step_cpu_seconds']['median']:.2f}x")


def targets(section: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue-19 device targets this section has the measurements for."""
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float, threshold: float, met: bool, detail: str) -> None:
        checks.append({"name": name, "value": value, "threshold": threshold, "met": met,
                       "detail": detail})

    prec = section.get("precision")
    if prec:
        ratio = prec["policies"]["mixed_bfloat16"]["ratio_to_float32"]["median"]
        add(f"mixed_bfloat16 {prec['model']} >= {BFLOAT16_SPEEDUP}x float32 examples/s", ratio,
            BFLOAT16_SPEEDUP, ratio >= BFLOAT16_SPEEDUP,
            "reference route, default strategy; median of per-repetition ratios")
    remat = section.get("remat")
    if remat and "none" in remat["modes"]:
        base = remat["modes"]["none"]
        for mode, row in remat["modes"].items():
            if mode == "none":
                continue
            peak = row["peak_rss_mb"]["median"] / base["peak_rss_mb"]["median"]
            step = row["step_seconds"]["median"] / base["step_seconds"]["median"]
            add(f"remat={mode}: peak memory <= {REMAT_PEAK_FRACTION}x at <= {REMAT_STEP_RATIO}x "
                "step time", peak, REMAT_PEAK_FRACTION,
                peak <= REMAT_PEAK_FRACTION and step <= REMAT_STEP_RATIO,
                f"process peak RSS ratio; step time {step:.2f}x{cpu_ratio(row, base)}; memory "
                f"above the built model "
                f"{row['training_mb']['median'] / base['training_mb']['median']:.2f}x")
    return checks


def run(*, model_name: str, batch: int, steps: int, steps_per_call: int, reps: int,
        peak_size: int, seed: int, remat_modes: tuple[str, ...], remat_workload: RematWorkload,
        timeout: float, work_dir: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Measures both levers (recomputation first: its children start before this process's TF)."""
    section: dict[str, Any] = {}
    if remat_modes:
        section["remat"] = measure_remat(remat_modes, remat_workload, reps=reps, seed=seed,
                                         timeout=timeout, say=say)
    section["precision"] = measure_precision(
        model_name, batch=batch, steps=steps, steps_per_call=steps_per_call, reps=reps,
        peak_size=peak_size, seed=seed, work_dir=work_dir, say=say)
    section["targets"] = targets(section)
    return section


def render(section: dict[str, Any], markdown: bool = False) -> str:
    """The tables `--levers` prints."""
    from tfdist.bench import report as report_lib

    parts = []
    prec = section["precision"]
    parts.append(f"precision: model {prec['model']} ({prec['description']}), batch "
                 f"{prec['batch']}, reference route, default strategy; fast bfloat16 here: "
                 f"{prec['fast_bfloat16'] or 'no (emulated)'}")
    rows = [[policy, f"{row['examples_per_sec']['median']:,.0f}",
             f"{row['examples_per_sec']['min']:,.0f}–{row['examples_per_sec']['max']:,.0f}",
             f"{row['ratio_to_float32']['median']:.3f}", f"{row['peak'] / 1e9:.1f}"]
            for policy, row in prec["policies"].items()]
    parts.append(report_lib._render(
        ["policy", "examples/s", "min–max", "x float32", "matmul peak GFLOP/s"], rows, markdown,
        [False, True, True, True, True]))
    remat = section.get("remat")
    if remat:
        parts.append(f"recomputation: {remat['description']}; one fresh process per mode and "
                     "repetition")
        rows = [[mode, f"{row['peak_rss_mb']['median']:,.0f}", f"{row['base_rss_mb']['median']:,.0f}",
                 f"{row['training_mb']['median']:,.0f}",
                 f"{row['step_seconds']['median'] * 1000:,.0f}",
                 f"{row['step_cpu_seconds']['median'] * 1000:,.0f}"
                 if "step_cpu_seconds" in row else "-"]
                for mode, row in remat["modes"].items()]
        parts.append(report_lib._render(
            ["remat", "peak RSS MB", "RSS before training MB", "peak - before MB", "step ms",
             "step CPU ms"], rows, markdown, [False, True, True, True, True, True]))
    header = ["target", "measured", "met", "how"]
    rows = [[t["name"], f"{t['value']:.3f}", "yes" if t["met"] else "NO", t["detail"]]
            for t in section["targets"]]
    parts.append(report_lib._render(header, rows, markdown, [False, True, False, False]))
    return "\n\n".join(parts)
