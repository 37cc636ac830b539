"""Tests for tfdist.estimator.training (`train_and_evaluate`): the tutorial program in one process
and on two workers with an evaluator, local training with exporters, the evaluator task."""

import json
import logging
import threading
from pathlib import Path

import pytest

import tfdist.estimator as est
from tests import multiworker
from tests.estimator_helpers import (
    JOB,
    _check_export,
    _config,
    _estimator,
    _input_fn,
    _receiver,
    _summary_steps,
)
from tests.workers import estimator_job
from tfdist import checkpoint, cluster
from tfdist.estimator import training


def test_tutorial_program_as_one_process(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = estimator_job.main(str(tmp_path / "model"), str(out), epochs=8)
    result = report["eval_result"]
    # 8 epochs of 1500 examples in batches of 32, input ends. Accuracy over 20 seeds: 0.85-0.91.
    assert result["global_step"] == 375
    assert result["accuracy"] > 0.75 and result["loss"] > 0
    assert report["latest_checkpoint"].endswith("ckpt-375")
    (export_dir,) = report["exports"]
    _check_export(export_dir)
    assert list((tmp_path / "model" / "eval").glob("events.*"))


@pytest.mark.multiworker
def test_tutorial_program_on_two_workers_and_an_evaluator(tmp_path):
    model_dir, out, scratch = tmp_path / "model", tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    multiworker.run_workers(["python", JOB, str(model_dir), str(out)], num_workers=2,
                            evaluator=True, env={"TMPDIR": str(scratch)}, timeout=400)
    reports = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(reports) == {"worker-0", "worker-1", "evaluator-0"}
    # 1500 examples sharded over 2 input pipelines, 16 epochs, per-worker batches of 32.
    assert [reports[name]["last_step"] for name in ("worker-0", "worker-1")] == [375, 375]
    assert reports["worker-0"]["latest_checkpoint"].endswith("ckpt-375")  # the chief wrote it
    evaluator = reports["evaluator-0"]
    assert evaluator["eval_result"]["global_step"] == 375
    assert evaluator["eval_result"]["accuracy"] > 0.75
    (export_dir,) = evaluator["exports"]
    assert Path(export_dir).parent == model_dir / "export" / "digits"
    _check_export(export_dir)
    top = {p.name for p in model_dir.iterdir()}
    assert {"checkpoint", "ckpt-375.index", "eval", "export", "training_done"} <= top
    assert len([n for n in top if "tfevents" in n]) == 1  # only the chief writes training summaries
    assert not list(scratch.glob("tfdist-*"))  # the other worker removed its scratch checkpoints
    evaluated = _summary_steps(model_dir / "eval")
    assert evaluated[-1] == 375 and set(evaluated) <= {100, 200, 300, 375}  # new checkpoints only


def test_local_train_and_evaluate_with_exporters(tmp_path):
    estimator = _estimator(tmp_path, config=_config(save_checkpoints_steps=10))
    exporters = [est.LatestExporter("latest", _receiver, exports_to_keep=1),
                 est.BestExporter(serving_input_receiver_fn=_receiver),
                 est.FinalExporter("final", _receiver)]
    result, exports = est.train_and_evaluate(
        estimator, est.TrainSpec(_input_fn(), max_steps=30),
        est.EvalSpec(_input_fn(repeat=False), steps=None, throttle_secs=0, exporters=exporters))
    assert result["global_step"] == 30
    exported = {Path(p).parent.name for p in exports}
    assert "latest" in exported and "final" in exported
    assert len(list((tmp_path / "export" / "latest").iterdir())) == 1  # exports_to_keep=1
    assert len(list((tmp_path / "export" / "final").iterdir())) == 1
    assert list((tmp_path / "export" / "best_exporter").iterdir())
    eval_steps = {int(p.name) for p in (tmp_path / "export" / "best_exporter").iterdir()}
    assert len(eval_steps) >= 1


def test_chief_that_trained_nothing_marks_training_ended_at_step_0(tmp_path):
    # An input that ends at once from scratch saves no checkpoint; the chief's training task
    # used to crash reading the step of the missing one (basename(None): TypeError).
    estimator = _estimator(tmp_path)
    assert estimator.config.is_chief  # a local run is the chief: this is what a chief task runs
    training._run_training_task(estimator, est.TrainSpec(_input_fn(num=0, repeat=False)))
    assert estimator.latest_checkpoint() is None
    assert checkpoint.read_done_marker(str(tmp_path))["global_step"] == 0


def test_evaluator_task_skips_an_unreadable_checkpoint_and_evaluates_until_max_steps(
        tmp_path, monkeypatch):
    """The evaluator task evaluates new checkpoints until `max_steps`, then runs the final export.
    Issue 22: a truncated checkpoint crashed it; now one line names it and the evaluator goes on
    polling. The next checkpoint appears only once that line was logged (no timing)."""
    _estimator(tmp_path, config=_config(save_checkpoints_steps=10)).train(_input_fn(), max_steps=30)
    state = (tmp_path / "checkpoint").read_text()
    held = tmp_path / "held"
    held.mkdir()
    for path in tmp_path.glob("ckpt-30.*"):  # ckpt-30 comes later: as if not saved yet
        path.rename(held / path.name)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-20"\n'
                                         'all_model_checkpoint_paths: "ckpt-10"\n'
                                         'all_model_checkpoint_paths: "ckpt-20"\n')
    (data,) = tmp_path.glob("ckpt-20.data-*")
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)

    skipped = threading.Event()
    lines = []

    class Watch(logging.Handler):
        def emit(self, record):
            if "evaluator skips" in record.getMessage():
                lines.append(record.getMessage())
                skipped.set()

    def save_ckpt_30():  # the chief's next save, once the evaluator has skipped ckpt-20
        if skipped.wait(timeout=120):
            for path in held.iterdir():
                path.rename(tmp_path / path.name)
            (tmp_path / "checkpoint").write_text(state)

    watch = Watch()
    logging.getLogger("absl").addHandler(watch)
    chief = threading.Thread(target=save_ckpt_30, daemon=True)
    chief.start()
    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=["localhost:1"], task_type="evaluator",
                                                           task_id=0))
    try:
        result, exports = est.train_and_evaluate(
            _estimator(tmp_path), est.TrainSpec(_input_fn(), max_steps=30),
            est.EvalSpec(_input_fn(repeat=False), steps=None, start_delay_secs=0, throttle_secs=0,
                         exporters=[est.FinalExporter("final", _receiver)]))
    finally:
        skipped.set()
        chief.join()
        logging.getLogger("absl").removeHandler(watch)
    assert result["global_step"] == 30 and result["accuracy"] > 0.7
    (export_dir,) = exports
    assert Path(export_dir).parent == tmp_path / "export" / "final"
    assert lines == ["tfdist.estimator: evaluator skips ckpt-20: it is unreadable (OutOfRangeError: "
                     "Read less bytes than requested); waiting for the next checkpoint"]
    assert data.exists()  # the evaluator moves nothing: the chief writes model_dir
    assert _summary_steps(tmp_path / "eval") == [30]
