"""Tests for tfdist.estimator.inputs.numpy_input_fn / pandas_input_fn: Estimators train, evaluate
and predict with them, input pipelines get disjoint covering shards, and bad input is one line."""

import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import tfdist
import tfdist.estimator as est
from tests.estimator_helpers import _config, _data, _estimator, _model_fn


def _examples(input_fn, input_context=None):
    """Every label value the input_fn yields, in order (labels are example ids here)."""
    return [v for _, labels in input_fn(input_context) for v in labels.numpy().tolist()]


def test_exported_like_tf_estimator():
    assert est.inputs.numpy_input_fn is est.numpy_input_fn
    assert est.inputs.pandas_input_fn is est.pandas_input_fn


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict_x", "array_x"])
def test_numpy_input_fn_trains_evaluates_and_predicts(tmp_path, cpus, as_dict):
    x, y = _data()
    features = {"x": x} if as_dict else x
    estimator = _estimator(tmp_path, config=_config(
        train_distribute=tfdist.get_strategy("mirrored", devices=cpus(2))))
    estimator.train(est.inputs.numpy_input_fn(features, y, batch_size=32, num_epochs=None,
                                              shuffle=True), steps=60)
    result = estimator.evaluate(est.inputs.numpy_input_fn(features, y, batch_size=50,
                                                          shuffle=False))
    # Separable data, 60 steps of 32: accuracy 0.97-0.98 over 6 unseeded runs.
    assert result["global_step"] == 60 and result["accuracy"] > 0.85
    predictions = list(estimator.predict(est.inputs.numpy_input_fn(features, batch_size=64,
                                                                   shuffle=False)))
    assert len(predictions) == 256  # one epoch, y=None: features only, short last batch kept
    assert np.mean([p["classes"] for p in predictions] == y) > 0.85


def test_numpy_input_fn_epochs_and_batches():
    ids = np.arange(10)
    once = est.inputs.numpy_input_fn({"id": ids}, ids, batch_size=4, shuffle=False)
    assert [len(labels) for _, labels in once()] == [4, 4, 2]  # the short batch is kept
    assert _examples(once) == list(range(10))
    twice = est.inputs.numpy_input_fn(ids, ids, batch_size=4, num_epochs=2, shuffle=True)
    assert sorted(_examples(twice)) == sorted(list(range(10)) * 2)
    forever = est.inputs.numpy_input_fn(ids, ids, shuffle=True, num_epochs=None)
    assert forever().cardinality() == tf.data.INFINITE_CARDINALITY
    features, labels = next(iter(est.inputs.numpy_input_fn(
        {"a": ids, "b": ids * 2}, {"y1": ids, "y2": -ids}, batch_size=3, shuffle=False)()))
    assert set(features) == {"a", "b"} and set(labels) == {"y1", "y2"}
    np.testing.assert_array_equal(labels["y2"], [0, -1, -2])


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_input_pipelines_get_disjoint_covering_shards(shuffle):
    ids = np.arange(101)  # odd: the shards differ in size
    frame = pd.DataFrame({"f": ids.astype(np.float32)})
    for input_fn in (est.inputs.numpy_input_fn({"f": ids}, ids, batch_size=8, shuffle=shuffle),
                     est.inputs.pandas_input_fn(frame, pd.Series(ids), batch_size=8,
                                                shuffle=shuffle)):
        shards = [_examples(input_fn, tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=4)) for i in (0, 1)]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(101))
        assert {len(s) for s in shards} == {50, 51}
        # Per-replica batches: the global batch of 8 over 4 replicas.
        _, labels = next(iter(input_fn(tf.distribute.InputContext(2, 0, 4))))
        assert labels.shape == (2,)


def test_pandas_input_fn_trains_evaluates_and_predicts(tmp_path):
    x, y = _data()
    frame = pd.DataFrame({f"c{i}": x[:, i] for i in range(4)})

    def model_fn(features, labels, mode):
        stacked = tf.stack([features[f"c{i}"] for i in range(4)], axis=1)
        return _model_fn()(stacked, labels, mode)

    estimator = _estimator(tmp_path, model_fn)
    estimator.train(est.pandas_input_fn(frame, pd.Series(y), batch_size=32, num_epochs=None,
                                        shuffle=True), steps=60)
    result = estimator.evaluate(est.pandas_input_fn(frame, pd.Series(y), shuffle=False))
    assert result["global_step"] == 60 and result["accuracy"] > 0.85
    predictions = list(estimator.predict(est.pandas_input_fn(frame, shuffle=False)))
    assert len(predictions) == 256
    assert np.mean([p["classes"] for p in predictions] == y) > 0.85


def test_pandas_input_fn_columns_and_labels():
    frame = pd.DataFrame({"n": [1.0, 2.0, 3.0], "word": ["a", "b", "c"]}, index=[7, 8, 9])
    targets = pd.DataFrame({"t1": [0, 1, 0], "t2": [5, 6, 7]}, index=[7, 8, 9])
    features, labels = next(iter(est.pandas_input_fn(frame, targets, shuffle=False)()))
    assert features["word"].dtype == tf.string and features["n"].dtype == tf.float64
    np.testing.assert_array_equal(labels["t2"], [5, 6, 7])
    # queue_capacity=None: tf.estimator's default of the frame's size.
    fn = est.pandas_input_fn(frame, pd.Series([0, 1, 2], index=[7, 8, 9]), shuffle=True,
                             queue_capacity=None)
    assert sorted(_examples(fn)) == [0, 1, 2]


def test_numpy_input_fn_errors():
    x, y = np.zeros((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="argument `shuffle` of numpy_input_fn. Received: shuffle=None"):
        est.inputs.numpy_input_fn(x, y)
    with pytest.raises(ValueError, match="lengths differ. Received lengths: x\\['a'\\]=4, x\\['b'\\]=3, y=4"):
        est.inputs.numpy_input_fn({"a": x, "b": x[:3]}, y, shuffle=False)
    with pytest.raises(ValueError, match="its keys \\['a'\\] are also keys of `x`"):
        est.inputs.numpy_input_fn({"a": x}, {"a": y}, shuffle=False)
    with pytest.raises(TypeError, match="argument `x`. Received: list. Pass a numpy array or a dict"):
        est.inputs.numpy_input_fn([[1.0]], shuffle=False)
    with pytest.raises(ValueError, match="x={} \\(an empty dict\\)"):
        est.inputs.numpy_input_fn({}, shuffle=False)
    with pytest.raises(ValueError, match="an empty array of shape \\(0, 2\\)"):
        est.inputs.numpy_input_fn(np.zeros((0, 2)), shuffle=False)
    with pytest.raises(ValueError, match="y={} \\(an empty dict\\). Pass at least one array, or None"):
        est.inputs.numpy_input_fn(x, {}, shuffle=False)
    with pytest.raises(ValueError, match="`x\\['a'\\]`. Received: a scalar"):
        est.inputs.numpy_input_fn({"a": 3.0}, shuffle=False)
    with pytest.raises(TypeError, match="`x\\['a'\\]`. Received: an array of dtype object"):
        est.inputs.numpy_input_fn({"a": np.array([1, "b", None], dtype=object)}, shuffle=False)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        est.inputs.numpy_input_fn(x, y, batch_size=0, shuffle=False)
    with pytest.raises(ValueError, match="Received: num_epochs=0. Pass a positive integer or None"):
        est.inputs.numpy_input_fn(x, y, num_epochs=0, shuffle=False)
    with pytest.raises(tfdist.data.DataConfigError, match="global_batch_size=3 does not divide"):
        est.inputs.numpy_input_fn(x, y, batch_size=3, shuffle=False)(
            tf.distribute.InputContext(num_replicas_in_sync=2))


def test_pandas_input_fn_errors(monkeypatch):
    frame = pd.DataFrame({"a": [1.0, 2.0], "target": [0, 1]})
    with pytest.raises(ValueError, match="argument `shuffle` of pandas_input_fn"):
        est.pandas_input_fn(frame)
    with pytest.raises(TypeError, match="argument `x`. Received: ndarray. Pass a pandas.DataFrame"):
        est.pandas_input_fn(np.zeros((2, 1)), shuffle=False)
    with pytest.raises(ValueError, match="target_column='target', which is already a column of `x`"):
        est.pandas_input_fn(frame, pd.Series([0, 1]), shuffle=False)
    with pytest.raises(ValueError, match="target_column='label' with a DataFrame `y`"):
        est.pandas_input_fn(frame[["a"]], frame[["target"]], shuffle=False, target_column="label")
    with pytest.raises(ValueError, match="its index differs from x's \\(lengths 3 and 2\\)"):
        est.pandas_input_fn(frame[["a"]], pd.Series([0, 1, 2]), shuffle=False)
    with pytest.raises(TypeError, match="argument `y`. Received: ndarray. Pass a pandas.Series"):
        est.pandas_input_fn(frame[["a"]], np.zeros(2), shuffle=False)
    with pytest.raises(TypeError, match="must be strings. Received: column 0 \\(int\\)"):
        est.pandas_input_fn(pd.DataFrame([[1.0], [2.0]]), shuffle=False)
    with pytest.raises(ValueError, match="a DataFrame of shape \\(0, 1\\)"):
        est.pandas_input_fn(frame[["a"]].iloc[:0], shuffle=False)
    with pytest.raises(TypeError, match="target_column=3. Pass a string"):
        est.pandas_input_fn(frame[["a"]], shuffle=False, target_column=3)
    with pytest.raises(TypeError, match="`x\\['d'\\]`. Received: an array of dtype datetime64"):
        est.pandas_input_fn(pd.DataFrame({"d": pd.to_datetime(["2020-01-01"])}), shuffle=False)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(ImportError, match="pandas_input_fn needs pandas, which is not installed"):
        est.pandas_input_fn(frame, shuffle=False)


# --- input_fn forms (tfdist.estimator.inputs) ----------------------------------------------------


def test_input_fn_forms(tmp_path, cpus):
    x, y = _data()
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    inner = _model_fn()
    model_fn = lambda features, labels, mode, params: inner(features, labels, mode)  # noqa: E731
    estimator = _estimator(tmp_path, model_fn, config=_config(train_distribute=strategy),
                           params={"batch": 32})
    seen = []

    def with_params(params):
        seen.append(params["batch"])
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(params["batch"]).repeat()

    def with_context(mode, input_context):
        seen.append((mode, input_context.num_replicas_in_sync))
        per_replica = input_context.get_per_replica_batch_size(32)
        return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(per_replica).repeat()

    def tensors():
        return tf.constant(x[:32]), tf.constant(y[:32])

    estimator.train(with_params, steps=2)
    estimator.train(with_context, steps=2)
    estimator.train(tensors, steps=2)  # one batch, repeated for training
    spec = tfdist.data.DataSpec(source=tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=32)
    estimator.train(tfdist.data.input_fn(spec), steps=2)
    assert estimator.get_variable_value("global_step") == 8
    assert seen == [32, ("train", 2)]
    assert estimator.evaluate(tensors)["global_step"] == 8  # a tuple is one batch for evaluation


def test_input_fn_with_the_wrong_structure(tmp_path):
    estimator = _estimator(tmp_path)
    x, y = _data()
    triples = lambda: tf.data.Dataset.from_tensor_slices((x, y, y)).batch(8)  # noqa: E731
    with pytest.raises(ValueError, match="dataset whose elements are 3-tuples"):
        estimator.train(triples, steps=1)
    with pytest.raises(TypeError, match="returned str; return a tf.data.Dataset"):
        estimator.train(lambda: "data.csv", steps=1)
    with pytest.raises(ValueError, match="returned a list of 3 items"):
        estimator.train(lambda: [x, y, y], steps=1)
    with pytest.raises(TypeError, match="takes arguments tfdist cannot fill: \\['batch_size'\\]"):
        estimator.train(lambda batch_size: None, steps=1)

