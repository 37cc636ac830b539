"""Tests for tfdist.estimator.model_to_estimator: the tutorial program (keras_model_to_estimator)
on Iris, one and two replicas, the Keras model's weights as the starting point, a saved model
file, multi-input/multi-output models, and the error paths."""

import ast

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_iris

import tfdist
import tfdist.estimator as est
from tests import multiworker


def _iris():
    iris = load_iris()
    return iris.data.astype(np.float32), iris.target.astype(np.int64)


def _tutorial_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(3),
    ])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    return model


def input_fn():
    """The tutorial's input_fn, on scikit-learn's Iris: features keyed "dense_input"."""
    x, y = _iris()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(150, seed=1)
    dataset = dataset.map(lambda features, labels: ({"dense_input": features}, labels))
    return dataset.batch(32).repeat()


@pytest.mark.parametrize("replicas", [1, 2])
def test_tutorial_program_trains_evaluates_and_predicts(tmp_path, cpus, replicas):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(replicas))
    model = _tutorial_model()
    hidden, output = model.layers[0].name, model.layers[-1].name  # "dense", "dense_1" if first
    estimator = est.model_to_estimator(
        keras_model=model, model_dir=str(tmp_path),
        config=est.RunConfig(train_distribute=strategy, tf_random_seed=0))
    estimator.train(input_fn=input_fn, steps=200)
    result = estimator.evaluate(input_fn=input_fn, steps=10)
    # Chance is 1/3; 200 Adam steps reach 0.967-0.98 (loss 0.11-0.15) over 4 seeds x 1, 2 replicas.
    assert set(result) == {"loss", "accuracy", "global_step"}
    assert result["global_step"] == 200 and result["accuracy"] > 0.8 and result["loss"] < 0.5
    x, y = _iris()
    predictions = list(estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(x).batch(50)))
    assert len(predictions) == 150 and set(predictions[0]) == {output}  # keyed by output name
    assert np.mean(np.argmax([p[output] for p in predictions], axis=1) == y) > 0.8
    names = estimator.get_variable_names()
    optimizer = model.optimizer.name  # "adam", or "adam_<n>" when not the first
    assert {f"{hidden}/kernel", f"{output}/kernel", f"{optimizer}/iteration", "global_step"} <= set(names)
    assert not any("accuracy" in n or n.startswith("loss") for n in names)  # metrics are local


def test_one_and_two_replicas_train_the_same_weights(tmp_path, cpus):
    """Keras losses scale by 1/replicas under a strategy; the Estimator must not scale twice."""
    kernels = []
    for i, devices in enumerate([cpus(1), cpus(2)]):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="head")])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.
                      SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        estimator = est.model_to_estimator(keras_model=model, model_dir=str(tmp_path / str(i)),
                                           config=est.RunConfig(train_distribute=tfdist.get_strategy(
                                               "mirrored", devices=devices)))
        x, y = _iris()
        estimator.train(_batches_of(x, y), steps=10)
        kernels.append(estimator.get_variable_value("head/kernel"))
    np.testing.assert_allclose(kernels[0], kernels[1], rtol=1e-5, atol=1e-6)


def _batches_of(x, y):
    """An `input_fn` over `(x, y)` (the Estimator passes an input_fn only the arguments it names)."""
    return lambda: tf.data.Dataset.from_tensor_slices((x, y)).batch(30).repeat()


def test_the_keras_weights_are_the_starting_point(tmp_path):
    model = _tutorial_model(seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    x, _ = _iris()
    expected = model.predict(x, verbose=0)
    estimator = est.model_to_estimator(keras_model=model, model_dir=str(tmp_path))
    output = model.layers[-1].name
    before = np.stack([p[output] for p in estimator.predict(
        lambda: tf.data.Dataset.from_tensor_slices(x).batch(64))])
    np.testing.assert_allclose(before, expected, rtol=1e-5, atol=1e-6)
    estimator.train(input_fn, steps=1)  # learning rate 0: the weights stay the model's
    receiver = est.export.build_raw_serving_input_receiver_fn(tf.TensorSpec([None, 4], tf.float32))
    served = tf.saved_model.load(estimator.export_saved_model(str(tmp_path / "export"), receiver))
    np.testing.assert_allclose(served.signatures["serving_default"](input=tf.constant(x))[output],
                               expected, rtol=1e-5, atol=1e-6)
    kernel = f"{model.layers[0].name}/kernel"
    np.testing.assert_array_equal(estimator.get_variable_value(kernel),
                                  model.layers[0].kernel.numpy())
    # A checkpoint in model_dir wins over the Keras weights.
    clone = keras.models.clone_model(model)  # same layer names, newly initialised weights
    clone.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    assert not np.array_equal(clone.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    other = est.model_to_estimator(keras_model=clone, model_dir=str(tmp_path))
    other.train(input_fn, steps=1)
    np.testing.assert_array_equal(other.get_variable_value(kernel), model.layers[0].kernel.numpy())


def test_keras_model_path_and_a_functional_two_output_model(tmp_path):
    features = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden",
                                kernel_regularizer=keras.regularizers.L2(1e-3))(features)
    model = keras.Model(features, [keras.layers.Dense(3, name="species")(hidden),
                                   keras.layers.Dense(1, name="width")(hidden)])
    model.compile(optimizer="adam", metrics={"species": ["accuracy"]},
                  loss={"species": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                        "width": "mse"}, loss_weights={"species": 1.0, "width": 0.5})
    model.optimizer.build(model.trainable_variables)  # saved built, as after fit: no warning
    model.save(tmp_path / "model.keras")
    estimator = est.model_to_estimator(keras_model_path=str(tmp_path / "model.keras"),
                                       model_dir=str(tmp_path / "run"))
    x, y = _iris()

    def two_outputs():
        labels = {"species": y, "width": x[:, 3:]}
        return tf.data.Dataset.from_tensor_slices(({"features": x}, labels)).batch(30)

    estimator.train(lambda: two_outputs().repeat(), steps=5)
    result = estimator.evaluate(two_outputs)
    assert {"loss", "species_accuracy", "species_loss", "width_loss", "global_step"} == set(result)
    # The total is the weighted sum of the outputs' losses (plus a small L2 term).
    weighted = result["species_loss"] + 0.5 * result["width_loss"]
    assert weighted <= result["loss"] < weighted + 0.05
    names = estimator.get_variable_names()
    assert "hidden/kernel" in names and not any("_loss" in n or "accuracy" in n for n in names)
    prediction = next(estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(x).batch(10)))
    assert set(prediction) == {"species", "width"} and prediction["species"].shape == (3,)


def test_model_to_estimator_errors(tmp_path):
    model = _tutorial_model()
    with pytest.raises(ValueError, match="exactly one of `keras_model` and `keras_model_path`"):
        est.model_to_estimator()
    with pytest.raises(ValueError, match="exactly one of"):
        est.model_to_estimator(keras_model=model, keras_model_path="m.keras")
    uncompiled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="is not compiled with an optimizer and a loss"):
        est.model_to_estimator(keras_model=uncompiled)
    with pytest.raises(TypeError, match="argument `keras_model`. Received: function"):
        est.model_to_estimator(keras_model=input_fn)
    with pytest.raises(ValueError, match="keras_model_path`. Received: 'nowhere.keras', which does not exist"):
        est.model_to_estimator(keras_model_path="nowhere.keras")
    with pytest.raises(ValueError, match="checkpoint_format='saver'"):
        est.model_to_estimator(keras_model=model, checkpoint_format="saver")
    with pytest.raises(ValueError, match="metric_names_map=...\\) is not supported"):
        est.model_to_estimator(keras_model=model, metric_names_map={"acc": "accuracy"})
    features = keras.Input((4,), name="features")
    two_inputs = keras.Model([features, keras.Input((1,), name="extra")],
                             keras.layers.Dense(3)(features))
    two_inputs.compile(optimizer="sgd", loss="mse")
    estimator = est.model_to_estimator(keras_model=two_inputs, model_dir=str(tmp_path))
    x, y = _iris()
    with pytest.raises(ValueError, match="features have keys \\['features', 'other'\\], which do "
                                         "not name the Keras model's inputs \\['features', 'extra'\\]"):
        estimator.train(lambda: tf.data.Dataset.from_tensor_slices(
            ({"features": x, "other": x}, y)).batch(10), steps=1)


def test_the_estimator_route_does_not_import_the_fit_route():
    """Layering: route 3 (model_to_estimator included) imports neither route 1 nor route 2."""
    imported = set()
    for path in (multiworker.REPO_ROOT / "tfdist" / "estimator").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert "tfdist.data" in imported  # the walk sees the imports
    assert not {m for m in imported if m.startswith(("tfdist.keras", "tfdist.loop"))}
