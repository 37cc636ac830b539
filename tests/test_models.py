"""Tests for the model registry, the four families, parameter counts and analytic FLOPs."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import models
from models import registry
from tests.multiworker import REPO_ROOT

SHAPES = {"mlp": [(8, 8, 1), (28, 28, 1), (16,)], "cnn": [(8, 8, 1), (28, 28, 1), (32, 32, 3)],
          "resnet": [(8, 8, 1), (32, 32, 3)], "transformer": [(8, 8, 1), (20, 6)]}


def test_registry_lists_the_families_and_names_valid_ones_on_a_typo():
    assert models.names() == ["cnn", "embedding", "mlp", "resnet", "transformer"]
    with pytest.raises(models.UnknownModelError, match="Unknown model 'vgg'. Valid models: cnn, "
                                                       "embedding, mlp, resnet, transformer"):
        models.get("vgg")
    with pytest.raises(ValueError, match="Model 'cnn' has no option.* widht. Valid options: .*filters"):
        models.get("cnn").make_config(widht=3)


def test_register_refuses_a_taken_name_unless_replacing():
    family = registry.ModelFamily("tiny_test_model", models.MLPConfig, models.get("mlp").build)
    try:
        assert models.register(family) is family
        assert "tiny_test_model" in models.names()
        with pytest.raises(ValueError, match="already registered"):
            models.register(registry.ModelFamily("tiny_test_model", models.MLPConfig, lambda c: None))
        models.register(family, replace=True)
    finally:
        registry._REGISTERED.pop("tiny_test_model", None)  # leave the registry as other tests expect
    assert "tiny_test_model" not in models.names()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_family_builds_logits_for_its_input_shapes(name):
    for shape in SHAPES[name]:
        model = models.build(name, input_shape=shape, num_classes=7)
        out = model(np.zeros((2, *shape), np.float32))
        assert out.shape == (2, 7) and out.dtype == "float32", (name, shape)


def test_logits_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = models.build("transformer")
        assert model.layers[-2].compute_dtype == "bfloat16"
        assert model(np.zeros((1, 8, 8, 1), np.float32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_embedding_model_takes_ids_and_its_table_holds_nearly_all_weights():
    config = models.EmbeddingConfig(input_shape=(5,), vocab_size=1000, embed_dim=8, hidden=(4,))
    model = models.get("embedding").build(config)
    assert model(np.array([[0, 1, 2, 999, 999]] * 3, np.int32)).shape == (3, 10)
    table = model.get_layer("table").embeddings
    assert tuple(table.shape) == (1000, 8) and config.table_params == 8000
    assert models.count_params(model) == 8000 + 8 * 4 + 4 + 4 * 10 + 10
    assert models.flops_per_example(model) == 2 * (8 * 4 + 4 * 10)  # lookups count no FLOPs
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8, 1\). Pass \(ids_per_example,\)"):
        models.EmbeddingConfig(input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="vocab_size=0"):
        models.EmbeddingConfig(vocab_size=0)
    with pytest.raises(ValueError, match="lookup='dense'. Pass one of: keras, rows"):
        models.EmbeddingConfig(lookup="dense")


def test_embedding_row_lookup_matches_keras_embedding_and_has_sparse_gradients():
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    config = models.EmbeddingConfig(input_shape=(3,), vocab_size=50, embed_dim=4, hidden=(5,))
    plain = models.get("embedding").build(config)
    rows = models.get("embedding").build(models.EmbeddingConfig(**{**config.__dict__, "lookup": "rows"}))
    rows.set_weights(plain.get_weights())
    ids = np.array([[1, 2, 49], [7, 7, 0]], np.int32)
    np.testing.assert_allclose(rows(ids), plain(ids), rtol=1e-6)
    table = rows.get_layer("table").embeddings
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(rows(ids))
    grad = tape.gradient(loss, table.value)
    assert isinstance(grad, tf.IndexedSlices) and sorted(set(grad.indices.numpy())) == [0, 1, 2, 7, 49]


def test_transformer_takes_token_ids():
    model = models.build("transformer", input_shape=(12,), num_classes=2, vocab_size=50)
    assert model(np.ones((3, 12), np.int32)).shape == (3, 2)


@pytest.mark.parametrize("name, config, message", [
    ("resnet", dict(depth=21), "depth=21. Pass 6n \\+ 2"),
    ("cnn", dict(input_shape=(64,)), "needs image inputs"),
    ("mlp", dict(num_classes=1), "num_classes=1"),
    ("mlp", dict(hidden=(32, 0)), "hidden=\\(32, 0\\)"),
    ("transformer", dict(embed_dim=30, num_heads=4), "num_heads to divide embed_dim"),
    ("transformer", dict(input_shape=(8, 8, 1), vocab_size=100), "token ids of shape \\(seq_len,\\)"),
    ("cnn", dict(dropout=1.0), "dropout=1.0"),
    ("resnet", dict(weight_decay=-0.1), "weight_decay"),
    ("transformer", dict(input_shape=(8,), vocab_size=None), "without a vocab_size"),
    ("mlp", dict(input_shape=(0, 3)), "input_shape=\\(0, 3\\). Pass positive integers"),
])
def test_configs_reject_what_cannot_be_built(name, config, message):
    with pytest.raises(ValueError, match=message):
        models.get(name).make_config(**config)


def test_flops_match_hand_counts():
    # 2 x multiply-adds: 64->256->128->10.
    assert models.flops_per_example(models.MLPConfig()) == 2 * (64 * 256 + 256 * 128 + 128 * 10)
    # conv 3x3x1x32 on 8x8, pool, conv 3x3x32x64 on 4x4, pool, dense 256->128->10.
    cnn = 2 * (9 * 1 * 32 * 64 + 9 * 32 * 64 * 16 + 256 * 128 + 128 * 10)
    assert models.flops_per_example(models.CNNConfig()) == cnn
    # 8 row tokens of 8 pixels -> 64; per block: q, k, v, o projections (4 heads x 16), scores
    # and weighted sum, feed-forward 64->128->64; then 64 -> 10 logits.
    seq, dim, heads, key_dim, ff = 8, 64, 4, 16, 128
    block = (2 * 4 * seq * dim * heads * key_dim + 2 * heads * seq * seq * 2 * key_dim
             + 2 * 2 * seq * dim * ff)
    assert models.flops_per_example(models.TransformerConfig()) == 2 * seq * 8 * dim + 2 * block + 2 * dim * 10


def test_resnet_depth_and_cost_grow_as_published():
    # ResNet-20 on CIFAR-10: ~0.27M parameters and ~41M multiply-adds (He et al. 2016).
    resnet20 = models.ResNetConfig()
    assert 0.26e6 < models.count_params(resnet20) < 0.28e6
    assert 80e6 < models.flops_per_example(resnet20) < 84e6
    assert models.flops_per_example(models.ResNetConfig(depth=56)) > 2.5 * 82e6


def test_model_and_config_give_the_same_counts():
    config = models.CNNConfig(input_shape=(28, 28, 1))
    model = models.get("cnn").build(config)
    assert models.count_params(config) == models.count_params(model) == model.count_params()
    assert models.flops_per_example(config) == models.flops_per_example(model)
    with pytest.raises(TypeError, match="registered model config"):
        models.flops_per_example(object())


def test_listing_names_imports_no_keras():
    code = ("import sys, models; assert models.names(); "
            "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


@pytest.mark.parametrize("text", ["depth", "=3", "depth=8,2x"])
def test_model_options_must_be_key_value_items(text):
    with pytest.raises(ValueError, match="expected key=value items separated by commas"):
        models.parse_options(text)
