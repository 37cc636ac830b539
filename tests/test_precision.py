"""Tests for the device levers: precision policies (bfloat16) and recomputation, in every route.

The accuracy tests train the registry MLP (dense 256-128) on scikit-learn's digits in this
process, one device: bfloat16 is emulated (slow) on CPUs without AMX/AVX512_BF16, and the MLP
keeps that cheap.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from tfdist import precision
from tfdist import recompute
from tfdist import runner

STEPS = 300

_INTEL_AMX = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
_AMD_AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"


def test_cpu_bfloat16_flags_are_read_from_cpuinfo():
    assert precision.cpu_bfloat16_flags(_INTEL_AMX) == ("amx_bf16", "avx512_bf16")
    assert precision.cpu_bfloat16_flags(_AMD_AVX2) == ()
    assert precision.cpu_bfloat16_flags("") == ()
    with open("/proc/cpuinfo") as f:  # this machine, whatever it is
        assert precision.cpu_bfloat16_flags() == precision.cpu_bfloat16_flags(f.read())


def test_recommends_bfloat16_once_where_it_is_fast_and_never_switches(monkeypatch):
    lines = []
    monkeypatch.setattr(precision, "_recommended", False)
    monkeypatch.setattr(precision, "fast_bfloat16", lambda: "CPU flags amx_bf16")  # as on AMX
    line = precision.recommend(log=lines.append)
    assert precision.recommend(log=lines.append) is None  # once per process
    assert lines == [line] and "amx_bf16" in line and "--precision=mixed_bfloat16" in line
    assert keras.mixed_precision.dtype_policy().name == "float32"  # told, not switched

    monkeypatch.setattr(precision, "_recommended", False)
    with precision.policy_scope("mixed_bfloat16"):  # already in bfloat16: nothing to say
        assert precision.recommend(log=lines.append) is None
    monkeypatch.setattr(precision, "_recommended", False)
    monkeypatch.setattr(precision, "fast_bfloat16", lambda: None)  # emulated bfloat16: silence
    assert precision.recommend(log=lines.append) is None
    assert len(lines) == 1


def test_policy_scope_restores_the_callers_policy_and_rejects_unknown_names():
    with precision.policy_scope("mixed_bfloat16"):
        assert precision.current_policy() == "mixed_bfloat16"
    assert precision.current_policy() == "float32"
    with pytest.raises(ValueError, match=r"Received: precision='bf16'\. Valid values: float32, "
                                         r"mixed_bfloat16, mixed_float16"):
        with precision.policy_scope("bf16"):
            pass


def test_recompute_builder_marks_the_layers_and_checks_its_arguments():
    def build():
        return models.build("mlp", input_shape=(16,), num_classes=3, hidden=(8,))

    assert recompute.builder(build, "none") is build
    marked = recompute.builder(build, "full")()
    *hidden, last = [layer for layer in marked.layers if layer.weights]
    assert hidden and all(layer._remat_mode is not None and layer._remat_mode.mode == "full"
                          for layer in hidden)
    assert last._remat_mode is None  # its backward comes first: recomputing it saves ~nothing
    assert all(layer._remat_mode is None for layer in build().layers)
    with pytest.raises(ValueError, match=r"Received: remat='larger_than'\. Valid values: none, "
                                         r"full, activations"):
        recompute.builder(build, "larger_than")  # fails inside tf.function upstream


def _transformer(**options):
    return models.build("transformer", input_shape=(16, 8), num_classes=4, embed_dim=16,
                        num_heads=2, ff_dim=32, num_layers=2, **options)


def _marked(model):
    return [layer.name for layer in model._flatten_layers() if layer._remat_mode is not None]


def test_full_recomputation_checkpoints_whole_encoder_blocks_and_keeps_dropout_masks():
    model = recompute.builder(_transformer, "full")()
    # Nothing nested in a block: each layer recomputes once. The last block and what follows
    # it store their work: their backward runs first, so recomputing them barely lowers the peak.
    assert _marked(model) == ["input_projection", "position_embedding", "encoder_block_0"]
    # A recomputed block would draw new dropout masks: its own layers recompute instead, and
    # the Dropout layers keep their masks.
    model = recompute.builder(lambda: _transformer(dropout=0.1), "full")()
    block = model.get_layer("encoder_block_0")
    assert "encoder_block_0" not in _marked(model)
    assert not _marked(model.get_layer("encoder_block_1"))  # the last block stores its work
    assert _marked(block) == [layer.name for layer in block.layers
                              if not isinstance(layer, (keras.layers.InputLayer,
                                                        keras.layers.Dropout))]
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in block.layers) == 2


def test_recomputed_gradients_equal_stored_ones_and_the_forward_runs_once_more():
    # Same weights, same batch: recomputing the forward pass in the backward pass changes
    # memory and time, never the gradients. Compiled, as every route trains.
    def build():
        keras.utils.set_random_seed(1)
        return _transformer()

    x = tf.constant(np.random.default_rng(0).normal(size=(8, 16, 8)), tf.float32)
    y = tf.constant(np.arange(8) % 4)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    grads, projections = [], []
    for mode in ("none", "full"):
        model = recompute.builder(build, mode)()
        # Each call of an attention projection (EinsumDense) while tracing is one run of it in
        # the compiled step: the forward pass, plus one per recomputation that includes it.
        calls = []
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.EinsumDense):
                layer.call = functools.partial(_counted, layer.call, calls)

        @tf.function
        def gradients(model=model):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            return tape.gradient(value, model.trainable_variables)

        grads.append(gradients())
        projections.append(len(calls))
    assert len(grads[0]) == len(grads[1]) > 10
    for stored, recomputed in zip(*grads):
        np.testing.assert_allclose(recomputed.numpy(), stored.numpy(), rtol=1e-4, atol=1e-6)
    # 2 blocks x 4 projections; recomputing the first block once runs its 4 twice (marks nested
    # in the block, as Keras's RematScope leaves them, would run them three times); the last
    # block is not recomputed.
    assert projections == [8, 12]


def _counted(call, calls, *args, **kwargs):
    calls.append(1)
    return call(*args, **kwargs)


def test_tfdist_train_checks_precision_and_remat(tmp_path):
    for bad, message in [
        (dict(precision="bfloat16"), r"Received: precision='bfloat16'\. Valid values: float32"),
        (dict(precision="mixed_bfloat16", mixed_precision=True),
         r"`mixed_precision`\. Received: mixed_precision=True with precision='mixed_bfloat16'"),
        (dict(remat="everything"), r"Received: remat='everything'\. Valid values: none, full"),
    ]:
        with pytest.raises(runner.RunError, match=message):
            runner.run(runner.TrainOptions(model_dir=str(tmp_path), strategy="default", **bad))


def _train(model_dir, route, **options):
    keras.utils.set_random_seed(0)
    return runner.run(runner.TrainOptions(
        model_dir=str(model_dir), route=route, strategy="default", model="mlp",
        train_steps=STEPS, progress=False, **options))


@pytest.fixture(scope="module")
def float32_accuracy(tmp_path_factory):
    """The MLP's digits test accuracy in float32 (ctl route, one device)."""
    report = _train(tmp_path_factory.mktemp("float32"), "ctl", precision="float32")
    assert report["mixed_precision"] is None
    return report["final"]["accuracy"]


@pytest.mark.parametrize("route, remat", [("ctl", "none"), ("fit", "full"), ("estimator", "none")])
def test_bfloat16_reaches_the_float32_accuracy_in_every_route(tmp_path, float32_accuracy, route,
                                                              remat):
    report = _train(tmp_path, route, precision="mixed_bfloat16", remat=remat)
    assert (report["mixed_precision"], report["remat"]) == ("mixed_bfloat16", remat)
    assert precision.current_policy() == "float32"  # the run's policy did not leak
    assert float32_accuracy > 0.95
    assert report["final"]["accuracy"] >= float32_accuracy - 0.01, (report["final"], float32_accuracy)
