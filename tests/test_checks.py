"""tfdist.checks: every check's wording, booleans rejected, numpy integers accepted."""

import pathlib
import re

import numpy as np
import pytest

from tfdist import checks


class _MyError(ValueError):
    pass


@pytest.mark.parametrize("kwargs, value, message", [
    (dict(), 0, "Invalid value for argument `steps`. Received: steps=0. Pass a positive integer."),
    (dict(), True, "Invalid value for argument `steps`. Received: steps=True. Pass a positive integer."),
    (dict(), 2.0, "Received: steps=2.0. Pass a positive integer."),
    (dict(), "3", "Received: steps='3'. Pass a positive integer."),
    (dict(allow_none=True), 0, "Received: steps=0. Pass a positive integer or None."),
    (dict(allow_none=True, none_means="keep all"), -1,
     "Received: steps=-1. Pass a positive integer or None (keep all)."),
    (dict(minimum=0), -1, "Received: steps=-1. Pass a non-negative integer."),
    (dict(minimum=2), 1, "Received: steps=1. Pass an integer >= 2."),
    (dict(minimum=1, maximum=3), 4, "Received: steps=4. Pass an integer from 1 to 3."),
    (dict(owner="TrainSpec"), 0,
     "Invalid value for argument `steps` of TrainSpec. Received: steps=0. Pass a positive integer."),
])
def test_integer_wording(kwargs, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.integer("steps", value, **kwargs)


def test_integer_accepts_and_returns_int():
    assert checks.integer("steps", 5) == 5
    assert type(checks.integer("steps", np.int64(5))) is int
    assert checks.integer("steps", None, allow_none=True) is None
    assert checks.positive_int("n", 1) == 1
    assert checks.non_negative_int("n", 0) == 0
    assert checks.integer("n", checks.UNTIL_END, maximum=checks.UNTIL_END) == 2**62


@pytest.mark.parametrize("check", [checks.positive_int, checks.non_negative_int])
@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_booleans_are_not_integers(check, value):
    with pytest.raises(ValueError, match="Received: n="):
        check("n", value)


def test_error_class_is_the_callers():
    with pytest.raises(_MyError, match="`n`"):
        checks.positive_int("n", 0, error=_MyError)


@pytest.mark.parametrize("kwargs, value, message", [
    (dict(), 0, "Received: timeout=0. Pass a number of seconds > 0."),
    (dict(), True, "Received: timeout=True. Pass a number of seconds > 0."),
    (dict(), float("nan"), "Received: timeout=nan. Pass a number of seconds > 0."),
    (dict(), float("inf"), "Received: timeout=inf. Pass a number of seconds > 0."),
    (dict(allow_zero=True), -1, "Received: timeout=-1. Pass a number of seconds >= 0."),
    (dict(allow_none=True, example=300), "x",
     "Received: timeout='x'. Pass a number of seconds > 0 or None, e.g. 300."),
])
def test_seconds_wording(kwargs, value, message):
    with pytest.raises(ValueError, match=re.escape("Invalid value for argument `timeout`. " + message)):
        checks.seconds("timeout", value, **kwargs)


def test_seconds_accepts():
    assert checks.seconds("t", 2) == 2.0
    assert checks.seconds("t", 0, allow_zero=True) == 0.0
    assert checks.seconds("t", None, allow_none=True) is None


def test_one_of():
    assert checks.one_of("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=re.escape(
            "Invalid value for argument `mode`. Received: mode='c'. Valid values: a, b.")):
        checks.one_of("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=re.escape("Received: mode=True. Valid values: 1, 2.")):
        checks.one_of("mode", True, (1, 2))
    with pytest.raises(ValueError, match=re.escape("Received: mode=[]. Valid values: a.")):
        checks.one_of("mode", [], {"a": 1})


def test_path(tmp_path):
    assert checks.path("model_dir", tmp_path) == str(tmp_path)
    assert checks.path("model_dir", None, allow_none=True) is None
    for bad in ("", 3, None):
        with pytest.raises(ValueError, match=re.escape(
                f"Invalid value for argument `model_dir`. Received: model_dir={bad!r}. "
                "Pass a directory path.")):
            checks.path("model_dir", bad, what="a directory path")
    assert checks.path("p", pathlib.PurePosixPath("a/b")) == "a/b"


def test_function_and_instance():
    assert checks.function("fn", len) is len
    with pytest.raises(TypeError, match=re.escape(
            "Invalid value for argument `fn`. Received: fn=3 (int). Pass a function or None.")):
        checks.function("fn", 3, allow_none=True)
    assert checks.instance("x", 3, int, what="an int") == 3
    with pytest.raises(TypeError, match=re.escape(
            "Invalid value for argument `x`. Received: str. Pass a number.")):
        checks.instance("x", "s", (int, float), what="a number")


def test_integer_hint():
    with pytest.raises(ValueError, match=re.escape(
            "Received: n_classes=2. Pass an integer >= 3; use BinaryClassHead for 2 classes.")):
        checks.integer("n_classes", 2, minimum=3, hint="use BinaryClassHead for 2 classes")


# --- booleans are not integers at the public constructors that accepted True before ----------


def _bool_cases():
    from tfdist import checkpoint, data, predict
    from tfdist.estimator import exporters
    import tensorflow as tf

    return [
        ("max_to_keep", lambda: checkpoint.CheckpointManager(
            tf.train.Checkpoint(), "/tmp/unused", max_to_keep=True)),
        ("exports_to_keep", lambda: exporters.LatestExporter(
            "x", lambda: None, exports_to_keep=True)),
        ("virtual_cpus", lambda: predict.PredictOptions(
            model="m.keras", inputs=("a.csv",), output_dir="out", virtual_cpus=True)),
        ("shuffle_buffer", lambda: data.DataSpec(
            source=tf.data.Dataset.range(4), global_batch_size=2, shuffle_buffer=True)),
    ]


@pytest.mark.parametrize("index", range(4))
def test_public_arguments_reject_true(index):
    name, build = _bool_cases()[index]
    with pytest.raises(ValueError, match=re.escape(f"Invalid value for argument `{name}`. "
                                                   f"Received: {name}=True.")):
        build()
