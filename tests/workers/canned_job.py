"""A canned estimator (wide and deep, on Titanic-shaped data) under `train_and_evaluate`.

The shape of the TF "linear model" tutorial: a CSV read with pandas, vocabulary columns from the
data, numeric columns, a `crossed_column`; here trained by `DNNLinearCombinedClassifier` with
`train_and_evaluate`, so it runs as one process or as 2 workers plus an evaluator (TF_CONFIG).
The evaluator exports the final model with a `tf.Example`-parsing receiver.

Usage: canned_job.py DATA_DIR MODEL_DIR OUT_DIR   (writes OUT_DIR/<task_type>-<task_id>.json)
DATA_DIR holds train.csv and eval.csv from `write_titanic`, written once before the processes
start (each process writing them would race with the others reading them).
"""

import json
import os
import sys

import numpy as np
import pandas as pd
import tensorflow as tf

import tfdist.estimator

CATEGORICAL = ["sex", "class", "deck", "embark_town", "alone"]
NUMERIC = ["age", "fare"]
EPOCHS = 8
BATCH_SIZE = 32


def write_titanic(data_dir: str, seed: int = 0, num: int = 1000) -> tuple[str, str]:
    """A Titanic-shaped CSV pair with a learnable signal (sex, class, age, and sex x class)."""
    rng = np.random.RandomState(seed)
    sex = rng.choice(["male", "female"], num)
    cls = rng.choice(["First", "Second", "Third"], num)
    age = rng.uniform(1, 80, num).round()
    logit = (1.5 * (sex == "female") - 1.2 * (sex == "male") + 1.0 * (cls == "First")
             - 1.0 * (cls == "Third") - 0.03 * (age - 30) + 1.0 * ((sex == "female") & (cls == "First")))
    frame = pd.DataFrame({
        "survived": (rng.uniform(size=num) < 1 / (1 + np.exp(-logit))).astype(np.int64),
        "sex": sex, "age": age, "fare": rng.exponential(30, num).round(2), "class": cls,
        "deck": rng.choice(["A", "B", "C", "unknown"], num),
        "embark_town": rng.choice(["Southampton", "Cherbourg", "Queenstown"], num),
        "alone": rng.choice(["y", "n"], num),
    })
    os.makedirs(data_dir, exist_ok=True)
    train, evaluation = os.path.join(data_dir, "train.csv"), os.path.join(data_dir, "eval.csv")
    frame[: num * 4 // 5].to_csv(train, index=False)
    frame[num * 4 // 5:].to_csv(evaluation, index=False)
    return train, evaluation


def columns(frame: pd.DataFrame) -> tuple[list, list, list]:
    """(linear columns, dnn columns, all base columns), as the linear tutorial builds them."""
    base = [tf.feature_column.categorical_column_with_vocabulary_list(name, sorted(frame[name].unique()))
            for name in CATEGORICAL]
    base += [tf.feature_column.numeric_column(name, dtype=tf.float32) for name in NUMERIC]
    cross = tf.feature_column.crossed_column(["sex", "class"], hash_bucket_size=20)
    dnn = [tf.feature_column.indicator_column(c) for c in base[: len(CATEGORICAL)]]
    dnn += [tf.feature_column.numeric_column("age", normalizer_fn=lambda x: (x - 40.0) / 25.0)]
    return base + [cross], dnn, base


def make_input_fn(frame: pd.DataFrame, labels: pd.Series, num_epochs: int = EPOCHS,
                  shuffle: bool = True):
    def input_function():
        ds = tf.data.Dataset.from_tensor_slices((dict(frame), labels))
        if shuffle:
            ds = ds.shuffle(1000, seed=0)
        return ds.batch(BATCH_SIZE).repeat(num_epochs)

    return input_function


def estimator(linear, dnn, model_dir, config=None):
    return tfdist.estimator.DNNLinearCombinedClassifier(
        model_dir=model_dir, linear_feature_columns=linear, linear_optimizer="Adam",
        dnn_feature_columns=dnn, dnn_optimizer="Adam", dnn_hidden_units=[16, 8], config=config)


def main(data_dir: str, model_dir: str, out_dir: str) -> dict:
    train_csv, eval_csv = os.path.join(data_dir, "train.csv"), os.path.join(data_dir, "eval.csv")
    dftrain, dfeval = pd.read_csv(train_csv), pd.read_csv(eval_csv)
    y_train, y_eval = dftrain.pop("survived"), dfeval.pop("survived")
    linear, dnn, base = columns(dftrain)
    config = tfdist.estimator.RunConfig(tf_random_seed=0, save_checkpoints_steps=100,
                                        steps_per_loop=10)
    classifier = estimator(linear, dnn, model_dir, config)
    spec = tfdist.estimator.make_parse_example_spec(linear + dnn)
    exporter = tfdist.estimator.FinalExporter(
        "titanic", tfdist.estimator.export.build_parsing_serving_input_receiver_fn(spec))
    eval_result, exports = tfdist.estimator.train_and_evaluate(
        classifier,
        tfdist.estimator.TrainSpec(make_input_fn(dftrain, y_train)),
        tfdist.estimator.EvalSpec(make_input_fn(dfeval, y_eval, 1, False), steps=None,
                                  exporters=exporter, start_delay_secs=0, throttle_secs=0))
    config = classifier.config
    report = {
        "task": f"{config.task_type}-{config.task_id}",
        "eval_result": {k: float(v) for k, v in (eval_result or {}).items()},
        "exports": [str(e) for e in (exports or []) if e],
        "latest_checkpoint": classifier.latest_checkpoint(),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, report["task"] + ".json"), "w") as f:
        json.dump(report, f)
    return report


if __name__ == "__main__":
    main(*sys.argv[1:4])
