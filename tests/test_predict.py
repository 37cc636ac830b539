"""tfdist-predict: exactly once, in order, resumable, under every strategy; every error path.

The multi-process tests run the real binary under `tests.multiworker` (2 workers, each mirrored
over 2 logical CPUs) and compare with a single-process run row for row, for a `.keras` model and
for an Estimator-style export; one worker kills itself by design (kill -9 after its 2nd shard)
and the rerun must skip exactly the shards on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import tfdist.estimator as est
from input_pipelines import tfrecord
from tests import multiworker
from tfdist import cluster as cluster_lib
from tfdist import data as data_lib
from tfdist import predict
from tfdist.predict import faults, features, progress, store, writers

NUM_ROWS = 10_007  # divides by nothing the tests use: 2 workers, 2 replicas, batch 128, shard 1000
SHARD = 1000
BATCH = 128
SMALL = 2_003  # the other tests: 3 shards of 1000, 1000 and 3 rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A softmax .keras model, an Estimator-style export, and the same 10,007 rows in each format."""
    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(root / "model.keras")
    x = np.random.default_rng(0).normal(size=(NUM_ROWS, 4)).astype(np.float32)
    np.save(root / "x.npy", x)
    ids = np.array([f"id{i:05d}" for i in range(NUM_ROWS)])
    pq.write_table(pa.table({"id": ids, **{f"f{j}": x[:, j] for j in range(4)}}), root / "x.parquet")
    np.save(root / "small.npy", x[:SMALL])
    pq.write_table(pa.table({"id": ids[:SMALL], **{f"f{j}": x[:SMALL, j] for j in range(4)}}),
                   root / "small.parquet")

    def model_fn(features, labels, mode):
        net = keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        logits = net(features["x"])
        if mode == est.ModeKeys.PREDICT:
            return est.EstimatorSpec(mode, predictions={"logits": logits,
                                                        "classes": tf.argmax(logits, 1)})
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
        return est.EstimatorSpec(mode, loss=loss, optimizer=keras.optimizers.SGD(0.3))

    y = (x[:256, 0] + x[:256, 1] > 0).astype(np.int64)
    estimator = est.Estimator(model_fn, model_dir=str(root / "est"))
    estimator.train(lambda: tf.data.Dataset.from_tensor_slices(({"x": x[:256]}, y)).batch(32).repeat(),
                    steps=5)
    receiver = est.export.build_raw_serving_input_receiver_fn(
        {"x": tf.TensorSpec([None, 4], tf.float32)})
    export = estimator.export_saved_model(str(root / "est" / "export"), receiver)
    parsing = est.export.build_parsing_serving_input_receiver_fn(
        {"x": tf.io.FixedLenFeature([4], tf.float32)})
    parsing_export = estimator.export_saved_model(str(root / "est" / "parsing"), parsing)
    return {"root": root, "keras": str(root / "model.keras"), "export": export, "x": x, "ids": ids,
            "parsing_export": parsing_export,
            "npy": str(root / "x.npy"), "parquet": str(root / "x.parquet"),
            "small_npy": str(root / "small.npy"), "small_parquet": str(root / "small.parquet")}


def _options(files, out, **kwargs):
    kwargs.setdefault("model", files["keras"])
    kwargs.setdefault("inputs", (files["small_npy"],))
    kwargs.setdefault("batch_size", BATCH)
    kwargs.setdefault("shard_size", SHARD)
    kwargs.setdefault("output_format", "numpy")
    return predict.PredictOptions(output_dir=str(out), progress=False, **kwargs)


def _run(files, out, **kwargs):
    return predict.run(_options(files, out, **kwargs), cluster=cluster_lib.ClusterInfo())


def _read(summary, fmt="numpy"):
    return writers.read(summary["output"], fmt)


# --- the data layer's inference sharding ----------------------------------------------------------


@pytest.mark.parametrize("num,shard,workers", [(10_007, 1000, 2), (7, 3, 4), (1, 8, 3), (64, 8, 8)])
def test_plan_inference_deals_every_key_to_exactly_one_worker(num, shard, workers):
    plans = [data_lib.plan_inference(num, shard_size=shard, num_workers=workers, worker_index=w)
             for w in range(workers)]
    keys = [k for p in plans for s in p.mine for k in range(s.start, s.stop)]
    assert sorted(keys) == list(range(num))
    assert all(s.size <= shard for s in plans[0].shards)
    assert [s.index for s in plans[0].shards] == list(range(len(plans[0].shards)))


def test_plan_inference_splits_at_boundaries_and_not_by_worker_count():
    plan = data_lib.plan_inference(10, shard_size=4, boundaries=(3, 7))
    assert [(s.start, s.stop) for s in plan.shards] == [(0, 3), (3, 7), (7, 10)]
    again = data_lib.plan_inference(10, shard_size=4, num_workers=3, worker_index=1, boundaries=(3, 7))
    assert again.shards == plan.shards and [s.index for s in again.mine] == [1]


@pytest.mark.parametrize("kwargs,culprit", [
    (dict(num_records=0, shard_size=1), "num_records"),
    (dict(num_records=5, shard_size=0), "shard_size"),
    (dict(num_records=5, shard_size=1, num_workers=2, worker_index=2), "worker_index"),
])
def test_plan_inference_rejects_bad_arguments(kwargs, culprit):
    with pytest.raises(data_lib.DataConfigError, match=f"`{culprit}`"):
        data_lib.plan_inference(**kwargs)


def test_inference_dataset_keeps_every_partial_batch_and_never_spans_shards():
    values = tf.range(100, 111, dtype=tf.int64)

    def read(start, stop, batch):
        return tf.data.Dataset.from_tensor_slices(values).skip(start).take(stop - start).batch(batch)

    plan = data_lib.plan_inference(11, shard_size=5)
    batches = list(data_lib.inference_dataset(plan.shards, read, 2))
    assert [k.numpy().tolist() for k, _ in batches] == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9], [10]]
    assert all((r.numpy() == k.numpy() + 100).all() for k, r in batches)
    with pytest.raises(data_lib.DataConfigError, match="no shards"):
        data_lib.inference_dataset([], read, 2)


# --- single process: correctness, strategies, formats, post-processing ---------------------------


def test_single_process_scores_every_row_once_in_order(files, tmp_path):
    summary = _run(files, tmp_path / "out", inputs=(files["npy"],))
    got = _read(summary)
    np.testing.assert_array_equal(got["key"], np.arange(NUM_ROWS))
    expected = keras.saving.load_model(files["keras"]).predict(files["x"], batch_size=BATCH, verbose=0)
    np.testing.assert_allclose(got["output_0"], expected, rtol=1e-5, atol=1e-6)
    assert summary["rows"] == NUM_ROWS and summary["shards"] == 11
    assert summary["shards_written"] == 11 and summary["shards_skipped"] == 0
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["rows"] == NUM_ROWS and on_disk["workers"][0]["rows_scored"] == NUM_ROWS
    for field in ("input_seconds", "inference_seconds", "loop_seconds", "startup_seconds"):
        assert on_disk["workers"][0][field] >= 0


def test_mirrored_over_two_logical_cpus_equals_one_device(files, tmp_path):
    one = _read(_run(files, tmp_path / "one"))
    two = _read(_run(files, tmp_path / "two", strategy="mirrored", virtual_cpus=2))
    np.testing.assert_array_equal(two["key"], one["key"])
    np.testing.assert_array_equal(two["output_0"], one["output_0"])


def test_estimator_export_with_parquet_ids_and_stacked_columns(files, tmp_path):
    summary = _run(files, tmp_path / "out", model=files["export"], inputs=(files["small_parquet"],),
                   features="f0,f1,f2,f3", id_column="id")
    got = _read(summary)
    np.testing.assert_array_equal(got["id"], files["ids"][:SMALL])
    served = tf.saved_model.load(files["export"]).signatures["serving_default"](
        x=tf.constant(files["x"][:100]))
    np.testing.assert_allclose(got["logits"][:100], served["logits"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["classes"][:100], served["classes"].numpy())


def test_tfrecord_input_through_input_pipelines(files, tmp_path):
    x = files["x"][:500]
    tfrecord.write_shards({"x": x, "row": np.arange(500)}, str(tmp_path / "rec"), 3)
    summary = _run(files, tmp_path / "out", inputs=(str(tmp_path / "rec"),), features="x=x",
                   id_column="row", shard_size=100)
    got = _read(summary)
    # write_shards puts row i in file i % 3; keys count file by file, the id column says which row.
    assert sorted(got["row"].tolist()) == list(range(500))
    assert summary["shards"] == 6  # 167, 167 and 166 records: no shard spans two files
    model = keras.saving.load_model(files["keras"])
    np.testing.assert_allclose(got["output_0"], model.predict(x[got["row"]], verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_tfrecord_records_go_as_they_are_to_a_parsing_serving_signature(files, tmp_path):
    x = files["x"][:300]
    tfrecord.write_shards({"x": x}, str(tmp_path / "rec"), 2)
    summary = _run(files, tmp_path / "out", model=files["parsing_export"],
                   inputs=(str(tmp_path / "rec" / "data.json"),), shard_size=100)
    got = _read(summary)
    rows = np.concatenate([np.arange(0, 300, 2), np.arange(1, 300, 2)])  # file 0, then file 1
    served = tf.saved_model.load(files["export"]).signatures["serving_default"](x=tf.constant(x[rows]))
    np.testing.assert_array_equal(got["key"], np.arange(300))
    np.testing.assert_allclose(got["logits"], served["logits"].numpy(), rtol=1e-5, atol=1e-6)
    tfrecord.write_shards({"x": x, "row": np.arange(300)}, str(tmp_path / "ids"), 2)
    with_ids = _read(_run(files, tmp_path / "with_ids", model=files["parsing_export"],
                          inputs=(str(tmp_path / "ids"),), shard_size=100, id_column="row"))
    np.testing.assert_array_equal(with_ids["row"], rows)
    np.testing.assert_allclose(with_ids["logits"], got["logits"], rtol=1e-6)


@pytest.mark.parametrize("fmt", writers.FORMATS)
def test_every_output_format_holds_every_row(files, tmp_path, fmt):
    summary = _run(files, tmp_path / "out", inputs=(files["small_parquet"],), features="f0,f1,f2,f3",
                   id_column="id", output_format=fmt, shard_size=600,
                   postprocess=predict.PostProcess(argmax=True, class_names=("a", "b", "c")))
    reference = _read(_run(files, tmp_path / "ref", output_format="numpy",
                           postprocess=predict.PostProcess(argmax=True)))
    if fmt == "tfrecord":
        spec = {"id": tf.io.FixedLenFeature([], tf.string),
                "output_0": tf.io.FixedLenFeature([3], tf.float32),
                "class_id": tf.io.FixedLenFeature([], tf.int64),
                "class_name": tf.io.FixedLenFeature([], tf.string)}
        records = tf.data.TFRecordDataset(summary["output"]).batch(NUM_ROWS + 1).map(
            lambda r: tf.io.parse_example(r, spec))
        got = {k: v.numpy() for k, v in next(iter(records)).items()}
        got["id"] = got["id"].astype(str)
        got["class_name"] = got["class_name"].astype(str)
    else:
        got = writers.read(summary["output"], fmt)
    np.testing.assert_array_equal(got["id"].astype(str), files["ids"][:SMALL])
    np.testing.assert_array_equal(got["class_id"], reference["class_id"])
    np.testing.assert_array_equal(got["class_name"].astype(str),
                                  np.array(["a", "b", "c"])[reference["class_id"]])
    scores = (np.stack([got[f"output_0_{i}"] for i in range(3)], 1) if fmt == "csv"
              else np.asarray(got["output_0"].tolist()))
    np.testing.assert_allclose(scores, reference["output_0"], rtol=1e-5)


def double_first(columns):  # a user post-processing function (imported by name)
    return {"key": columns["key"], "doubled": columns["output_0"][:, 0] * 2}


def test_post_processing_top_k_argmax_threshold_and_a_user_function(files, tmp_path):
    post = predict.PostProcess(argmax=True, top_k=2, class_names=("a", "b", "c"), threshold=0.4)
    got = _read(_run(files, tmp_path / "out", postprocess=post))
    scores = got["output_0"]
    np.testing.assert_array_equal(got["class_id"], scores.argmax(1))
    np.testing.assert_array_equal(got["top_k_ids"], np.argsort(-scores, 1)[:, :2])
    np.testing.assert_array_equal(got["top_k_scores"], np.sort(scores, 1)[:, ::-1][:, :2])
    np.testing.assert_array_equal(got["top_k_names"], np.array(["a", "b", "c"])[got["top_k_ids"]])
    np.testing.assert_array_equal(got["label"], (scores >= 0.4).astype(np.int64))
    custom = _read(_run(files, tmp_path / "fn", postprocess=predict.PostProcess(
        function="tests.test_predict:double_first")))
    assert sorted(custom) == ["doubled", "key"]
    np.testing.assert_allclose(custom["doubled"], scores[:, 0] * 2)
    dropped = _read(_run(files, tmp_path / "drop", postprocess=predict.PostProcess(
        argmax=True, keep_outputs=False)))
    assert sorted(dropped) == ["class_id", "key"]


def test_manifest_instead_of_a_merge(files, tmp_path):
    summary = _run(files, tmp_path / "out", merge=False, output_format="parquet")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert summary["output"].endswith("manifest.json") and manifest["rows"] == SMALL
    keys = np.concatenate([writers.read(str(tmp_path / "out" / p["path"]), "parquet")["key"]
                           for p in manifest["parts"]])
    np.testing.assert_array_equal(keys, np.arange(SMALL))
    assert [p["first_key"] for p in manifest["parts"]] == list(range(0, SMALL, SHARD))


# --- resume and the run manifest ------------------------------------------------------------------


def test_rerun_skips_finished_shards_and_rescores_a_missing_one(files, tmp_path):
    out = tmp_path / "out"
    first = _read(_run(files, out))
    again = _run(files, out)
    assert again["shards_skipped"] == 3 and again["shards_written"] == 0 and again["resumed"]
    os.remove(store.shard_path(str(out), 1, 3))
    (out / "shards" / ".shard-00001-of-00003.npz.tmp-stale").write_bytes(b"half a file")
    third = _run(files, out)
    assert third["shards_skipped"] == 2 and third["shards_written"] == 1
    assert not list((out / "shards").glob(".*tmp*"))
    np.testing.assert_array_equal(_read(third)["output_0"], first["output_0"])


@pytest.mark.parametrize("change", [dict(batch_size=32), dict(shard_size=500),
                                    dict(output_format="csv"), dict(model="export")])
def test_other_arguments_against_an_existing_output_dir_are_an_error(files, tmp_path, change):
    out = tmp_path / "out"
    _run(files, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if change.get("model") == "export":
        change = dict(model=files["export"], features="x=x")
    with pytest.raises(predict.PredictError, match="holds a run with different arguments"):
        _run(files, out, **change)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def _worker(rank, count):
    return cluster_lib.resolve({"cluster": {"worker": [f"localhost:{1000 + i}" for i in range(count)]},
                                "task": {"type": "worker", "index": rank}})


def test_more_workers_than_shards_and_a_rerun_on_another_worker_count(files, tmp_path):
    """Five workers run one after another in this process (the chief last): 3 shards, 2 idle."""
    out = tmp_path / "out"
    for rank in (4, 3, 2, 1):
        stats = predict.run(_options(files, out), cluster=_worker(rank, 5))
        assert stats["shards_written"] == (1 if rank < 3 else 0)
    summary = predict.run(_options(files, out), cluster=_worker(0, 5))
    assert summary["num_workers"] == 5 and summary["shards_written"] == 3
    np.testing.assert_array_equal(_read(summary)["key"], np.arange(SMALL))
    alone = _run(files, out)  # the shard split does not depend on the number of workers
    assert alone["shards_skipped"] == 3 and alone["shards_written"] == 0


def test_the_chief_gives_up_waiting_after_wait_timeout(files, tmp_path):
    with pytest.raises(predict.PredictError, match="Timed out after 1s waiting for all 3 shards"):
        predict.run(_options(files, tmp_path / "out", wait_timeout=1.0), cluster=_worker(0, 2))
    assert len(store.completed_shards(str(tmp_path / "out"), 3)) == 2  # the chief's own are kept


# --- bad input: one line, before any work, nothing lost -------------------------------------------


def test_model_errors(files, tmp_path):
    with pytest.raises(predict.PredictError, match="does not exist"):
        _run(files, tmp_path / "a", model=str(tmp_path / "missing.keras"))
    assert not (tmp_path / "a").exists()  # failed before creating anything
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(predict.PredictError, match="Cannot load the model .*broken.keras"):
        _run(files, tmp_path / "b", model=str(broken))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(predict.PredictError, match="no model.keras, saved_model.pb"):
        _run(files, tmp_path / "c", model=str(tmp_path / "empty_dir"))
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(predict.PredictError, match="not a .keras model"):
        _run(files, tmp_path / "d", model=str(tmp_path / "weights.h5"))


def test_feature_dtype_and_shape_mismatches_name_the_feature(files, tmp_path):
    np.save(tmp_path / "five.npy", np.zeros((10, 5), np.float32))
    with pytest.raises(predict.PredictError,
                       match=r"Feature 'x' .* expected float32 \[4\], received float32 \[5\]"):
        _run(files, tmp_path / "a", inputs=(str(tmp_path / "five.npy"),))
    np.save(tmp_path / "text.npy", np.array([["a"] * 4] * 10))
    with pytest.raises(predict.PredictError,
                       match=r"Feature 'x' .* expected float32 \[4\], received string \[4\]"):
        _run(files, tmp_path / "b", inputs=(str(tmp_path / "text.npy"),))
    np.savez(tmp_path / "two.npz", a=np.zeros((10, 4), np.float32), b=np.zeros((10, 4), np.float32))
    with pytest.raises(predict.PredictError, match=r"Feature 'x' \(expected float32 \[4\]\) is not "
                       r"in the input \(columns: \['a', 'b'\]\)"):
        _run(files, tmp_path / "c", inputs=(str(tmp_path / "two.npz"),))
    with pytest.raises(predict.PredictError, match="'nope' is not a column"):
        _run(files, tmp_path / "d", inputs=(files["small_parquet"],), features="x=nope")
    with pytest.raises(predict.PredictError, match="'y' is not an input of the model"):
        _run(files, tmp_path / "e", inputs=(files["small_parquet"],), features="y=f0")
    with pytest.raises(predict.PredictError, match="id_column='nope'"):
        _run(files, tmp_path / "f", id_column="nope")
    np.save(tmp_path / "ints.npy", np.arange(40).reshape(10, 4))  # integers cast to float: fine
    assert _run(files, tmp_path / "g", inputs=(str(tmp_path / "ints.npy"),))["rows"] == 10


def test_input_errors(files, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(predict.PredictError, match="has no records"):
        _run(files, tmp_path / "a", inputs=(str(tmp_path / "empty.npy"),))
    (tmp_path / "header.csv").write_text("f0,f1,f2,f3\n")
    with pytest.raises(predict.PredictError, match="has no records"):
        _run(files, tmp_path / "b", inputs=(str(tmp_path / "header.csv"),))
    with pytest.raises(predict.PredictError, match="matches no file"):
        _run(files, tmp_path / "c", inputs=(str(tmp_path / "nothing*.npy"),))
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(predict.PredictError, match="Cannot tell the input format"):
        _run(files, tmp_path / "d", inputs=(str(tmp_path / "data.txt"),))
    (tmp_path / "holes.csv").write_text("f0,f1,f2,f3\n1,2,3,4\n1,,3,4\n")
    with pytest.raises(predict.PredictError, match="'f1' .* 1 missing value"):
        _run(files, tmp_path / "e", inputs=(str(tmp_path / "holes.csv"),))


def test_output_dir_that_cannot_be_written(files, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(predict.PredictError, match="output_dir=.*a_file/out.*not writable"):
        _run(files, tmp_path / "a_file" / "out")


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), "`batch_size`"), (dict(shard_size=-1), "`shard_size`"),
    (dict(output_format="xlsx"), "`output_format`"), (dict(input_format="avro"), "`input_format`"),
    (dict(strategy="multi_worker_mirrored"), "`strategy`"), (dict(wait_timeout=0), "`wait_timeout`"),
])
def test_option_errors(files, tmp_path, kwargs, match):
    with pytest.raises(predict.PredictError, match=match):
        _options(files, tmp_path, **kwargs)


@pytest.mark.parametrize("post,kwargs,match", [
    (predict.PostProcess(top_k=4), {}, "top_k=4, but output 'output_0' has only 3 classes"),
    (predict.PostProcess(argmax=True, class_names=("a", "b")), {}, "2 names for output"),
    (predict.PostProcess(function="no_such_module:f"), {}, "cannot be loaded"),
    (predict.PostProcess(function="nocolon"), {}, 'Pass "module:function"'),
    (predict.PostProcess(argmax=True), dict(features="x=x", model="export"), "has 2 outputs"),
    (predict.PostProcess(argmax=True, output="probs"), {}, "output='probs'"),
])
def test_post_processing_errors_before_any_work(files, tmp_path, post, kwargs, match):
    if kwargs.get("model") == "export":
        kwargs["model"] = files["export"]
    with pytest.raises(predict.PredictError, match=match):
        _run(files, tmp_path / "out", postprocess=post, **kwargs)
    assert not list((tmp_path / "out" / "shards").glob("*"))


def test_a_user_function_returning_the_wrong_shape(files, tmp_path):
    with pytest.raises(predict.PredictError, match="needs one value per record"):
        _run(files, tmp_path / "out", postprocess=predict.PostProcess(
            function="tests.test_predict:bad_function"))


def bad_function(columns):
    return {"x": np.zeros(3)}


def test_ps_and_evaluator_tasks_are_refused(files, tmp_path):
    jobs = {"chief": ["localhost:1"], "worker": ["localhost:2"], "ps": ["localhost:3"]}
    for task in ("ps", "evaluator"):
        config = {"cluster": jobs, "task": {"type": task, "index": 0}}
        with pytest.raises(predict.PredictError, match=f"this task is {task}:0"):
            predict.run(_options(files, tmp_path), cluster=cluster_lib.resolve(config))


def test_the_binary_prints_one_error_line_and_exits_2(files, tmp_path):
    env = multiworker.subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")  # tfdist's own quiet level: TensorFlow's start-up noise dropped
    result = subprocess.run(
        [sys.executable, "-m", "tfdist.predict_main", f"--model={tmp_path / 'nope.keras'}",
         f"--input={files['npy']}", f"--output_dir={tmp_path / 'out'}"],
        capture_output=True, text=True, timeout=300, env=env,
        cwd=multiworker.REPO_ROOT)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"tfdist-predict: error: Invalid value for argument `model`. Received: "
                     f"model='{tmp_path / 'nope.keras'}', which does not exist. Pass a .keras file, "
                     "a SavedModel directory or a tfdist-train model_dir (e.g. runs/default after "
                     "`make train`)."], result.stderr


def test_progress_line_and_the_summary_text():
    import io

    stream = io.StringIO()
    bar = progress.Progress(1000, 200, stream=stream, interval=0)
    bar.update(600, force=True)
    assert "600/1000 rows  60.0%" in stream.getvalue() and "rows/s ETA" in stream.getvalue()
    summary = {"rows": 10, "output": "o", "shards": 2, "shards_written": 1, "shards_skipped": 1,
               "rows_per_second": 5.0, "wall_seconds": 2.0, "merge_seconds": 0.1,
               "input_seconds": 0.2, "workers": [dict(rank=0, rows_scored=5, loop_seconds=1.0,
                                                      input_seconds=0.1, inference_seconds=0.8,
                                                      write_seconds=0.05, startup_seconds=3.0,
                                                      shards_written=1, shards_skipped=1)]}
    assert "1 skipped as already done" in progress.format_summary(summary)


def test_feature_flag_parsing():
    assert features.parse_features("a=b, c=d") == ({"a": "b", "c": "d"}, ())
    assert features.parse_features("f0,f1") == ({}, ("f0", "f1"))
    with pytest.raises(predict.PredictError, match="not both"):
        features.parse_features("a=b,c")


# --- several workers, each mirrored over 2 logical CPUs -------------------------------------------


def _binary(files, out, *extra):
    return ["python", "-m", "tfdist.predict_main", f"--output_dir={out}", f"--batch_size={BATCH}",
            f"--shard_size={SHARD}", "--virtual_cpus=2", "--output_format=numpy", "--noprogress",
            *extra]


@pytest.mark.multiworker
def test_two_workers_equal_one_process_for_keras_and_estimator_exports_after_a_kill(files, tmp_path):
    """kill -9 of worker 1 after its 2nd shard; the rerun skips exactly the shards on disk.

    The rerun shares its launch with the Estimator-style export's run (one TensorFlow start-up).
    """
    keras_ref = _read(_run(files, tmp_path / "single", inputs=(files["npy"],)))
    est_args = dict(model=files["export"], inputs=(files["parquet"],), features="f0,f1,f2,f3",
                    id_column="id")
    est_ref = _read(_run(files, tmp_path / "single_est", **est_args))
    out = tmp_path / "mw"
    argv = _binary(files, out, f"--model={files['keras']}", f"--input={files['npy']}")
    killed = multiworker.run_workers(argv, 2, check=False, timeout=180, failure_grace=1.0,
                                     env={faults.FAULT_VAR: "kill_after_shards:1:2"})
    assert killed[1].returncode == -9, killed[1].output[-2000:]
    done = store.completed_shards(str(out), 11)
    assert len([i for i in done if i % 2 == 1]) == 2  # worker 1 died right after its 2nd shard
    assert not (out / "predictions.npz").exists()

    common = dict(batch_size=BATCH, shard_size=SHARD, output_format="numpy", progress=False,
                  strategy="mirrored", virtual_cpus=2)
    specs = [dict(model=files["keras"], inputs=[files["npy"]], output_dir=str(out), **common),
             dict(est_args, inputs=[files["parquet"]], output_dir=str(tmp_path / "mw_est"), **common)]
    (tmp_path / "spec.json").write_text(json.dumps(specs))
    multiworker.run_workers(["python", "-m", "tests.workers.predict_job",
                             str(tmp_path / "spec.json")], 2, timeout=180)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_skipped"] == len(done) and summary["shards_written"] == 11 - len(done)
    assert summary["num_workers"] == 2 and summary["rows"] == NUM_ROWS
    got = writers.read(str(out / "predictions.npz"), "numpy")
    np.testing.assert_array_equal(got["key"], np.arange(NUM_ROWS))  # every row once, in order
    np.testing.assert_array_equal(got["output_0"], keras_ref["output_0"])
    assert all("MirroredStrategy: 2 replica(s)" in w["strategy"] for w in summary["workers"])

    got = writers.read(str(tmp_path / "mw_est" / "predictions.npz"), "numpy")
    np.testing.assert_array_equal(got["id"], files["ids"])
    for name in ("logits", "classes"):
        np.testing.assert_array_equal(got[name], est_ref[name])


# --- the remaining error paths, one by one ----------------------------------------------------------


def test_reader_errors(tmp_path):
    from tfdist.predict import readers

    np.save(tmp_path / "scalar.npy", np.float32(1))
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    pq.write_table(pa.table({"v": [[1.0, 2.0], [1.0]]}), tmp_path / "ragged.parquet")
    np.savez(tmp_path / "uneven.npz", a=np.zeros(3), b=np.zeros(4))
    np.savez(tmp_path / "one.npz", a=np.zeros(3))
    np.savez(tmp_path / "other.npz", b=np.zeros(3))
    cases = [
        (["scalar.npy"], "holds a scalar"), (["bad.npy"], "Cannot read the NumPy input"),
        (["bad.parquet"], "Cannot read the Parquet input"),
        (["ragged.parquet"], "'v' .* lists of different lengths"),
        (["uneven.npz"], "columns differ in length"),
        (["one.npz", "other.npz"], r"has columns \['b'\], but .*one.npz' has \['a'\]"),
    ]
    for names, match in cases:
        with pytest.raises(predict.PredictError, match=match):
            readers.open_source([str(tmp_path / n) for n in names])
    with pytest.raises(predict.PredictError, match="`input`. Received: input=\\[\\]"):
        readers.open_source([])
    with pytest.raises(predict.PredictError, match="`input_format`"):
        readers.open_source([str(tmp_path / "one.npz")], "xlsx")


def test_tfrecord_description_errors(tmp_path):
    from tfdist.predict import readers

    tfrecord.write_shards({"x": np.zeros((4, 2), np.float32)}, str(tmp_path / "a"), 2)
    tfrecord.write_shards({"x": np.zeros((4, 2), np.float32)}, str(tmp_path / "a"), 2, prefix="b")
    with pytest.raises(predict.PredictError, match="a directory with 2 .json description"):
        readers.open_source([str(tmp_path / "a")], "tfrecord")
    with pytest.raises(predict.PredictError, match="takes one description"):
        readers.open_source([str(tmp_path / "a" / "data.json"), str(tmp_path / "a" / "b.json")],
                            "tfrecord")
    os.remove(tmp_path / "a" / "b-00001-of-00002.tfrecord")
    with pytest.raises(predict.PredictError, match="lists .*b-00001-of-00002.tfrecord.*does not exist"):
        readers.open_source([str(tmp_path / "a" / "b.json")])
    (tmp_path / "a" / "data.json").write_text("{")
    with pytest.raises(predict.PredictError, match="not a valid description"):
        readers.open_source([str(tmp_path / "a" / "data.json")])


def test_feature_stacking_needs_scalar_columns():
    from tfdist.predict.readers import Column

    columns = {"a": Column(tf.float32, ()), "b": Column(tf.float32, (2,))}
    with pytest.raises(predict.PredictError, match="column 'b' has shape \\[2\\]; only scalar"):
        features.plan_feeds({"x": tf.TensorSpec([None, 2], tf.float32)}, columns, features="a,b")


def test_post_processing_checks_and_user_function_results():
    from tfdist.predict import postprocess

    with pytest.raises(predict.PredictError, match="top_k=-1"):
        predict.PostProcess(top_k=-1).check({"o": [3]})
    with pytest.raises(predict.PredictError, match="need an output of shape \\[classes\\]"):
        predict.PostProcess(argmax=True).check({"o": [2, 3]})
    with pytest.raises(predict.PredictError, match="a float, not a function"):
        predict.PostProcess(function="math:pi").check({"o": [3]})
    with pytest.raises(predict.PredictError, match="returned a list; it must return a dict"):
        postprocess._call(lambda columns: [1], {"key": np.arange(2)}, "m:f")


def test_option_and_path_errors(files, tmp_path):
    from tfdist.predict import locate

    with pytest.raises(predict.PredictError, match="`virtual_cpus`"):
        _options(files, tmp_path, virtual_cpus=0)
    with pytest.raises(predict.PredictError, match="`output_dir`. Received: output_dir=''"):
        predict.PredictOptions(model="m", inputs=("x",), output_dir="")
    with pytest.raises(predict.PredictError, match="model=''"):
        locate.resolve_path("")


def test_a_corrupt_run_manifest_or_shard_is_reported(files, tmp_path):
    out = tmp_path / "out"
    _run(files, out)
    (out / "run.json").write_text("{")
    with pytest.raises(predict.PredictError, match="run.json is unreadable"):
        _run(files, out)
    out2 = tmp_path / "out2"
    _run(files, out2)
    keys, outputs = store.read_shard(store.shard_path(str(out2), 1, 3))
    store.write_shard(store.shard_path(str(out2), 1, 3), keys[:-1], {k: v[:-1] for k, v in outputs.items()})
    os.remove(out2 / "predictions.npz")
    with pytest.raises(predict.PredictError, match="Shard 1 holds keys 1000..1998 \\(999 rows\\)"):
        _run(files, out2)


def test_class_names_flags(tmp_path):
    from absl import flags as absl_flags

    from tfdist import predict_main

    def options(*extra):
        values = absl_flags.FlagValues()
        predict_main.define_flags(values)
        values(["prog", "--model=m", "--input=x.npy", "--output_dir=o", *extra])
        return predict_main.to_options(values)

    (tmp_path / "names.txt").write_text("a\nb\n\nc\n")
    names = f"--class_names_file={tmp_path / 'names.txt'}"
    assert options(names).postprocess.class_names == ("a", "b", "c")
    with pytest.raises(predict.PredictError, match="not both"):
        options("--class_names=a,b", names)
    with pytest.raises(predict.PredictError, match="class_names_file=.*missing.txt"):
        options(f"--class_names_file={tmp_path / 'missing.txt'}")


def test_console_script_and_pyarrow_are_declared():
    import configparser

    from tfdist import predict_main

    config = configparser.ConfigParser()
    config.read(multiworker.REPO_ROOT / "setup.cfg")
    assert "tfdist-predict = tfdist.predict_main:run" in config["options.entry_points"]["console_scripts"]
    assert "pyarrow" in config["options"]["install_requires"].split()
    assert callable(predict_main.run)
