"""Gradient compression, packing and accumulation (tfdist.gradients) in every route, in process.

Real MirroredStrategy over 2 logical CPUs; the 2-worker equivalence runs in
tests/test_gradients_multiworker.py.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdist
from tfdist import data
from tfdist import gradients
from tfdist.compat import keras_gradient_reduction

BATCH = 32
STEPS = 6


def _xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * STEPS, 6)).astype("float32")
    y = (x @ rng.normal(size=(6, 1)) + 0.1).astype("float32")
    return x, y


SEEN_BATCHES = set()  # per-replica batch sizes the model was traced with


class _BatchProbe(keras.layers.Layer):
    def call(self, x):
        SEEN_BATCHES.add(x.shape[0])
        return x


def _build():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((6,)), _BatchProbe(),
                             keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])


def _micro_batches(run, *args, **kwargs):
    """`run(...)`'s result and the per-replica batch sizes its model saw while tracing."""
    SEEN_BATCHES.clear()
    result = run(*args, **kwargs)
    return result, SEEN_BATCHES - {None}


def _spec(accumulation_steps=1, **kwargs):
    return data.DataSpec(tf.data.Dataset.from_tensor_slices(_xy()), global_batch_size=BATCH,
                         shuffle_buffer=0, accumulation_steps=accumulation_steps, **kwargs)


def _max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def _loop(strategy, accumulation_steps=1, options=None):
    trainer = tfdist.loop.Trainer(
        strategy=strategy, model=_build, optimizer=keras.optimizers.SGD(0.1), loss="mse",
        train_data=_spec(accumulation_steps), gradients=options)
    loss = trainer.train(STEPS)["loss"]
    return trainer.model.get_weights(), loss


def _fit(strategy, accumulation_steps=1, options=None, optimizer=None):
    with strategy.scope():
        model = _build()
        # `optimizer` builds one (in the scope); SGD(0.1) by default.
        model.compile(optimizer() if optimizer else keras.optimizers.SGD(0.1), "mse",
                      steps_per_execution=3)
    spec = _spec(accumulation_steps)
    tfdist.keras.gradients.configure(model, gradients=options, data=spec)
    history = model.fit(data.for_fit(strategy, spec), epochs=1, steps_per_epoch=STEPS,
                        verbose=0, shuffle=False)
    assert int(model.optimizer.iterations.numpy()) == STEPS  # one optimizer step per batch
    if optimizer is not None:
        return model.get_weights(), history.history["loss"][-1], model.optimizer
    return model.get_weights(), history.history["loss"][-1]


def _estimator(strategy, tmp_path, accumulation_steps=1, options=None):
    def model_fn(features, labels, mode):
        prediction = _build()(features, training=True)
        return tfdist.estimator.EstimatorSpec(
            mode, loss=tf.reduce_mean(tf.square(prediction - labels)),
            optimizer=keras.optimizers.SGD(0.1))

    config = tfdist.estimator.RunConfig(
        model_dir=str(tmp_path / f"est{accumulation_steps}{options}"), train_distribute=strategy,
        steps_per_loop=STEPS, save_checkpoints_steps=None, save_checkpoints_secs=None,
        save_summary_steps=None, log_step_count_steps=None, gradients=options,
        accumulation_steps=accumulation_steps)
    est = tfdist.estimator.Estimator(model_fn=model_fn, config=config)
    est.train(data.input_fn(_spec(accumulation_steps)), steps=STEPS)
    return [est.get_variable_value(n) for n in est.get_variable_names()
            if "global_step" not in n]


BF16 = gradients.GradientOptions(compression="bfloat16")
FP16 = gradients.GradientOptions(compression="float16", loss_scale=256.0, bytes_per_pack=64)
FLAT = gradients.GradientOptions(flat=True)


def test_loop_route_compression_and_accumulation(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    (base, base_loss), seen = _micro_batches(_loop, strategy)
    assert seen == {BATCH // 2}
    (accumulated, loss), seen = _micro_batches(_loop, strategy, accumulation_steps=4)
    assert seen == {BATCH // 8}  # 16 examples per replica, differentiated 4 at a time
    assert _max_diff(base, accumulated) < 1e-5 and loss == pytest.approx(base_loss, rel=1e-5)
    compressed, _ = _loop(strategy, options=BF16)
    # Compressed on the wire: close to float32 (5e-4 observed), but not bit-identical.
    assert 0 < _max_diff(base, compressed) < 5e-3


def test_fit_route_accumulation(cpus):
    # (fit with compression: tests/test_gradients_multiworker.py, under multi-worker.)
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    base, base_loss = _fit(strategy)
    (accumulated, loss), seen = _micro_batches(_fit, strategy, accumulation_steps=4)
    assert BATCH // 8 in seen  # (Keras also builds the model symbolically on a whole batch)
    assert _max_diff(base, accumulated) < 1e-5 and loss == pytest.approx(base_loss, rel=1e-5)


def test_fit_route_accumulation_with_a_loss_scale_optimizer(cpus):
    # mixed_float16's optimizer: fit's train_step scales the loss; the micro-batches' scaled
    # gradients are summed, then unscaled, checked and applied once per batch.
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))

    def scaled():  # growth every 4 finite steps: the scale changes within the 6 steps
        return keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1),
                                                   initial_scale=2.0**10, dynamic_growth_steps=4)

    base, base_loss, base_opt = _fit(strategy, optimizer=scaled)
    (accumulated, loss, opt), seen = _micro_batches(_fit, strategy, accumulation_steps=4,
                                                    optimizer=scaled)
    assert BATCH // 8 in seen
    assert _max_diff(base, accumulated) < 1e-5 and loss == pytest.approx(base_loss, rel=1e-5)
    plain, _ = _fit(strategy)
    assert _max_diff(plain, accumulated) < 1e-5  # the scale was divided out again
    # One scale update per optimizer step, not per micro-batch: 6 steps -> grown once (at 4).
    assert float(opt.dynamic_scale.numpy()) == float(base_opt.dynamic_scale.numpy()) == 2.0**11
    assert int(opt.step_counter.numpy()) == int(base_opt.step_counter.numpy()) == 2


def test_estimator_route_compression_and_accumulation(cpus, tmp_path):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    base = _estimator(strategy, tmp_path)
    both, seen = _micro_batches(_estimator, strategy, tmp_path, accumulation_steps=2, options=BF16)
    assert seen == {BATCH // 4}
    # bfloat16's drift only (5e-4 observed): a mis-scaled accumulated gradient would be far off.
    assert 0 < _max_diff(base, both) < 5e-3


def test_float16_loss_scale_keeps_small_gradients(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    tiny = 1e-8  # below float16's smallest subnormal (6e-8): flushed to zero unscaled

    @tf.function
    def reduce(options):
        return strategy.run(lambda: gradients.all_reduce_sum(
            [tf.constant([tiny, 1.0]), tf.constant(0.5, tf.float64)], options))

    def first_replica(options):
        return [strategy.experimental_local_results(r)[0].numpy() for r in reduce(options)]

    unscaled = first_replica(gradients.GradientOptions(compression="float16"))
    scaled = first_replica(FP16)
    assert unscaled[0][0] == 0 and unscaled[0][1] == 2.0
    np.testing.assert_allclose(scaled[0], [2 * tiny, 2.0], rtol=1e-2)  # float16 subnormals
    assert scaled[0].dtype == np.float32 and scaled[1] == 1.0 and scaled[1].dtype == np.float64


def test_flat_buffer_reduces_mixed_dtypes_and_shapes(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    def values():
        return [tf.ones([2, 3]), tf.fill([4], 2.0), tf.constant([1.5], tf.float64),
                tf.constant(3.0)]

    @tf.function
    def reduce():
        return strategy.run(lambda: gradients.all_reduce_sum(values(), FLAT))

    out = [strategy.experimental_local_results(r)[0].numpy() for r in reduce()]
    for got, value in zip(out, values()):
        np.testing.assert_array_equal(got, 2 * value.numpy())
        assert got.dtype == value.dtype.as_numpy_dtype


def test_unconfigured_optimizers_reduce_as_upstream():
    optimizer = keras.optimizers.SGD()
    keras_gradient_reduction.configure(optimizer, BF16)
    assert keras_gradient_reduction.options_of(optimizer) == BF16
    keras_gradient_reduction.configure(optimizer, gradients.GradientOptions())
    assert keras_gradient_reduction.options_of(optimizer) is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(compression="int8"), r"`compression` of GradientOptions. Received: compression='int8'"),
    (dict(compression="bfloat16", loss_scale=8.0), r"`loss_scale` .*compression='bfloat16'"),
    (dict(compression="float16", loss_scale=-1.0), r"`loss_scale` .*loss_scale=-1.0"),
    (dict(bytes_per_pack=-1), r"`bytes_per_pack` .*bytes_per_pack=-1"),
    (dict(flat="yes"), r"`flat` .*flat='yes'"),
])
def test_bad_gradient_options(kwargs, match):
    with pytest.raises(gradients.GradientOptionsError, match=match):
        gradients.GradientOptions(**kwargs)


def test_bad_accumulation_settings(cpus):
    with pytest.raises(data.DataConfigError, match=r"`accumulation_steps`.*accumulation_steps=0"):
        _spec(accumulation_steps=0)
    with pytest.raises(data.DataConfigError, match=r"multiple of 10 \(e.g. 30\)"):
        _spec(accumulation_steps=5).micro_batch_size(2)
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    common = dict(strategy=strategy, model=_build, optimizer="sgd", loss="mse")
    with pytest.raises(tfdist.loop.TrainerError, match=r"`gradients`.*gradients='bfloat16'"):
        tfdist.loop.Trainer(**common, train_data=_spec(), gradients="bfloat16")
    with pytest.raises(tfdist.loop.TrainerError, match=r"drop_remainder=False with accum"):
        tfdist.loop.Trainer(**common, train_data=_spec(2, drop_remainder=False))
    with pytest.raises(data.DataConfigError, match=r"accumulation_steps=3"):
        tfdist.loop.Trainer(**common, train_data=_spec(3))
    with pytest.raises(ValueError, match=r"`accumulation_steps` of RunConfig.*=0"):
        tfdist.estimator.RunConfig(accumulation_steps=0)
    with pytest.raises(ValueError, match=r"`gradients` of RunConfig.*gradients=2"):
        tfdist.estimator.RunConfig(gradients=2)


def test_bad_fit_configuration(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    with strategy.scope():
        model = _build()
    with pytest.raises(ValueError, match=r"`model`.*not compiled"):
        tfdist.keras.gradients.configure(model, accumulation_steps=2)
    model.compile(keras.optimizers.SGD(), "mse")
    with pytest.raises(ValueError, match=r"accumulation steps once"):
        tfdist.keras.gradients.configure(model, data=_spec(2), accumulation_steps=2)
    with pytest.raises(ValueError, match=r"`gradients`.*gradients='x'"):
        tfdist.keras.gradients.configure(model, gradients="x")
    with pytest.raises(data.DataConfigError, match=r"accumulation_steps=3"):
        tfdist.keras.gradients.configure(model, data=_spec(3))


# --- tfdist-train ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--gradient_compression=int8"], "gradient_compression"),
    (["--bytes_per_pack=-1"], "bytes_per_pack"),
    (["--accumulation_steps=0"], "accumulation_steps"),
    (["--gradient_loss_scale=64"], "--gradient_loss_scale=64 needs --gradient_compression=float16"),
    (["--gradient_compression=float16", "--gradient_loss_scale=-2"], "positive number"),
])
def test_train_flags_reject_bad_wire_options(tmp_path, args, message):
    from absl import flags

    from tfdist import flags as flags_lib

    values = flags.FlagValues()
    flags_lib.define_flags(values)
    with pytest.raises(flags.Error, match=message):
        values(["tfdist-train", f"--model_dir={tmp_path}", *args])


def test_train_checks_accumulation_against_the_batch(tmp_path):
    from tfdist import runner

    with pytest.raises(runner.RunError, match=r"--accumulation_steps: .*accumulation_steps=3"):
        runner.run(runner.TrainOptions(model_dir=str(tmp_path), strategy="default", model="mlp",
                                       progress=False, accumulation_steps=3))
