"""Tests for tfdist-train: every route under every strategy learns the digits; flags fail early.

One route x strategy x {1, 2 workers} matrix trains the default CNN on scikit-learn's digits for
300 steps (test accuracy ~0.98; 0.95 is required) and checks `metrics.json`: ctl, fit and
estimator under the default and mirrored strategies in one process (either the real binary in a
subprocess, at least one per route, or the same run in-process, faster), and under
multi_worker_mirrored on 2 real worker processes under `tfdist-launch` (the estimator with an
evaluator task too).
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import input_pipelines
import models
import tfdist
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import runner
from tfdist.runner import options as options_lib

STEPS = 300
PY = sys.executable
TRAIN = [PY, "-m", "tfdist.train"]
_TWO_WORKERS = json.dumps({"cluster": {"worker": ["localhost:2222", "localhost:2223"]},
                           "task": {"type": "worker", "index": 0}})
_EVALUATOR = json.dumps({"cluster": {"worker": ["localhost:2222", "localhost:2223"]},
                         "task": {"type": "evaluator", "index": 0}})
_PS = json.dumps({"cluster": {"chief": ["localhost:2221"], "worker": ["localhost:2222"],
                              "ps": ["localhost:2224"]}, "task": {"type": "ps", "index": 0}})


def _run(argv, *, timeout=400, **env):
    return subprocess.run(argv, cwd=REPO_ROOT, env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def _metrics(model_dir):
    return json.loads((Path(model_dir) / "metrics.json").read_text())


def _check_report(report, route, strategy, replicas, workers):
    assert (report["route"], report["strategy"]) == (route, strategy)
    assert (report["replicas"], report["workers"], report["steps"]) == (replicas, workers, STEPS)
    assert report["final"]["accuracy"] >= 0.95, report["final"]
    assert report["examples_per_sec"] > 0 and report["params"] == 53002
    assert report["exports"] and all(Path(p).exists() for p in report["exports"].values())


def _in_process(model_dir, route, strategy, **options):
    keras.utils.set_random_seed(0)
    options = runner.TrainOptions(model_dir=str(model_dir), route=route, strategy=strategy,
                                  **{"train_steps": STEPS, "progress": False, **options})
    # The other tests' MirroredStrategy over these CPUs: a second one over the same devices
    # would reuse its collective keys and fail ("Shape mismatch in the collective instance").
    if strategy != "mirrored":
        return runner.run(options)
    return runner.run(options, strategy=tfdist.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"]))


def _binary(model_dir, route, strategy, *extra):
    flagfile = Path(model_dir).parent / f"{route}.flags"  # --flagfile works
    flagfile.write_text(f"--route={route}\n--strategy={strategy}\n--train_steps={STEPS}\n")
    result = _run([*TRAIN, f"--flagfile={flagfile}", f"--model_dir={model_dir}",
                   "--eval_every=150", *extra])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "tfdist-train: test accuracy 0." in result.stdout
    return _metrics(model_dir)


def _launch(model_dir, route, *, evaluator=False):
    result = _run([PY, "-m", "tfdist.launch", "--workers", "2", *(["--evaluator"] if evaluator else []),
                   "--timeout", "400", "--", *TRAIN, f"--route={route}", f"--model_dir={model_dir}",
                   f"--train_steps={STEPS}", "--eval_every=150"], timeout=450)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "[worker:0] tfdist-train: test accuracy" in result.stdout
    assert "[worker:1] tfdist-train:" not in result.stdout  # only the chief reports
    return result.stdout


# --- route x strategy x {1, 2 workers} -----------------------------------------------------------

# Single-process runs: the real binary for at least one strategy of each route, the same run
# in-process (faster) for the other.
_SINGLE_PROCESS_HOW = {
    ("ctl", "default"): "in_process", ("ctl", "mirrored"): "binary",
    ("fit", "default"): "binary", ("fit", "mirrored"): "in_process",
    ("estimator", "default"): "in_process", ("estimator", "mirrored"): "binary",
}


@pytest.mark.parametrize("strategy, workers", [
    ("default", 1),
    ("mirrored", 1),
    pytest.param("multi_worker", 2, marks=pytest.mark.multiworker),
])
@pytest.mark.parametrize("route", ["ctl", "fit", "estimator"])
def test_every_route_learns_digits_under_every_strategy(tmp_path, route, strategy, workers):
    model_dir = tmp_path / "run"
    if workers == 1:
        how = _SINGLE_PROCESS_HOW[(route, strategy)]
        report = (_in_process if how == "in_process" else _binary)(model_dir, route, strategy)
        _check_report(report, route, strategy, 2 if strategy == "mirrored" else 1, 1)
        assert _metrics(model_dir) == report
        return
    # 2 real worker processes under tfdist-launch; the estimator also gets an evaluator task.
    output = _launch(model_dir, route, evaluator=route == "estimator")
    report = _metrics(model_dir)
    _check_report(report, route, "multi_worker_mirrored", 2, 2)
    if route == "estimator":
        assert report["task"] == "worker:0"
        assert f"[evaluator:0] tfdist-train: evaluator: final evaluation at step {STEPS}" in output


def test_fit_route_backup_covers_a_short_last_epoch(tmp_path, monkeypatch):
    # 25 steps, validated every 10: epochs of 10, 10 and 5 steps, in one fit call so a crash in the
    # short last epoch resumes from the backup at step 20 instead of starting over.
    from tfdist.runner import route_fit
    seen, stop_batch_end = [], route_fit._StopAtStep.on_train_batch_end

    def crash_at_the_end(callback, batch, logs=None):
        seen.append(int(callback.model.optimizer.iterations.numpy()))
        if seen[-1] == 25 and crash:
            raise RuntimeError("simulated crash")
        stop_batch_end(callback, batch, logs)

    monkeypatch.setattr(route_fit._StopAtStep, "on_train_batch_end", crash_at_the_end)
    run = dict(train_steps=25, eval_every=10, steps_per_loop=5)
    crash = True
    with pytest.raises(RuntimeError, match="simulated crash"):
        _in_process(tmp_path, "fit", "default", **run)
    assert sorted(p.name for p in (tmp_path / "backup").glob("*.index")) == [
        "ckpt-10.index", "ckpt-20.index"]  # the newest two
    crash, seen[:] = False, []
    report = _in_process(tmp_path, "fit", "default", **run)
    assert seen == [25]  # only the last 5 steps ran again
    assert (report["start_step"], report["steps"]) == (20, 25) and report["final"]["accuracy"] > 0.2
    assert not (tmp_path / "backup").exists()


@pytest.mark.parametrize("route, model, model_options, dataset, remat", [
    ("ctl", "mlp", "hidden=64", "tfrecord", "none"),
    ("fit", "resnet", "depth=8,width=8", "digits", "none"),
    # Estimator graph mode, replica threads, encoder blocks recomputed whole (--remat=full).
    ("estimator", "transformer", "num_layers=1", "synthetic:shape=12,vocab=40,classes=3,size=256",
     "full"),
])
def test_every_model_family_and_dataset_kind_runs(tmp_path, route, model, model_options, dataset,
                                                  remat):
    if dataset == "tfrecord":
        input_pipelines.tfrecord.write_sources(input_pipelines.digits.sources(), str(tmp_path / "tfr"), 4)
        dataset = f"tfrecord:{tmp_path / 'tfr'}"
    report = _in_process(tmp_path / "run", route, "mirrored", model=model, dataset=dataset,
                         model_options=model_options, train_steps=20, steps_per_loop=10,
                         remat=remat)
    assert report["remat"] == remat
    data = input_pipelines.load(dataset)
    overrides = dict(input_shape=data.input_shape, num_classes=data.num_classes,
                     **models.parse_options(model_options))
    if data.vocab_size:
        overrides["vocab_size"] = data.vocab_size
    config = models.get(model).make_config(**overrides)
    assert (report["params"], report["flops_per_example"]) == (
        models.count_params(config), models.flops_per_example(config))
    assert report["steps"] == 20 and set(report["final"]) == {"loss", "accuracy"}


def test_deterministic_runs_give_identical_metrics(tmp_path):
    # Equal metrics are the point here, not accuracy (the matrix checks that): 60 steps, two
    # validations; the later flags override the flagfile's --train_steps and --eval_every.
    reports = [_binary(tmp_path / f"run{i}", "fit", "mirrored", "--deterministic", "--seed=7",
                       "--train_steps=60", "--eval_every=30")
               for i in range(2)]
    assert reports[0]["steps"] == 60
    for key in ("final", "train", "steps"):
        assert reports[0][key] == reports[1][key], key
    assert reports[0]["deterministic"] and reports[0]["seed"] == 7


def test_ctl_resumes_a_finished_run_and_an_evaluator_task_evaluates_it(tmp_path, monkeypatch):
    first = _in_process(tmp_path, "ctl", "default")
    again = _in_process(tmp_path, "ctl", "default")
    assert (again["start_step"], again["steps"]) == (STEPS, STEPS)
    assert again["final"] == first["final"] and again["examples_per_sec"] is None
    (tmp_path / "metrics.json").unlink()
    monkeypatch.setenv("TF_CONFIG", _EVALUATOR)
    evaluated = _in_process(tmp_path, "ctl", "auto")
    assert (evaluated["task"], evaluated["strategy"], evaluated["steps"]) == ("evaluator:0", "default", STEPS)
    assert evaluated["final"] == first["final"]
    assert not (tmp_path / "metrics.json").exists()  # only the chief writes it
    with pytest.raises(runner.RunError, match="--route=fit has no evaluator task"):
        _in_process(tmp_path, "fit", "auto")


# --- errors ------------------------------------------------------------------------------------



@pytest.mark.parametrize("args, env, names", [
    ([], {}, "--model_dir"),
    (["--route=keras"], {}, "--route"),
    (["--strategy=tpu"], {}, "--strategy"),
    (["--model=vgg"], {}, "--model"),
    (["--dataset=mnist"], {}, "--dataset"),
    (["--dataset=synthetic:shape=3xa"], {}, "--dataset"),
    (["--model_options=depth"], {}, "--model_options"),
    (["--train_steps=0"], {}, "--train_steps"),
    (["--train_steps=10", "--epochs=2"], {}, "train_steps"),
    (["--global_batch_size=0"], {}, "--global_batch_size"),
    (["--learning_rate=0"], {}, "--learning_rate"),
    (["--steps_per_loop=0"], {}, "--steps_per_loop"),
    (["--eval_every=-1"], {}, "--eval_every"),
    (["--virtual_cpus=0"], {}, "--virtual_cpus"),
    (["--precision=bf16"], {}, "--precision"),
    (["--precision=mixed_bfloat16", "--mixed_precision"], {}, "not both"),
    (["--remat=blocks"], {}, "--remat"),
    (["--strategy=mirrored"], {"TF_CONFIG": _TWO_WORKERS}, "--strategy=mirrored"),
    (["--route=fit"], {"TF_CONFIG": _EVALUATOR}, "--route=fit"),
    (["--route=fit"], {"TF_CONFIG": _PS}, "--route=fit has no parameter-server training"),
    (["--route=estimator"], {"TF_CONFIG": _PS}, "--route=estimator has no parameter-server"),
    (["--strategy=mirrored"], {"TF_CONFIG": _PS}, "--strategy=mirrored cannot train the ps tasks"),
    (["--strategy=parameter_server"], {}, "--strategy=parameter_server needs TF_CONFIG"),
    ([], {"TF_CONFIG": "{bad json"}, "TF_CONFIG"),
    (["extra"], {}, "unexpected arguments: extra"),
])
def test_invalid_flags_fail_fast_with_one_line(tmp_path, args, env, names):
    model_dir = [] if not args and not env else [f"--model_dir={tmp_path}"]
    result = _run([*TRAIN, *model_dir, *args], timeout=60, **env)
    assert result.returncode != 0
    first = result.stderr.strip().splitlines()[0]
    assert names in first, result.stderr
    assert "Traceback" not in result.stderr and "tensorflow" not in result.stderr.lower()
    assert not list(tmp_path.iterdir())  # nothing was built or written


def test_runtime_checks_name_the_flag_before_training(tmp_path):
    result = _run([*TRAIN, f"--model_dir={tmp_path}", "--strategy=mirrored", "--virtual_cpus=2",
                   "--global_batch_size=63"], timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "tfdist-train: error: --global_batch_size: global_batch_size=63 does not divide evenly "
        "over 2 replicas"), result.stderr[-2000:]
    assert not (tmp_path / "metrics.json").exists()
    for options, message in [
        (dict(dataset="synthetic:shape=64"),
         "--model=cnn: Model 'cnn' needs image inputs .*--dataset=synthetic gives input_shape=\\(64,\\)"),
        (dict(model="resnet", model_options="detph=8"), "--model=resnet: Model 'resnet' has no option.* detph"),
        (dict(model_options="num_classes=3"), "--model_options: num_classes comes from the dataset"),
        (dict(model="mlp", dataset="synthetic:shape=16,vocab=50"), "--model=mlp takes float features"),
        (dict(dataset=f"tfrecord:{tmp_path / 'missing'}"), "--dataset=tfrecord:.*missing"),
        (dict(route="keras2"), "unknown route 'keras2'; valid: ctl, fit, estimator"),
    ]:
        with pytest.raises(runner.RunError, match=message):
            runner.run(runner.TrainOptions(model_dir=str(tmp_path), strategy="default", **options))


def test_flag_lists_match_the_library():
    from tfdist import strategy

    assert options_lib.STRATEGIES == strategy.STRATEGY_NAMES
    assert set(options_lib.ROUTES) == set(runner.ROUTE_FUNCTIONS)


def test_console_script_and_help(tmp_path):
    script = Path(PY).parent / "tfdist-train"
    assert script.exists(), "pip install -e . installs the tfdist-train console script"
    result = _run([str(script), "--help"], timeout=60)  # absl's --help exits 1
    for flag in ("--route", "--strategy", "--virtual_cpus", "--model", "--model_options",
                 "--dataset", "--model_dir",
                 "--train_steps", "--epochs", "--global_batch_size", "--learning_rate",
                 "--steps_per_loop", "--eval_every", "--seed", "--deterministic",
                 "--mixed_precision", "--precision", "--remat"):
        assert f"  {flag}:" in result.stdout or f"  --[no]{flag[2:]}:" in result.stdout, flag


def test_fit_runs_whole_executions_that_divide_each_epoch():
    from tfdist.runner.route_fit import _steps_per_execution

    # Keras runs whole executions (50-step epochs at 20 per execution train 60 steps).
    assert _steps_per_execution(20, 50, 30) == 10
    assert _steps_per_execution(50, 600, 0) == 50
    assert _steps_per_execution(100, 13, 0) == 13


@pytest.mark.parametrize("policy, scaled", [("float32", False), ("mixed_bfloat16", False),
                                            ("mixed_float16", True)])
def test_ctl_and_estimator_optimizer_scales_the_loss_only_under_float16(policy, scaled):
    from tfdist.runner import settings

    keras.mixed_precision.set_global_policy(policy)
    try:
        optimizer = settings.optimizer(0.01)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == scaled
    inner = optimizer.inner_optimizer if scaled else optimizer
    assert isinstance(inner, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(inner.learning_rate)) == pytest.approx(0.01)
