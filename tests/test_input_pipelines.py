"""Tests for input_pipelines: digits, synthetic, TFRecord shards and TFDS, all offline.

Sharding checks read every input pipeline's share through `tfdist.data` (or the TFDS source's
own slicing) and assert the shares are disjoint and together complete.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipelines
from input_pipelines import digits, registry, synthetic, tfrecord
from input_pipelines import tfds as tfds_pipeline
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist import data


def _context(n, i):
    return tf.distribute.InputContext(num_input_pipelines=n, input_pipeline_id=i,
                                      num_replicas_in_sync=n)


def _ids(spec, n):
    """Each pipeline's example ids (first feature) when `spec` is read by `n` pipelines."""
    return [sorted(int(np.ravel(x)[0]) for x, _ in data.make_dataset(spec, _context(n, i)).unbatch()
                   .as_numpy_iterator()) for i in range(n)]


def _assert_disjoint_and_complete(shares, expected):
    flat = [i for share in shares for i in share]
    assert len(flat) == len(set(flat)), "an example was read by two pipelines"
    assert sorted(flat) == sorted(expected), "some examples were read by no pipeline"


# --- digits ---------------------------------------------------------------------------------


def test_digits_split_is_fixed_scaled_and_covers_every_class():
    (x_train, y_train), (x_test, y_test) = digits.load_arrays()
    assert x_train.shape == (1437, 8, 8, 1) and x_test.shape == (360, 8, 8, 1)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    assert set(y_train) == set(y_test) == set(range(10))
    (x_again, y_again), _ = digits.load_arrays()
    np.testing.assert_array_equal(x_train, x_again)
    np.testing.assert_array_equal(y_train, y_again)
    sources = digits.sources()
    assert (sources.input_shape, sources.num_classes, sources.train_examples) == ((8, 8, 1), 10, 1437)
    x, y = next(iter(data.make_dataset(sources.train_spec(32))))
    assert x.shape == (32, 8, 8, 1) and y.shape == (32,)


def test_digits_train_examples_shard_by_example_across_two_workers():
    sources = digits.sources()
    # Index each example by its position so shares can be compared.
    spec = data.DataSpec(source=tf.data.Dataset.range(sources.train_examples).map(lambda i: (i, i)),
                         global_batch_size=2, training=False)
    _assert_disjoint_and_complete(_ids(spec, 2), range(1437))


# --- synthetic ------------------------------------------------------------------------------


def test_synthetic_data_is_shaped_reproducible_and_any_size():
    a = synthetic.sources((4, 5, 3), num_classes=7, size=10**9, seed=3)
    b = synthetic.sources((4, 5, 3), num_classes=7, size=10**9, seed=3)
    first = next(iter(data.make_dataset(a.train_spec(8, seed=1))))
    again = next(iter(data.make_dataset(b.train_spec(8, seed=1))))
    assert first[0].shape == (8, 4, 5, 3) and first[0].dtype == tf.float32
    np.testing.assert_array_equal(first[0], again[0])
    assert 0 <= int(tf.reduce_min(first[1])) and int(tf.reduce_max(first[1])) < 7
    x_eval, _ = next(iter(data.make_dataset(a.eval_spec(8))))
    assert not np.allclose(x_eval, first[0])
    tokens = synthetic.sources((16,), num_classes=2, vocab_size=100)
    x, _ = next(iter(data.make_dataset(tokens.train_spec(4))))
    assert x.dtype == tf.int32 and int(tf.reduce_max(x)) < 100 and tokens.vocab_size == 100
    with pytest.raises(ValueError, match="shape"):
        synthetic.sources((0, 3))


# --- TFRecord -------------------------------------------------------------------------------


def _write_ids(directory, n, num_shards):
    ids = np.arange(n, dtype=np.int64)
    return tfrecord.write_shards((np.stack([ids, -ids], 1), ids % 5), str(directory), num_shards,
                                 prefix="ids")


@pytest.mark.parametrize("parse_as", ["map_fn", "batch_map_fn"])
@pytest.mark.parametrize("num_shards, policy", [(4, "file"), (1, "data")])
def test_tfrecord_shards_split_disjoint_and_complete_over_two_pipelines(tmp_path, num_shards, policy,
                                                                        parse_as):
    files = _write_ids(tmp_path, 103, num_shards)
    meta = tfrecord.read_meta(str(tmp_path), "ids")
    assert meta["num_examples"] == 103 and meta["num_classes"] == 5 and len(files) == num_shards
    spec = data.DataSpec(source=tfrecord.file_pattern(str(tmp_path), "ids"), global_batch_size=2,
                         training=False, **{parse_as: tfrecord.parse_fn(meta)})
    plans = [data.plan_sharding(spec, _context(2, i)) for i in range(2)]
    assert {p.policy for p in plans} == {policy}
    if policy == "file":
        _assert_disjoint_and_complete([p.files for p in plans], files)
    _assert_disjoint_and_complete(_ids(spec, 2), range(103))


def test_tfrecord_round_trip_keeps_values_dtypes_and_structure(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 3, 2)).astype(np.float32)
    y = np.arange(10, dtype=np.int32) % 4
    tfrecord.write_shards((x, y), str(tmp_path), 3, prefix="t")
    meta = tfrecord.read_meta(str(tmp_path), "t")
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(tfrecord.file_pattern(str(tmp_path), "t"))))
    parsed = sorted(((xx.tolist(), int(yy)) for xx, yy in records.map(tfrecord.parse_fn(meta))
                     .as_numpy_iterator()), key=lambda r: r[0])
    assert parsed == sorted(((a.tolist(), int(b)) for a, b in zip(x, y)), key=lambda r: r[0])
    tfrecord.write_shards(tf.data.Dataset.from_tensor_slices({"a": y, "label": y}), str(tmp_path), 2,
                          prefix="d")
    meta = tfrecord.read_meta(str(tmp_path), "d")
    assert meta["structure"] == "dict" and meta["keys"] == ["a", "label"] and meta["num_classes"] == 4
    with pytest.raises(FileNotFoundError, match="write_shards"):
        tfrecord.read_meta(str(tmp_path), "missing")
    with pytest.raises(ValueError, match="num_shards"):
        tfrecord.write_shards((x, y), str(tmp_path), 0)


def _read(directory, prefix, fn, batch):
    """Every record of `prefix`, parsed by `fn` on batches of `batch` records (`None`: one by one)."""
    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(tfrecord.file_pattern(directory, prefix))))
    return list((records if batch is None else records.batch(batch)).map(fn))


def test_tfrecord_stores_fixed_length_lists_and_parses_batches_exactly(tmp_path):
    rng = np.random.default_rng(1)
    columns = {
        "f32": rng.normal(size=(7, 3, 2)).astype(np.float32),
        "f16": rng.normal(size=(7, 2)).astype(np.float16),
        "f64": rng.normal(size=(7, 2)) * 1e-300,  # needs raw bytes: not a float32
        "u8": rng.integers(0, 256, size=(7, 2, 2), dtype=np.uint8),
        "i64": np.array([2**62, -(2**62), 0, 1, -1, 5, 6], np.int64).reshape(7, 1),
        "u64": np.array([2**64 - 1, 0, 1, 2, 3, 4, 2**63], np.uint64),
        "flag": np.arange(7) % 2 == 0,
        "word": np.array([b"a", b"", b"ccc", b"d", b"e", b"f", b"\x00g"]),
        "label": np.arange(7, dtype=np.int32) % 3,
    }
    tfrecord.write_shards(columns, str(tmp_path), 2, prefix="all")
    meta = tfrecord.read_meta(str(tmp_path), "all")
    assert meta["format"] == tfrecord.FORMAT_VERSION and meta["num_classes"] == 3
    assert dict(zip(meta["keys"], meta["encodings"])) == {
        "f32": "float", "f16": "float", "f64": "raw", "u8": "int64", "i64": "int64", "u64": "raw",
        "flag": "int64", "word": "bytes", "label": "int64"}
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(
        tf.io.gfile.glob(tfrecord.file_pattern(str(tmp_path), "all"))))).numpy())
    assert list(example.features.feature["f32"].float_list.value) == pytest.approx(
        columns["f32"][0].ravel().tolist())
    batches = _read(str(tmp_path), "all", tfrecord.parse_fn(meta), batch=3)
    assert [int(b["label"].shape[0]) for b in batches] == [3, 3, 1]
    for key, expected in columns.items():
        parsed = np.concatenate([b[key].numpy() for b in batches])
        order = [0, 2, 4, 6, 1, 3, 5]  # example i is in file i % 2
        assert batches[0][key].dtype == tf.dtypes.as_dtype(expected.dtype), key
        np.testing.assert_array_equal(parsed, expected[order], err_msg=key)
    one_by_one = _read(str(tmp_path), "all", tfrecord.parse_fn(meta), batch=None)
    assert one_by_one[0]["u8"].shape == (2, 2) and one_by_one[0]["word"].shape == ()


def test_tfrecord_scales_uint8_images_per_batch(tmp_path):
    x = np.random.default_rng(2).integers(0, 256, size=(6, 4, 4, 1), dtype=np.uint8)
    y = np.arange(6, dtype=np.int64) % 2
    tfrecord.write_shards((x, y), str(tmp_path), 1, prefix="img")
    meta = tfrecord.read_meta(str(tmp_path), "img")
    (images, labels), = _read(str(tmp_path), "img", tfrecord.parse_fn(meta, scale_uint8=True), 6)
    assert images.dtype == tf.float32 and labels.dtype == tf.int64 and images.shape == (6, 4, 4, 1)
    np.testing.assert_allclose(images.numpy(), x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), y)
    (raw, _), = _read(str(tmp_path), "img", tfrecord.parse_fn(meta), 6)
    assert raw.dtype == tf.uint8
    np.testing.assert_array_equal(raw.numpy(), x)
    # write_sources applies a batch_map_fn too: records in, parsed (and scaled) examples out.
    records = tf.data.TFRecordDataset(tf.io.gfile.glob(tfrecord.file_pattern(str(tmp_path), "img")))
    tfrecord.write_sources(input_pipelines.DatasetSources(
        name="img", train=records, eval=records, input_shape=(4, 4, 1), num_classes=2,
        batch_map_fn=tfrecord.parse_fn(meta, scale_uint8=True)), str(tmp_path / "again"), 1)
    (again, labels), = _read(str(tmp_path / "again"), "train",
                             tfrecord.parse_fn(tfrecord.read_meta(str(tmp_path / "again"), "train")), 6)
    np.testing.assert_array_equal(again.numpy(), images.numpy())
    np.testing.assert_array_equal(labels.numpy(), y)


def test_tfrecord_writer_rejects_what_fixed_length_lists_cannot_hold(tmp_path):
    ragged = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1, 2], [3]])).map(
        lambda r: {"x": r, "label": tf.constant(0)})
    with pytest.raises(ValueError, match=r"example 1 has 'x' of shape \(1,\), earlier ones \(2,\)"):
        tfrecord.write_shards(ragged, str(tmp_path), 1)
    with pytest.raises(ValueError, match="component 'x' of dtype qint8"):
        tfrecord.write_shards(tf.data.Dataset.from_tensors(tf.zeros([2], tf.qint8)), str(tmp_path), 1)
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"at most 3 arrays \(features, labels, weights\); received 4"):
        tfrecord.write_shards((x, x, x, x), str(tmp_path), 1)
    with pytest.raises(ValueError, match="write_shards received no examples"):
        tfrecord.write_shards((x[:0], x[:0]), str(tmp_path), 1)


def test_tfrecord_write_sources_refuses_file_sources(tmp_path):
    tfrecord.write_sources(digits.sources(), str(tmp_path / "a"), 1)
    from_files = registry.load(f"tfrecord:{tmp_path / 'a'}")
    with pytest.raises(ValueError, match="converts in-memory, synthetic and TFDS sources, not files"):
        tfrecord.write_sources(from_files, str(tmp_path / "b"), 1)


def _write_format_1(directory, prefix, x, y):
    """Files as `write_shards` wrote them before format 2: serialized tensors, no "format"."""
    with tf.io.TFRecordWriter(str(directory / f"{prefix}-00000-of-00001.tfrecord")) as w:
        for xx, yy in zip(x, y):
            feature = {k: tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[tf.io.serialize_tensor(v).numpy()])) for k, v in (("x", xx), ("y", yy))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    meta = {"structure": "tuple", "keys": ["x", "y"], "dtypes": [x.dtype.name, y.dtype.name],
            "shapes": [list(x.shape[1:]), []], "num_examples": len(x), "num_shards": 1,
            "files": [f"{prefix}-00000-of-00001.tfrecord"], "num_classes": int(y.max()) + 1}
    (directory / f"{prefix}.json").write_text(json.dumps(meta))


def test_tfrecord_format_1_files_are_still_read_one_record_at_a_time(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, size=(8, 2, 2, 1), dtype=np.uint8)
    y = np.arange(8, dtype=np.int32) % 2
    for prefix in ("train", "eval"):
        _write_format_1(tmp_path, prefix, x, y)
    sources = tfrecord.sources(str(tmp_path))
    assert sources.batch_map_fn is None and sources.map_fn is not None
    images, labels = next(iter(data.make_dataset(sources.eval_spec(8))))
    np.testing.assert_allclose(images.numpy(), x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), y)


@pytest.mark.parametrize("text, message", [
    ('{"format": 3}', "has format 3; this version reads formats 1 and 2"),
    ("{not json", "is not a valid description \\(JSON error"),
    ("[1, 2]", "found a list, not an object"),
    ('{"format": 2, "keys": ["x"]}', "\\(format 2\\) lacks structure, dtypes, shapes"),
])
def test_tfrecord_bad_description_names_the_file_and_how_to_rewrite(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        tfrecord.read_meta(str(tmp_path), "bad")
    assert str(tmp_path / "bad.json") in str(e.value)
    assert "python -m input_pipelines.tfrecord" in str(e.value)


def test_tfrecord_sources_reject_train_and_eval_written_differently(tmp_path):
    x, y = np.zeros((4, 2), np.float32), np.arange(4, dtype=np.int32)
    tfrecord.write_shards((x, y), str(tmp_path), 1, prefix="train")
    _write_format_1(tmp_path, "eval", x, y)
    with pytest.raises(ValueError, match="differ in format \\(2 vs 1\\)"):
        tfrecord.sources(str(tmp_path))


def test_converted_digits_train_from_files(tmp_path, cpus):
    assert tfrecord.main(["--dataset", "digits", "--out", str(tmp_path), "--num_shards", "4"]) == 0
    sources = registry.load(f"tfrecord:{tmp_path}")
    assert (sources.input_shape, sources.num_classes) == ((8, 8, 1), 10)
    assert (sources.train_examples, sources.eval_examples) == (1437, 360)
    assert json.loads((tmp_path / "train.json").read_text())["num_shards"] == 4
    assert sources.map_fn is None and sources.batch_map_fn is not None  # parsed per batch
    x, y = next(iter(data.make_dataset(sources.train_spec(16))))
    assert x.shape == (16, 8, 8, 1) and x.dtype == tf.float32 and y.dtype == tf.int32
    # Every eval example comes back exactly as digits made it.
    (_, _), (x_test, y_test) = digits.load_arrays()
    read = [(xx.tobytes(), int(yy)) for xs, ys in data.make_dataset(sources.eval_spec(64))
            for xx, yy in zip(xs.numpy(), ys.numpy())]
    assert sorted(read) == sorted((xx.tobytes(), int(yy)) for xx, yy in zip(x_test, y_test))
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    batch = next(iter(data.for_fit(strategy, sources.train_spec(16))))
    assert [tuple(t.shape) for t in strategy.experimental_local_results(batch[0])] == [(8, 8, 8, 1)] * 2


# --- TFDS -----------------------------------------------------------------------------------


class TfdistIds(tfds.core.GeneratorBasedBuilder):
    """A tiny real TFDS dataset, prepared offline: example i has features [i, i]."""

    # TFDS looks for the code of a builder defined in a package with `importlib_resources`,
    # which is not installed here; as a top-level module name it skips that lookup.
    __module__ = "tfdist_test_datasets"
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(2,), dtype=np.int64),
            "label": tfds.features.ClassLabel(num_classes=3)}), supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 41), "test": self._generate_examples(100, 111)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield i, {"image": np.array([i, i], np.int64), "label": i % 3}


@pytest.fixture(scope="module")
def prepared_ids(tmp_path_factory):
    """The dataset prepared twice: with 4 files per split and with 1."""
    builders = {}
    for files in (4, 1):
        builder = TfdistIds(data_dir=str(tmp_path_factory.mktemp(f"tfds{files}")))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=files))
        builders[files] = builder
    return builders


@pytest.mark.parametrize("files, pipelines, how", [(4, 2, "files"), (4, 3, "files"),
                                                     (1, 2, "even_splits"), (4, 5, "even_splits")])
def test_tfds_slices_per_pipeline_are_disjoint_and_complete(prepared_ids, files, pipelines, how):
    builder = prepared_ids[files]
    assert tfds_pipeline.num_files(builder, "train") == files
    sources = tfds_pipeline.sources(builder)
    assert (sources.input_shape, sources.num_classes, sources.train_examples) == ((2,), 3, 41)
    for source, expected in ((sources.train, range(41)), (sources.eval, range(100, 111))):
        shares = [sorted(int(x[0]) for x, _ in source(_context(pipelines, i)).as_numpy_iterator())
                  for i in range(pipelines)]
        _assert_disjoint_and_complete(shares, expected)
        if how == "even_splits":  # example slices: sizes differ by at most one
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_tfds_source_is_self_sharding_in_the_data_layer(prepared_ids):
    sources = tfds_pipeline.sources(prepared_ids[4])
    spec = sources.eval_spec(4)
    assert data.plan_sharding(spec, _context(2, 0)).policy == "off"  # the source sliced itself
    _assert_disjoint_and_complete(_ids(spec, 2), range(100, 111))


def test_tfds_by_name_offline_with_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        sources = input_pipelines.load("tfds:mnist")
        assert (sources.input_shape, sources.num_classes, sources.name) == ((28, 28, 1), 10, "tfds:mnist")
        x, y = next(iter(data.make_dataset(sources.train_spec(4))))
    assert x.shape == (4, 28, 28, 1) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0


def test_tfds_asks_for_one_even_split_per_pipeline_when_files_are_unknown():
    calls = []

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
        calls.append((str(split), read_config.input_context, shuffle_files))
        return tf.data.Dataset.from_tensor_slices(
            {"image": np.zeros((2, 28, 28, 1), np.uint8), "label": np.arange(2)})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        sources = tfds_pipeline.sources("mnist", eval_split="test[:50%]")
        for i in range(2):
            sources.train(_context(2, i))
        sources.eval(_context(1, 0))
    assert calls == [
        ("_EvenSplit(split='train', index=0, count=2, drop_remainder=False)", None, True),
        ("_EvenSplit(split='train', index=1, count=2, drop_remainder=False)", None, True),
        ("test[:50%]", None, False),
    ]


class _NoLabels(TfdistIds):
    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"image": tfds.features.Tensor(shape=(2,), dtype=np.int64)}))


def test_tfds_rejects_datasets_without_features_and_labels(tmp_path):
    with pytest.raises(ValueError, match="no \\(features, label\\) supervised keys"):
        tfds_pipeline.sources(_NoLabels(data_dir=str(tmp_path)))


# --- the --dataset spelling --------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("mnist", "unknown dataset 'mnist'; valid: digits, synthetic, tfds, tfrecord"),
    ("tfds", "tfds needs a name"),
    ("tfrecord:/d,foo=1", "unknown option 'foo'; valid: train_prefix, eval_prefix"),
    ("synthetic:shape=3xa", "option shape='3xa' must be dimensions joined by 'x'"),
    ("synthetic:classes=1", "option classes='1' must be an integer >= 2"),
    ("digits:extra", "unexpected 'extra'"),
])
def test_dataset_spelling_errors_are_one_line(text, message):
    with pytest.raises(ValueError, match=message) as e:
        registry.parse(text)
    assert "\n" not in str(e.value)


def test_dataset_spellings_load():
    assert registry.parse("tfds:cifar10,train_split=train[:90%],download=false") == registry.DatasetRequest(
        "tfds", "cifar10", (("train_split", "train[:90%]"), ("download", False)))
    sources = registry.load("synthetic:shape=6x4,classes=3,size=50,vocab=9", seed=1)
    assert (sources.input_shape, sources.num_classes, sources.train_examples, sources.vocab_size) == (
        (6, 4), 3, 50, 9)


def test_digits_are_scikit_learns_read_without_importing_it():
    from sklearn.datasets import load_digits

    images, target = digits.load_raw()
    expected = load_digits()
    np.testing.assert_array_equal(images, expected.images)
    np.testing.assert_array_equal(target, expected.target)
    # In a fresh process (with the tests' start-up file, as every test child has): neither
    # Keras nor the digits import scikit-learn, which costs each process ~1.5 s of CPU.
    code = ("import sys, keras; from input_pipelines import digits; digits.load_arrays(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sklearn'))")
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
