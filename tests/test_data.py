"""Tests for tfdist.data: sharding plans, per-replica batches, and real 2-worker coverage."""

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfdist import data
from tests import multiworker

NUM_EXAMPLES = 103  # odd on purpose: shards and batches do not divide evenly


def write_id_records(directory: Path, num_files: int, num_examples: int = NUM_EXAMPLES) -> str:
    """Writes `num_examples` records {"id": i} round-robin into `num_files` TFRecord files."""
    directory.mkdir(parents=True, exist_ok=True)
    writers = [
        tf.io.TFRecordWriter(str(directory / f"ids-{k:03d}.tfrecord")) for k in range(num_files)
    ]
    for i in range(num_examples):
        feature = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i]))}
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        writers[i % num_files].write(example.SerializeToString())
    for w in writers:
        w.close()
    return str(directory / "ids-*.tfrecord")


def _ctx(n: int, i: int, replicas: int | None = None) -> tf.distribute.InputContext:
    return tf.distribute.InputContext(
        num_input_pipelines=n, input_pipeline_id=i, num_replicas_in_sync=replicas or n
    )


def _ids(ds: tf.data.Dataset) -> list[int]:
    return [int(v) for batch in ds for v in np.ravel(batch.numpy())]


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(global_batch_size=0), "Received: global_batch_size=0"),
        (dict(global_batch_size=2.5), "Received: global_batch_size=2.5"),
        (dict(global_batch_size=8, sharding="rows"), "Received: sharding='rows'"),
        (dict(global_batch_size=8, shuffle_buffer=-1), "Received: shuffle_buffer=-1"),
        (dict(global_batch_size=8, sharding="file"), "sharding='file' needs file patterns"),
        (dict(global_batch_size=8, map_fn="parse"), "Received: map_fn='parse' (str)"),
        (dict(global_batch_size=8, batch_map_fn=3), "Received: batch_map_fn=3 (int)"),
    ],
)
def test_spec_rejects_bad_arguments(kwargs, message):
    with pytest.raises(data.DataConfigError, match=re.escape(message)):
        data.DataSpec(source=tf.data.Dataset.range(10), **kwargs)


def test_spec_rejects_unusable_source():
    with pytest.raises(data.DataConfigError, match="Received: int"):
        data.DataSpec(source=3, global_batch_size=8)


def test_indivisible_global_batch_names_sizes_and_fix(cpus):
    strategy = tf.distribute.MirroredStrategy(cpus(4))
    spec = data.DataSpec(source=tf.data.Dataset.range(10), global_batch_size=10)
    with pytest.raises(data.DataConfigError) as err:
        data.distribute(strategy, spec)
    assert "global_batch_size=10 does not divide evenly over 4 replicas" in str(err.value)
    assert "e.g. 8 or 12" in str(err.value)


def test_pattern_matching_nothing_is_a_clear_error(tmp_path):
    spec = data.DataSpec(source=str(tmp_path / "missing-*.tfrecord"), global_batch_size=4)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        data.make_dataset(spec)


def test_forced_file_sharding_with_too_few_files(tmp_path):
    pattern = write_id_records(tmp_path, num_files=1)
    spec = data.DataSpec(source=pattern, global_batch_size=4, sharding="file")
    with pytest.raises(data.DataConfigError, match="received 1 file\\(s\\) for 2 pipelines"):
        data.plan_sharding(spec, _ctx(2, 0))


def test_dataset_fn_must_return_a_dataset():
    spec = data.DataSpec(source=lambda ctx: [1, 2, 3], global_batch_size=2)
    with pytest.raises(data.DataConfigError, match="returned list"):
        data.make_dataset(spec)


# --- sharding plans --------------------------------------------------------------------------


def test_auto_picks_file_sharding_when_enough_files(tmp_path):
    pattern = write_id_records(tmp_path, num_files=5)
    spec = data.DataSpec(source=pattern, global_batch_size=4)
    plans = [data.plan_sharding(spec, _ctx(2, i)) for i in range(2)]
    assert {p.policy for p in plans} == {"file"}
    assert "5 files >= 2 input pipelines" in plans[0].reason
    assert set(plans[0].files).isdisjoint(plans[1].files)
    assert len(plans[0].files) + len(plans[1].files) == 5
    assert "sharding=file" in plans[0].describe()


def test_auto_falls_back_to_data_sharding_with_few_files(tmp_path):
    pattern = write_id_records(tmp_path, num_files=1)
    spec = data.DataSpec(source=pattern, global_batch_size=4)
    plan = data.plan_sharding(spec, _ctx(2, 1))
    assert plan.policy == "data"
    assert "only 1 file(s) for 2 input pipelines" in plan.reason


def test_single_pipeline_does_not_shard():
    spec = data.DataSpec(source=tf.data.Dataset.range(8), global_batch_size=4)
    assert data.plan_sharding(spec).policy == "off"


def test_dataset_fn_shards_itself_unless_told():
    spec = data.DataSpec(source=lambda ctx: tf.data.Dataset.range(8), global_batch_size=4)
    assert data.plan_sharding(spec, _ctx(2, 0)).policy == "off"
    forced = data.DataSpec(
        source=lambda ctx: tf.data.Dataset.range(8), global_batch_size=4, sharding="data"
    )
    assert data.plan_sharding(forced, _ctx(2, 0)).policy == "data"


@pytest.mark.parametrize("num_files, sharding", [(4, "auto"), (1, "auto"), (4, "data")])
@pytest.mark.parametrize("global_batch_size", [4, 6])
def test_pipelines_are_disjoint_and_complete_in_process(
    tmp_path, num_files, sharding, global_batch_size
):
    pattern = write_id_records(tmp_path, num_files=num_files)
    spec = data.DataSpec(
        source=pattern,
        global_batch_size=global_batch_size,
        repeat=False,
        drop_remainder=False,
        sharding=sharding,
        map_fn=lambda r: tf.io.parse_single_example(
            r, {"id": tf.io.FixedLenFeature([], tf.int64)}
        )["id"],
    )
    seen = [_ids(data.make_dataset(spec, _ctx(2, i))) for i in range(2)]
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(NUM_EXAMPLES))


def test_shuffle_is_seeded_per_pipeline_and_reproducible():
    spec = data.DataSpec(
        source=tf.data.Dataset.range(40), global_batch_size=2, repeat=False, seed=3
    )
    first = [_ids(data.make_dataset(spec, _ctx(2, i))) for i in range(2)]
    again = [_ids(data.make_dataset(spec, _ctx(2, i))) for i in range(2)]
    assert first == again
    assert first[0] != sorted(first[0])  # shuffled
    assert sorted(first[0] + first[1]) == list(range(40))


def test_training_defaults_repeat_and_drop_remainder():
    spec = data.DataSpec(source=tf.data.Dataset.range(10), global_batch_size=4)
    ds = data.make_dataset(spec)
    assert ds.element_spec.shape.as_list() == [4]  # static batch: drop_remainder
    assert len(list(ds.take(7))) == 7  # repeats past 10 examples
    eval_spec = data.DataSpec(source=tf.data.Dataset.range(10), global_batch_size=4, training=False)
    assert [len(b) for b in data.make_dataset(eval_spec)] == [4, 4, 2]


def test_batch_map_fn_sees_whole_per_replica_batches_after_map_fn():
    spec = data.DataSpec(
        source=tf.data.Dataset.range(10), global_batch_size=4, training=False,
        map_fn=lambda i: i * 10,
        batch_map_fn=lambda b: (b, tf.fill(tf.shape(b), tf.size(b))),
    )
    batches = [(x.numpy().tolist(), n.numpy().tolist()) for x, n in data.make_dataset(spec)]
    assert batches == [([0, 10, 20, 30], [4] * 4), ([40, 50, 60, 70], [4] * 4), ([80, 90], [2] * 2)]
    halves = [[n.numpy().tolist() for _, n in data.make_dataset(spec, _ctx(2, i))] for i in range(2)]
    assert halves == [[[2, 2], [2, 2], [1]]] * 2  # 5 examples each, per-replica batches of 4 / 2
    training = dataclasses.replace(spec, training=True, seed=5)
    ids, sizes = next(iter(data.make_dataset(training)))
    assert ids.shape == sizes.shape == (4,)  # static: drop_remainder before batch_map_fn
    again = [b[0].numpy().tolist() for b in data.make_dataset(training).take(6)]
    assert again == [b[0].numpy().tolist() for b in data.make_dataset(training).take(6)]
    assert sorted(i for b in again[:2] for i in b) != again[0] + again[1]  # shuffled per example


def test_batch_map_fn_reaches_every_route(cpus):
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    spec = data.DataSpec(source=tf.data.Dataset.range(32).map(lambda i: tf.fill([3], i)),
                         global_batch_size=8, batch_map_fn=lambda b: (b, tf.shape(b)[0]))
    x, n = next(iter(data.for_fit(strategy, spec)))
    assert [tuple(t.shape) for t in strategy.experimental_local_results(x)] == [(4, 3)] * 2
    assert [int(t) for t in strategy.experimental_local_results(n)] == [4, 4]
    x, n = next(iter(data.input_fn(spec)(_ctx(2, 1))))
    assert x.shape == (4, 3) and int(n) == 4
    assert "global batch 8 = 2 replica(s) x 4" in data.plan_sharding(spec, _ctx(2, 0)).describe()


# --- forms for each route --------------------------------------------------------------------


@pytest.mark.parametrize("replicas", [2, 4])
def test_per_replica_batches_under_mirrored(cpus, replicas):
    strategy = tf.distribute.MirroredStrategy(cpus(replicas))
    features = np.arange(64 * 3, dtype=np.float32).reshape(64, 3)
    spec = data.DataSpec(
        source=tf.data.Dataset.from_tensor_slices((features, np.arange(64))),
        global_batch_size=16,
    )
    batch = next(iter(data.distribute(strategy, spec)))
    xs = strategy.experimental_local_results(batch[0])
    assert len(xs) == replicas
    assert all(tuple(x.shape) == (16 // replicas, 3) for x in xs)
    devices = [x.device for x in xs]
    assert len(set(devices)) == replicas


def test_for_fit_gives_plain_global_batches_on_one_replica():
    strategy = tf.distribute.get_strategy()
    spec = data.DataSpec(source=tf.data.Dataset.range(32), global_batch_size=8)
    ds = data.for_fit(strategy, spec)
    assert isinstance(ds, tf.data.Dataset)
    assert next(iter(ds)).shape == (8,)


def test_for_fit_gives_distributed_dataset_on_many_replicas(cpus):
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    spec = data.DataSpec(source=tf.data.Dataset.range(32), global_batch_size=8)
    ds = data.for_fit(strategy, spec)
    assert isinstance(ds, tf.distribute.DistributedDataset)


def test_input_fn_takes_an_optional_context():
    spec = data.DataSpec(source=tf.data.Dataset.range(12), global_batch_size=4, training=False)
    fn = data.input_fn(spec)
    assert _ids(fn()) == list(range(12))
    halves = [_ids(fn(_ctx(2, i))) for i in range(2)]
    assert sorted(halves[0] + halves[1]) == list(range(12))
    assert all(len(b) == 2 for b in fn(_ctx(2, 0)))  # per-replica batch of 4 / 2


# --- real worker processes -------------------------------------------------------------------


@pytest.mark.multiworker
def test_two_real_workers_receive_disjoint_complete_shards(tmp_path):
    pattern = write_id_records(tmp_path / "records", num_files=6)
    out = tmp_path / "out"
    out.mkdir()
    worker = Path(__file__).parent / "workers" / "sharding_worker.py"
    multiworker.run_workers(
        [sys.executable, str(worker), str(out), pattern, str(NUM_EXAMPLES)], num_workers=2
    )
    reports = [json.loads((out / f"worker-{i}.json").read_text()) for i in range(2)]
    assert reports[0]["describe"].startswith("MultiWorkerMirroredStrategy: 2 replica(s), 2 worker(s)")
    seen = [r["cases"] for r in reports]
    assert set(seen[0]) == {f"{c}/{b}" for c in ("data", "file", "forced_data_on_files") for b in (4, 6)}
    for case in seen[0]:
        a, b = seen[0][case], seen[1][case]
        assert set(a["ids"]).isdisjoint(b["ids"]), case
        assert sorted(a["ids"] + b["ids"]) == list(range(NUM_EXAMPLES)), case
        per_replica = int(case.split("/")[1]) // 2
        assert max(a["shapes"] + b["shapes"]) == per_replica, case
    assert seen[0]["file/4"]["policy"] == "file"
    assert seen[0]["data/4"]["policy"] == "data"
    assert seen[0]["forced_data_on_files/4"]["policy"] == "data"


@pytest.mark.parametrize("spec, message", [
    (lambda: data.DataSpec(source=lambda ctx: tf.data.Dataset.range(8), global_batch_size=4,
                           repeat=False), "its training data must repeat"),
    (lambda: data.DataSpec(source=tf.data.Dataset.range(8), global_batch_size=4),
     "a dataset made on the chief cannot be sent"),
])
def test_per_worker_data_is_checked_before_any_worker_is_asked(spec, message):
    # The checks come before the strategy is touched, so the default strategy stands in here.
    with pytest.raises(data.DataConfigError, match=message):
        data.per_worker(tf.distribute.get_strategy(), spec())


def test_a_worker_index_tensor_as_input_pipeline_id_shards_by_example():
    # The Estimator's per-worker input_fn under ParameterServerStrategy passes the worker's
    # index as a tensor (known only on the worker): tfdist.data.input_fn must shard with it.
    spec = data.DataSpec(source=lambda ctx: tf.data.Dataset.range(8), global_batch_size=2,
                         shuffle_buffer=0, repeat=False)
    ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=tf.constant(1, tf.int64))
    batches = [b.numpy().tolist() for b in data.input_fn(spec)(ctx)]
    assert batches == [[1, 3], [5, 7]]


# --- in-memory arrays, read by index -------------------------------------------------------------


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(NUM_EXAMPLES * 3, dtype=np.float32).reshape(NUM_EXAMPLES, 3)
    return x, (np.arange(NUM_EXAMPLES) % 7).astype(np.int32)


def _batches(ds: tf.data.Dataset, count: int | None = None) -> list[list[np.ndarray]]:
    ds = ds if count is None else ds.take(count)
    return [[part.numpy() for part in tf.nest.flatten(batch)] for batch in ds]


@pytest.mark.parametrize("options, ctx, start_step, count", [
    (dict(seed=5), _ctx(2, 1), 3, 12),  # shuffled, sharded by example, resumed, repeating
    (dict(shuffle_buffer=0), None, 0, 12),
    (dict(training=False), _ctx(2, 0), 0, None),  # one pass, short final batch kept
    (dict(seed=5, map_fn=lambda x, y: (2 * x, y)), _ctx(2, 1), 0, 6),  # sliced: per-example map
])
def test_arrays_give_the_batches_from_tensor_slices_gives(options, ctx, start_step, count):
    x, y = _arrays()
    by_slices = data.DataSpec(source=tf.data.Dataset.from_tensor_slices((x, y)),
                              global_batch_size=16, **options)
    by_index = dataclasses.replace(by_slices, source=data.Arrays((x, y)))
    expected = _batches(data.make_dataset(by_slices, ctx, start_step=start_step), count)
    got = _batches(data.make_dataset(by_index, ctx, start_step=start_step), count)
    assert len(got) == len(expected) > 1
    for mine, theirs in zip(got, expected):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)
    if "map_fn" not in options:  # read by index: no per-example slicing in the pipeline
        graph = data.make_dataset(by_index, ctx)._as_serialized_graph().numpy()
        assert b"TensorSliceDataset" not in graph and b"RangeDataset" in graph


def test_arrays_keep_a_dict_structure_and_reach_the_distributed_dataset():
    x, y = _arrays()
    spec = data.DataSpec(source=data.Arrays({"x": x, "y": y}), global_batch_size=8,
                         shuffle_buffer=0)
    batch = next(iter(data.distribute(tf.distribute.get_strategy(), spec)))
    np.testing.assert_array_equal(batch["x"].numpy(), x[:8])
    np.testing.assert_array_equal(batch["y"].numpy(), y[:8])


@pytest.mark.parametrize("arrays, message", [
    ((), "Received: an empty tuple"),
    ((np.float32(1.0),), "Received: an array of shape ()"),
    ((np.zeros((4, 2)), np.zeros(5)), "Received: arrays with 4, 5 rows"),
])
def test_arrays_reject_what_has_no_rows_per_example(arrays, message):
    with pytest.raises(data.DataConfigError, match=re.escape(message)):
        data.Arrays(arrays)
