"""Side-by-side throughput of the training routes on one model, measured interleaved in one run.

    python -m tfdist.bench --strategies default,mirrored --virtual-cpus 2 --reps 5

Routes: `reference` (a minimal hand-written `strategy.run` loop, iterator kept alive, the same
steps per call), `ctl` (tfdist.loop Controller.train, end to end), `fit` (Keras `fit` with
`steps_per_execution` equal to the steps per call, tfdist's fixes applied), and `fit_spe1` (Keras
`fit` as most users write it, one step per call). Each repetition runs every route once, in turn,
so machine drift hits all routes alike; medians and spread are reported, with each route's ratio
to the reference. Warm-up (tracing, first steps) is excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable

STRATEGIES = ("default", "mirrored")
ROUTES = ("reference", "ctl", "fit", "fit_spe1")


def _build(strategy, width: int, depth: int, keras):
    layers = [keras.Input((784,))]
    layers += [keras.layers.Dense(width, activation="relu") for _ in range(depth)]
    layers += [keras.layers.Dense(10)]
    with strategy.scope():
        keras.utils.set_random_seed(0)
        return keras.Sequential(layers)


def _route_runners(strategy, args) -> dict[str, Callable[[], float]]:
    """Builds every route once (with warm-up) and returns timers: each runs `args.steps` steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    import tfdist
    from tfdist import data

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=4096)
    source = tf.data.Dataset.from_tensor_slices((x, y))
    spec = data.DataSpec(source=source, global_batch_size=args.batch, shuffle_buffer=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    per_call = args.steps_per_call
    runners: dict[str, Callable[[], float]] = {}

    # (a) the reference hand loop
    model = _build(strategy, args.width, args.depth, keras)
    with strategy.scope():
        optimizer = keras.optimizers.SGD(0.01)
        optimizer.build(model.trainable_variables)
    iterator = iter(data.distribute(strategy, spec))

    def step(inputs):
        features, labels = inputs
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            value = tf.nn.compute_average_loss(
                loss.call(labels, logits), global_batch_size=args.batch)
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def hand_loop(n):
        for _ in tf.range(n):
            strategy.run(step, args=(next(iterator),))

    def reference() -> float:
        started = time.perf_counter()
        for _ in range(args.steps // per_call):
            hand_loop(tf.constant(per_call))
        model.trainable_variables[0].numpy()  # wait for the last call's work
        return time.perf_counter() - started

    runners["reference"] = reference

    # (b) tfdist custom loop, end to end through Controller.train
    trainer = tfdist.loop.Trainer(
        strategy=strategy, model=lambda: _build(strategy, args.width, args.depth, keras),
        optimizer=keras.optimizers.SGD(0.01), loss=loss, train_data=spec)
    controller = tfdist.loop.Controller(
        trainer, model_dir=tempfile.mkdtemp(prefix="tfdist-bench-"), steps_per_loop=per_call,
        checkpoint_every=10**9, progress=False, summaries=False, export=False,
        handle_preemption=False)

    def ctl() -> float:
        started = time.perf_counter()
        controller.train(controller.global_step + args.steps)
        return time.perf_counter() - started

    runners["ctl"] = ctl

    # (c, d) Keras fit, with steps_per_execution = steps per call, and with 1
    for name, spe in (("fit", per_call), ("fit_spe1", 1)):
        fit_model = _build(strategy, args.width, args.depth, keras)
        with strategy.scope():
            fit_model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss,
                              steps_per_execution=spe)
        fit_data = data.for_fit(strategy, spec)

        def fit(fit_model=fit_model, fit_data=fit_data) -> float:
            started = time.perf_counter()
            fit_model.fit(fit_data, epochs=1, steps_per_epoch=args.steps, verbose=0)
            return time.perf_counter() - started

        runners[name] = fit

    for run in runners.values():  # warm-up: tracing and the first steps
        run()
    return runners


def measure(strategy_name: str, args) -> dict[str, dict[str, float]]:
    import tfdist

    if strategy_name == "mirrored":
        strategy = tfdist.get_strategy("mirrored", virtual_cpus=args.virtual_cpus)
    else:
        strategy = tfdist.get_strategy("default")
    runners = _route_runners(strategy, args)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.reps):
        for name, run in runners.items():
            times[name].append(run())
    reference = statistics.median(times["reference"])
    results = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        results[name] = {
            "steps_per_sec": args.steps / median,
            "examples_per_sec": args.steps * args.batch / median,
            "spread_pct": 100 * (max(samples) - min(samples)) / median,
            "ratio_to_reference": reference / median,
        }
    return results


def _table(all_results: dict) -> str:
    lines = [f"{'strategy':<10} {'route':<10} {'steps/s':>9} {'examples/s':>11} "
             f"{'spread%':>8} {'x ref':>6} {'x ctl':>6}"]
    for strategy_name, results in all_results.items():
        ctl = results["ctl"]["steps_per_sec"]
        for name, r in results.items():
            lines.append(
                f"{strategy_name:<10} {name:<10} {r['steps_per_sec']:9.1f} "
                f"{r['examples_per_sec']:11.0f} {r['spread_pct']:8.1f} "
                f"{r['ratio_to_reference']:6.3f} {r['steps_per_sec'] / ctl:6.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfdist.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", default="default,mirrored")
    parser.add_argument("--virtual-cpus", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed call")
    parser.add_argument("--steps-per-call", type=int, default=50)
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    names = args.strategies.split(",")
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown or args.steps % args.steps_per_call:
        parser.error(f"strategies must be among {STRATEGIES} and --steps a multiple of "
                     f"--steps-per-call; received {args.strategies!r}, {args.steps}, "
                     f"{args.steps_per_call}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "mirrored" in names:
        import tfdist

        tfdist.strategy.configure_virtual_cpus(args.virtual_cpus)
    all_results = {name: measure(name, args) for name in names}
    print(_table(all_results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": all_results}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
