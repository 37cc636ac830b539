"""Each upstream workaround: a test that fails without it, and a canary for upstream's fix."""

import math

import pytest
import tensorflow as tf

import tfdist
from tfdist.compat import keras_optimizer_build
from tests import tutorial_ctl


@pytest.fixture
def without_optimizer_fix():
    keras_optimizer_build.uninstall()
    try:
        yield
    finally:
        tfdist.compat.apply()
        keras_optimizer_build.install()


def test_tutorial_custom_loop_works_with_tfdist_strategy(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    losses = tutorial_ctl.train(strategy, steps=3)
    assert all(math.isfinite(v) for v in losses)


def test_canary_keras_optimizer_lazy_build_still_broken_upstream(cpus, without_optimizer_fix):
    """Fails when upstream fixes keras-team/keras#20164: then delete keras_optimizer_build."""
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must feed a value for placeholder"):
        tutorial_ctl.train(strategy, steps=1)
