"""Tests for tfdist.estimator.run_config: roles from TF_CONFIG and `RunConfig` arguments."""

import json

import pytest

import tfdist
import tfdist.estimator as est
from tests.estimator_helpers import (
    _estimator,
    _input_fn,
    _model_fn,
)
from tfdist import cluster


def test_roles_from_tf_config(monkeypatch, tmp_path):
    workers = ["localhost:12345", "localhost:23456"]
    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=workers, task_type="worker", task_id=1))
    config = est.RunConfig()
    assert (config.task_type, config.task_id, config.is_chief) == ("worker", 1, False)
    assert config.num_worker_replicas == 2 and config.num_ps_replicas == 0
    assert config.cluster_spec.as_dict() == {"worker": workers}
    assert config.global_id_in_cluster == 1 and config.master == "grpc://localhost:23456"
    with pytest.raises(ValueError, match="train_distribute is a single-worker"):
        one_worker = tfdist.get_strategy("default", cluster=cluster.ClusterInfo())
        est.Estimator(_model_fn(), str(tmp_path), est.RunConfig(
            train_distribute=one_worker)).train(_input_fn(), steps=1)

    monkeypatch.setenv("TF_CONFIG", cluster.make_tf_config(workers=workers, task_type="evaluator", task_id=0))
    evaluator = _estimator(tmp_path)
    assert evaluator.config.task_type == "evaluator" and not evaluator.config.is_chief
    with pytest.raises(ValueError, match="evaluator task, which only evaluates"):
        evaluator.train(_input_fn(), steps=1)

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["localhost:1"], "ps": ["localhost:2"]},
                                                "task": {"type": "ps", "index": 0}}))
    # A ps task trains under ParameterServerStrategy, which needs worker tasks too.
    with pytest.raises(ValueError, match=r"needs TF_CONFIG with 'chief', 'worker' and 'ps' tasks.*missing worker"):
        est.train_and_evaluate(_estimator(tmp_path), est.TrainSpec(_input_fn()), est.EvalSpec(_input_fn()))

    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "master"}}')
    with pytest.raises(cluster.ClusterConfigError, match="master"):
        est.RunConfig()


def test_run_config_arguments():
    config = est.RunConfig(save_checkpoints_steps=100)
    assert config.save_checkpoints_secs is None
    assert est.RunConfig().save_checkpoints_secs == 600  # tf.estimator's default
    assert est.RunConfig(save_checkpoints_steps=None, save_checkpoints_secs=None).save_checkpoints_secs is None
    replaced = config.replace(save_checkpoints_secs=30, model_dir="/tmp/x")
    assert (replaced.save_checkpoints_steps, replaced.save_checkpoints_secs, replaced.model_dir) == (None, 30, "/tmp/x")
    assert config.save_checkpoints_steps == 100  # unchanged
    with pytest.raises(ValueError, match="Both checkpoint cadences are set. Received: save_checkpoints_steps=100, save_checkpoints_secs=60"):
        est.RunConfig(save_checkpoints_steps=100, save_checkpoints_secs=60)
    with pytest.raises(ValueError, match="session_config=...\\) is not supported: TF2 has no sessions"):
        est.RunConfig(session_config=object())
    with pytest.raises(TypeError, match="unexpected argument `save_steps`"):
        est.RunConfig(save_steps=3)
    with pytest.raises(ValueError, match="cannot change `session_config`"):
        config.replace(session_config=None)
    with pytest.raises(ValueError, match="Received: keep_checkpoint_max=0"):
        est.RunConfig(keep_checkpoint_max=0)
    with pytest.raises(TypeError, match="Pass a tf.distribute.Strategy"):
        est.RunConfig(train_distribute="mirrored")

