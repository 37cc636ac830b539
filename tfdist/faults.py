"""tfdist-faults: kill training at random moments and check that every run still ends right.

    python -m tfdist.faults --trials 10                          # every route x layout, SIGKILL
    python -m tfdist.faults --routes ctl --layouts 2w --signals term --trials 3 --seed 7

Each trial runs ``tfdist-launch --max-restarts`` around ``tfdist-train`` in a fresh scratch
directory, waits for the first checkpoint, then after a delay drawn from a seeded RNG sends
SIGKILL or SIGTERM to one training process drawn from the same RNG (both logged, so a failure
is reproducible with the same `--seed`). A trial survives when the launcher exits 0, the run
ends at exactly `--train_steps`, the last checkpoint is restorable (ctl, estimator: `fit`
deletes its backup on success), every worker ends with the same weights (bit for bit: each
task's last save is dumped, `tfdist.checkpoint.DUMP_WEIGHTS_ENV`), and no process or scratch
file is left behind. Before the trials of each route x layout, a clean run (no fault) gives the
weights each trial is compared with: the table reports how many trials ended bit-identical to it
and the largest absolute difference of any weight or optimizer slot.

Steps lost per failure: (the newest checkpoint at the kill - the step the restart resumed
from) + the steps trained since that checkpoint, estimated as the time since it was recorded x
the run's steps/s (capped at the checkpoint interval). SIGTERM saves at the current step in
every route, so nothing is lost there. See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

ROUTES = ("ctl", "fit", "estimator")
LAYOUTS = {"1x2": 1, "2w": 2}  # 1 process mirrored over 2 logical CPUs; 2 worker processes
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM}
CLEAN = "none"  # the signal of a clean run: no fault injected
DUMP_WEIGHTS_ENV = "TFDIST_TEST_DUMP_WEIGHTS"  # tfdist.checkpoint.DUMP_WEIGHTS_ENV (no TF import)
RESTART_LINE = "restarting the group (restart 1 of"  # what tfdist-launch prints on a restart
_RESUMED = re.compile(r"resumed from \S*ckpt-(\d+) at step (\d+)|tfdist\.checkpoint: restored \S*ckpt-(\d+)")


@dataclasses.dataclass
class Trial:
    """One trial's draw and outcome."""

    route: str
    layout: str
    index: int
    signal: str
    delay: float  # seconds after the first checkpoint
    draw: float  # picks the task to kill
    victim: int | None = None  # task index killed; None when the run ended first
    kill_time: float = 0.0
    recorded_time: float | None = None  # when the newest checkpoint at the kill was recorded
    checkpoint_at_kill: int | None = None  # the newest recorded checkpoint when the signal went
    resumed_at: int | None = None
    steps_lost: float | None = None
    survived: bool = False
    problem: str = ""
    same_on_workers: bool | None = None  # None with one process
    clean_max_diff: float | None = None  # largest |w - w_clean|, every float tensor saved
    weights: dict[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(p) for p in f.read().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in _children(k)]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _state_step(directory: str) -> tuple[int | None, float | None]:
    """The newest recorded checkpoint's number and the state file's mtime."""
    path = os.path.join(directory, "checkpoint")
    try:
        text, mtime = open(path).read(), os.path.getmtime(path)
    except OSError:
        return None, None
    match = re.search(r'^model_checkpoint_path: "(?:.*/)?ckpt-(\d+)"', text, re.M)
    return (int(match.group(1)), mtime) if match else (None, mtime)


def run_trial(trial: Trial, args: argparse.Namespace,
              clean: dict[str, np.ndarray] | None = None) -> Trial:
    """Runs one trial (a clean run when `trial.signal` is `CLEAN`) and checks its outcome.

    Args:
        trial: The draw; its outcome fields are filled in.
        args: The tool's options.
        clean: The final weights of the clean run of this route x layout, to compare with.
    """
    scratch = tempfile.mkdtemp(prefix="tfdist-faults-")
    model_dir, tmp = os.path.join(scratch, "run"), os.path.join(scratch, "tmp")
    weights_dir = os.path.join(scratch, "weights")
    os.makedirs(tmp)
    os.makedirs(weights_dir)
    ckpt_dir = os.path.join(model_dir, "backup") if trial.route == "fit" else model_dir
    workers = LAYOUTS[trial.layout]
    train = [sys.executable, "-m", "tfdist.train", f"--route={trial.route}", f"--model_dir={model_dir}",
             f"--train_steps={args.train_steps}", f"--eval_every={args.interval}",
             f"--steps_per_loop={args.steps_per_loop}", f"--model={args.model}"]
    if workers == 1:
        # One local process mirrored over 2 logical CPUs: without the launcher's 1-task
        # TF_CONFIG (tfdist-train splits the CPU only for a local process).
        train = ["env", "-u", "TF_CONFIG", *train, "--strategy=mirrored", "--virtual_cpus=2"]
    command = [sys.executable, "-m", "tfdist.launch", "--workers", str(workers), "--max-restarts",
               str(args.max_restarts), "--timeout", str(args.timeout), "--", *train]
    log_path = os.path.join(scratch, "output.log")
    env = dict(os.environ, TMPDIR=tmp, TF_CPP_MIN_LOG_LEVEL="2", **{DUMP_WEIGHTS_ENV: weights_dir})
    env.pop("TF_CONFIG", None)
    with open(log_path, "w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        try:
            if trial.signal != CLEAN:
                _inject(trial, launcher, ckpt_dir, workers)
            launcher.wait(timeout=args.timeout + 60)
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    output = open(log_path).read()
    _check(trial, args, launcher.returncode, output, model_dir, tmp)
    _check_weights(trial, args, weights_dir, clean)
    if trial.survived and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    elif not trial.survived:
        trial.problem += f" (kept {scratch})"
    return trial


def _inject(trial: Trial, launcher: subprocess.Popen, ckpt_dir: str, workers: int) -> None:
    while _state_step(ckpt_dir)[0] is None:  # the first checkpoint
        if launcher.poll() is not None:
            return
        time.sleep(0.05)
    time.sleep(trial.delay)
    tasks = sorted(p for p in _children(launcher.pid)
                   if "tfdist.train" in _cmdline(p) and not _cmdline(p).startswith("env "))
    if launcher.poll() is not None or len(tasks) < workers:
        return  # the run ended (or is restarting) first: nothing injected
    trial.checkpoint_at_kill, trial.recorded_time = _state_step(ckpt_dir)
    trial.victim = min(int(trial.draw * len(tasks)), len(tasks) - 1)
    trial.kill_time = time.time()
    os.kill(tasks[trial.victim], SIGNALS[trial.signal])


def _check(trial: Trial, args: argparse.Namespace, returncode: int, output: str,
           model_dir: str, tmp: str) -> None:
    problems = []
    if returncode != 0:
        problems.append(f"tfdist-launch exited {returncode}")
    try:
        with open(os.path.join(model_dir, "metrics.json")) as f:
            report = json.load(f)
        if report["steps"] != args.train_steps:
            problems.append(f"ended at step {report['steps']}, not {args.train_steps}")
        rate = (report["examples_per_sec"] or 0) / report["global_batch_size"]
    except (OSError, ValueError, KeyError):
        problems.append("no metrics.json")
        rate = 0.0
    if trial.route != "fit":
        from tfdist import checkpoint, cluster

        try:
            last = checkpoint.newest_restorable(model_dir, cluster.ClusterInfo())
        except checkpoint.CheckpointError as err:
            last = f"unreadable: {err}"
        if not (last or "").endswith(f"ckpt-{args.train_steps}"):
            problems.append(f"last checkpoint {last}")
    left = [p for p in os.listdir("/proc") if p.isdigit() and model_dir in _cmdline(int(p))]
    if left:
        problems.append(f"processes left: {left}")
    # tfdist's scratch directories (non-chief saves, summaries); TF's autograph files aside.
    left_files = [n for n in os.listdir(tmp) if n.startswith("tfdist-")]
    if left_files:
        problems.append(f"scratch left: {left_files}")
    if trial.victim is not None:
        # The first restore after the first restart (later ones are evaluations).
        _, restarted, after = output.partition(RESTART_LINE)
        resume = _RESUMED.search(after)
        if not restarted:
            problems.append("the launcher did not restart the group")
        # No resume line: the restart started from scratch.
        trial.resumed_at = int(resume.group(2) or resume.group(3)) if resume else 0
        if trial.signal == "term":
            trial.steps_lost = 0.0  # saved at the step it stopped; resumed exactly there
            if not any("Preempted" in line or "preempted by SIGTERM" in line
                       for line in output.splitlines()):
                problems.append("SIGTERM did not save a preemption checkpoint")
        else:
            since = max(0.0, trial.kill_time - (trial.recorded_time or trial.kill_time))
            trial.steps_lost = ((trial.checkpoint_at_kill or 0) - trial.resumed_at
                                + min(args.interval, since * rate))
    trial.survived = not problems
    trial.problem = "; ".join(problems)


def _check_weights(trial: Trial, args: argparse.Namespace, weights_dir: str,
                   clean: dict[str, np.ndarray] | None) -> None:
    """Every task's last save is at the final step and holds the same tensors (bit for bit)."""
    problems = [trial.problem] if trial.problem else []
    dumps = {}
    for name in sorted(os.listdir(weights_dir)):
        if name.endswith(".npz") and not name.startswith("."):
            with np.load(os.path.join(weights_dir, name)) as f:
                dumps[name[:-len(".npz")]] = {k: f[k] for k in f.files}
    steps = {task: int(d.pop("__step__")) for task, d in dumps.items()}
    if not dumps:
        problems.append("no weights dumped")
    elif set(steps.values()) != {args.train_steps}:
        problems.append(f"last saves at steps {steps}, not all {args.train_steps}")
    else:
        first, *others = dumps.values()
        trial.weights = first
        if others:
            trial.same_on_workers = all(
                d.keys() == first.keys() and all(np.array_equal(d[k], first[k]) for k in first)
                for d in others)
            if not trial.same_on_workers:
                problems.append("the workers ended with different weights")
        if clean is not None and clean.keys() == first.keys():
            trial.clean_max_diff = max(float(np.max(np.abs(first[k] - clean[k]), initial=0.0))
                                       for k in first)
    trial.survived = not problems
    trial.problem = "; ".join(problems)


def table(trials: Sequence[Trial]) -> str:
    """The per route x layout x signal table (Markdown)."""
    rows = ["| route | layout | signal | trials | faults injected | survived | resumed at or after "
            "the newest checkpoint | steps lost mean | max | same weights on every worker "
            "| = clean run bit for bit | max abs diff from clean |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(t.route, t.layout, t.signal) for t in trials},
                  key=lambda k: (ROUTES.index(k[0]), k[1], k[2]))
    for key in keys:
        group = [t for t in trials if (t.route, t.layout, t.signal) == key]
        lost = [t.steps_lost for t in group if t.steps_lost is not None]
        mean, most = (f"{sum(lost) / len(lost):.1f}", f"{max(lost):.1f}") if lost else ("-", "-")
        compared = [t.same_on_workers for t in group if t.same_on_workers is not None]
        same = f"{sum(compared)} of {len(compared)}" if compared else "- (1 process)"
        diffs = [t.clean_max_diff for t in group if t.clean_max_diff is not None]
        vs_clean = (f"{sum(d == 0 for d in diffs)} of {len(diffs)} | {max(diffs):.2g}"
                    if diffs else "- | -")
        rows.append(f"| {key[0]} | {key[1]} | {key[2]} | {len(group)} | "
                    f"{sum(t.victim is not None for t in group)} | {sum(t.survived for t in group)} | "
                    f"{sum(t.victim is not None and (t.resumed_at or 0) >= (t.checkpoint_at_kill or 0) for t in group)} | "
                    f"{mean} | {most} | {same} | {vs_clean} |")
    return "\n".join(rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tfdist-faults", description=__doc__.split("\n")[0])
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--signals", default="kill", help="kill, term or kill,term")
    parser.add_argument("--trials", type=int, default=10, help="per route x layout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train_steps", type=int, default=300)
    parser.add_argument("--interval", type=int, default=50, help="checkpoint (and eval) interval")
    parser.add_argument("--steps_per_loop", type=int, default=5)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--max_delay", type=float, default=2.0,
                        help="kill within this many seconds after the first checkpoint")
    parser.add_argument("--max_restarts", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directories")
    parser.add_argument("--jsonl", help="append each trial's outcome to this file as it ends")
    parser.add_argument("--no-clean", dest="clean", action="store_false",
                        help="skip the clean run per route x layout (no comparison with it)")
    args = parser.parse_args(argv)
    for name, valid in (("routes", ROUTES), ("layouts", tuple(LAYOUTS)), ("signals", tuple(SIGNALS))):
        values = getattr(args, name).split(",")
        bad = [v for v in values if v not in valid]
        if bad or args.trials < 1:
            parser.error(f"invalid --{name}={getattr(args, name)}: valid values are {', '.join(valid)}")
        setattr(args, name, values)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the trials, prints one line per trial and the table; 0 when every trial survived."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for the checks, which import TF
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    failed = False
    for route in args.routes:
        for layout in args.layouts:
            clean = None
            if args.clean:
                reference = run_trial(Trial(route, layout, -1, CLEAN, 0.0, 0.0), args)
                failed |= not reference.survived
                clean = reference.weights
                print(f"tfdist-faults: {route} {layout} clean run: "
                      f"{'ok' if reference.survived else 'FAILED ' + reference.problem}", flush=True)
            for i in range(args.trials):
                trial = Trial(route, layout, i, rng.choice(args.signals),
                              round(rng.uniform(0, args.max_delay), 3), rng.random())
                run_trial(trial, args, clean)
                trial.weights = None  # only the clean run's are kept
                trials.append(trial)
                if args.jsonl:
                    with open(args.jsonl, "a") as f:
                        f.write(json.dumps(dataclasses.asdict(trial)) + "\n")
                diff = "" if trial.clean_max_diff is None else f", max |w - clean| {trial.clean_max_diff:.2g}"
                print(f"tfdist-faults: {route} {layout} #{i} {trial.signal} after {trial.delay}s "
                      f"task {trial.victim} (checkpoint {trial.checkpoint_at_kill}, resumed at "
                      f"{trial.resumed_at}, lost {trial.steps_lost and round(trial.steps_lost, 1)}"
                      f"{diff}): {'survived' if trial.survived else 'FAILED ' + trial.problem}",
                      flush=True)
    print(table(trials))
    return 0 if all(t.survived for t in trials) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
