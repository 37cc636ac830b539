"""Each upstream workaround: a test that fails without it, and a canary for upstream's fix."""

import gc
import inspect
import json
import math
from pathlib import Path
import re
import subprocess
import sys
import time
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import multiworker
from tests import tutorial_ctl
from tests import tutorial_distribute_custom_training as tutorial_dct
from tests.multiworker import REPO_ROOT, subprocess_env
from tfdist.compat import iterator_teardown
from tfdist.compat import keras_fit
from tfdist.compat import keras_optimizer_build
from tfdist.compat import mirrored_lazy_variables
import tfdist


@pytest.fixture
def without_optimizer_fix():
    # mirrored_lazy_variables also makes optimizer variables created in the trace work.
    keras_optimizer_build.uninstall()
    mirrored_lazy_variables.uninstall()
    try:
        yield
    finally:
        tfdist.compat.apply()
        keras_optimizer_build.install()
        mirrored_lazy_variables.install()


def test_tutorial_custom_loop_works_with_tfdist_strategy(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    losses = tutorial_ctl.train(strategy, steps=3)
    assert all(math.isfinite(v) for v in losses)


def test_canary_keras_optimizer_lazy_build_still_broken_upstream(cpus, without_optimizer_fix):
    """Fails when upstream fixes keras-team/keras#20164: then delete keras_optimizer_build."""
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must feed a value for placeholder"):
        tutorial_ctl.train(strategy, steps=1)


# --- Variables first created inside tf.function (tfdist.compat.mirrored_lazy_variables) ----------


@pytest.fixture
def without_lazy_variables_fix():
    mirrored_lazy_variables.uninstall()
    try:
        yield
    finally:
        mirrored_lazy_variables.install()


def _replicas_agree(model):
    for variable in model.trainable_variables:
        first, *others = [np.asarray(v) for v in variable.value.values]
        assert others and all(np.array_equal(first, o) for o in others), variable.path


@pytest.fixture(scope="module")
def lazily_built_tutorial_run(tmp_path_factory):
    """TF's distribute/custom_training as written: layers first built inside strategy.run."""
    strategy = tfdist.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    return tutorial_dct.train(strategy, str(tmp_path_factory.mktemp("dct")), epochs=2)


def test_tutorial_custom_training_model_without_input_shape_trains(lazily_built_tutorial_run):
    result = lazily_built_tutorial_run
    first, last = result["history"]
    # Seeded; observed: loss 1.98 -> 1.01, accuracy 0.86 train / 0.77 test (chance: 0.1).
    assert last["loss"] < 0.8 * first["loss"]
    assert last["accuracy"] > 0.5 and last["test_accuracy"] > 0.4
    # The epoch-0 checkpoint, restored into a new model without the strategy.
    assert result["restored_accuracy"] == pytest.approx(first["test_accuracy"], abs=0.01)
    _replicas_agree(result["model"])


def test_tutorial_custom_training_with_an_input_trains_the_same(
    cpus, tmp_path, lazily_built_tutorial_run
):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    (epoch,) = tutorial_dct.train(strategy, str(tmp_path), epochs=1, with_input=True)["history"]
    assert epoch == pytest.approx(lazily_built_tutorial_run["history"][0], rel=1e-5)


def test_canary_variables_created_in_replica_fn_still_break_upstream(
    cpus, tmp_path, without_lazy_variables_fix
):
    """Fails when TF can lift such variables' initializers itself: then delete the patch."""
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="must feed a value for placeholder"):
        tutorial_dct.train(strategy, str(tmp_path), epochs=1)


# --- Keras fit workarounds (tfdist.compat.keras_fit) --------------------------------------------




TUTORIAL = str(Path(__file__).parent / "workers" / "keras_mw_tutorial.py")


@pytest.fixture
def without_fit_fix():
    removed = []

    def remove(name):
        keras_fit.uninstall(name)
        removed.append(name)

    try:
        yield remove
    finally:
        keras_fit.install()


def _spe_model(strategy):
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=10)
    return model


def _xy_dataset():
    x = np.random.default_rng(0).random((80, 4), dtype=np.float32)
    y = np.arange(80) % 3
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True).repeat()


def test_canary_steps_per_execution_still_broken_upstream(cpus, without_fit_fix):
    """Fails when upstream fixes keras-team/keras#19246: then delete the SPE patch."""
    # Upstream's MirroredStrategy as TensorFlow builds it (collective all-reduce, as on GPUs):
    # tfdist's own over logical CPUs reduces on one device and does not hit the bug.
    strategy = tf.distribute.MirroredStrategy(cpus(2))
    model = _spe_model(strategy)
    without_fit_fix("steps_per_execution")
    with pytest.raises(tf.errors.InvalidArgumentError, match="must feed a value for placeholder"):
        model.fit(_xy_dataset(), steps_per_epoch=10, verbose=0)


def _autotuned_iterator_consumed_in_a_function():
    dataset = (tf.data.Dataset.range(10**6).map(lambda v: v * 2, num_parallel_calls=tf.data.AUTOTUNE)
               .batch(4).prefetch(tf.data.AUTOTUNE))
    iterator = iter(dataset)
    tf.function(lambda it: next(it))(iterator)
    return iterator


def test_an_iterator_collected_by_the_garbage_collector_dies_on_the_reaper():
    """A cycle keeps an iterator until the collector runs, which paid the stall on its thread."""

    class Holder:
        pass

    gc.disable()
    try:
        gc.collect()  # earlier tests' garbage, so that only ours is collected below
        holder = Holder()
        holder.me = holder
        holder.iterator = _autotuned_iterator_consumed_in_a_function()
        resource = weakref.ref(holder.iterator._iterator_resource)
        before = iterator_teardown.finalized_count()
        del holder
        assert resource() is not None  # only the collector can free the cycle
        gc.collect()
    finally:
        gc.enable()
    assert iterator_teardown.finalized_count() == before + 1
    deadline = time.monotonic() + 120  # the reaper may itself wait out a stall
    while resource() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert resource() is None, "the reaper never destroyed the iterator's resource"


def test_distributed_iterators_hand_over_every_resource(cpus):
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.range(64).batch(8))
    iterator = iter(dist)
    next(iterator)
    before = iterator_teardown.finalized_count()
    del iterator
    # the multi-device resource plus one per device
    assert iterator_teardown.finalized_count() - before == 3


def test_with_finalizers_disabled_iterators_die_where_dropped():
    iterator = _autotuned_iterator_consumed_in_a_function()
    resource = weakref.ref(iterator._iterator_resource)
    before = iterator_teardown.finalized_count()
    with iterator_teardown.finalizers_disabled():
        del iterator
        assert resource() is None  # destroyed right here, on this thread
    assert iterator_teardown.finalized_count() == before


def test_canary_iterator_teardown_stall_still_present_upstream(cpus):
    """Fails when TF no longer stalls destroying autotuned iterators: then delete that patch.

    The stall is probabilistic (about half the tries here, for an iterator destroyed ~0.7 s after
    its creation, i.e. between the autotuner's wake-ups at 0.63 s and 1.27 s). One stall in up
    to 30 tries shows it is still there; the chance of missing it is below 1e-8.
    """
    from tfdist import data

    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    x = np.random.default_rng(0).random((4096, 32), dtype=np.float32)
    spec = data.DataSpec(source=tf.data.Dataset.from_tensor_slices(x).map(lambda v: v * 2),
                         global_batch_size=64)
    dist = data.distribute(strategy, spec)

    @tf.function
    def consume(iterator):
        for _ in tf.range(20):
            strategy.run(tf.reduce_sum, args=(next(iterator),))

    worst = 0.0
    for _ in range(30):
        iterator = iter(dist)
        born = time.perf_counter()
        while time.perf_counter() - born < 0.7:
            consume(iterator)
        started = time.perf_counter()
        with iterator_teardown.finalizers_disabled():
            del iterator  # on this thread, as upstream Keras and hand loops do
        worst = max(worst, time.perf_counter() - started)
        if worst > 0.3:
            break
    assert worst > 0.3, f"no teardown stall in 30 tries (worst {worst:.3f}s): upstream fixed it?"


@pytest.mark.multiworker
@pytest.mark.parametrize("fix, upstream_error", [
    ("symbolic_build", "unsupported type"),
    ("scalar_logs", "Invalid reduction dimension 0 for input with 0 dimensions"),
])
def test_canary_multi_worker_fit_still_broken_upstream(tmp_path, fix, upstream_error):
    """Fails when keras-team/keras#20585 is fixed upstream: then delete that patch."""
    results = multiworker.run_workers(
        ["python", TUTORIAL, str(tmp_path / "backup"), str(tmp_path)], num_workers=2,
        env={"WITHOUT_FIX": fix}, check=False)
    assert any(r.returncode != 0 for r in results)
    assert any(upstream_error in r.output for r in results), results[0].output[-3000:]


# --- strategies the workarounds do not cover ----------------------------------------------------


PS_FIT = str(Path(__file__).parent / "workers" / "ps_fit.py")


@pytest.fixture(scope="module")
def ps_fit_outcomes(tmp_path_factory):
    """The same `fit` calls under a real ParameterServerStrategy, upstream and with tfdist's
    patches, and a sharded embedding probed there. In a subprocess: its in-process gRPC servers
    cannot be stopped."""
    result = subprocess.run([sys.executable, PS_FIT, str(tmp_path_factory.mktemp("ps_fit"))],
                            capture_output=True, text=True, timeout=300,
                            env=multiworker.subprocess_env(), cwd=multiworker.REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_fit_under_parameter_server_strategy_says_to_use_the_custom_loop(ps_fit_outcomes):
    """Issue 16: tfdist's clear error, not upstream's crash inside Keras."""
    for outcome in ps_fit_outcomes["tfdist"].values():
        assert outcome[0] == "FitConfigError", outcome
        assert outcome[1].startswith(
            "Keras 3 `fit`/`evaluate` cannot train under ParameterServerStrategy"), outcome
        assert "Use the custom-loop route: tfdist.loop.Trainer" in outcome[1]
        assert "\n" not in outcome[1]


def test_canary_keras_fit_still_rejects_parameter_server_strategy(ps_fit_outcomes):
    """Fails when Keras 3 `fit` runs under ParameterServerStrategy (keras-team/keras#18624,
    FINDINGS §9): then let it through in compat.keras_fit_checks."""
    for outcome in ps_fit_outcomes["upstream"].values():
        assert outcome is not None and "ClusterCoordinator.create_per_worker_dataset" in outcome[1]


def test_canary_keras_cannot_differentiate_or_save_sharded_variables(ps_fit_outcomes):
    """Fails once Keras 3 differentiates or checkpoints a variable split across ps tasks
    (see tfdist.compat.keras_sharded_variables): then drop that workaround."""
    probe = ps_fit_outcomes["sharded"]
    assert probe["shards"] == [[2048, 16], [2048, 16]]
    assert probe["upstream_gradient"] == [
        "AttributeError", "'ShardedVariable' object has no attribute 'handle'"]
    assert probe["upstream_checkpoint"] == [
        "AttributeError", "'ShardedVariable' object has no attribute 'device'"]


def test_sharded_variables_differentiate_and_save_through_tfdist(ps_fit_outcomes):
    probe = ps_fit_outcomes["sharded"]
    assert probe["tfdist_gradient_shapes"] == [[2048, 16], [2048, 16], [16, 1], [1]]
    saved = {k: v for k, v in probe["tfdist_checkpoint"].items() if "embedding" in k}
    assert list(saved.values()) == [[4096, 16]], probe["tfdist_checkpoint"]  # one full table


def test_canary_keras_assign_add_is_still_read_then_write():
    """Fails once Keras 3's `Variable.assign_add` is atomic (tfdist.compat.keras_atomic_updates):
    then drop that workaround."""
    from keras.src.backend.common import variables as keras_variables

    assert "self.assign(self + value)" in inspect.getsource(keras_variables.Variable.assign_add)
    assert "self.assign(self - value)" in inspect.getsource(keras_variables.Variable.assign_sub)


def test_atomic_updates_are_scoped_to_the_block():
    import keras

    from tfdist.compat import keras_atomic_updates

    patched = keras_atomic_updates._Variable.__dict__
    variable = keras.Variable(1.0)
    with keras_atomic_updates.atomic():
        assert "assign_add" in patched and "assign_sub" in patched
        variable.assign_add(2.0)
    variable.assign_sub(0.5)
    assert "assign_add" not in patched and "assign_sub" not in patched
    assert float(variable.numpy()) == 2.5


def test_canary_keras_compile_utils():
    """The private Keras objects compat.keras_compile_utils builds (see its docstring): fails when
    Keras moves or changes them — then follow Keras (or use a public API if one appeared)."""
    import keras

    from tfdist.compat import keras_compile_utils

    y_true = tf.constant([0, 2])
    logits = tf.constant([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    loss = keras_compile_utils.compiled_loss(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True), None, ["out"])
    expected = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    assert float(loss(y_true, logits)) == pytest.approx(float(tf.reduce_mean(expected)))
    metrics = keras_compile_utils.compiled_metrics(["accuracy"], None, ["out"])
    metrics.update_state(y_true, logits)
    assert isinstance(metrics, keras.metrics.Metric)
    result = metrics.result()
    assert list(result) == ["accuracy"] and float(result["accuracy"]) == 1.0  # sparse accuracy
    assert keras_compile_utils.compiled_metrics(None, None, ["out"]) is None


def test_canary_keras_losses_still_scale_by_the_replica_count(cpus):
    """Fails when Keras stops dividing a Loss by the replica count under a strategy: then
    delete compat/keras_loss_scaling.py (model_fn losses would already be the replica's mean)."""
    import keras

    import tfdist
    from tfdist.compat import keras_loss_scaling

    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    loss = keras.losses.MeanSquaredError()
    scaled = strategy.run(lambda: loss(tf.ones((2, 1)), tf.zeros((2, 1))))
    assert [float(v) for v in scaled.values] == [0.5, 0.5]

    def unscaled_fn():
        with keras_loss_scaling.replica_means():
            return loss(tf.ones((2, 1)), tf.zeros((2, 1)))

    assert [float(v) for v in strategy.run(unscaled_fn).values] == [1.0, 1.0]


# --- bounded start-up wait (tfdist.compat.coordination_startup) ---------------------------------



_CONFIGURE = """
import json
from tensorflow.python.eager import context
from tfdist.compat import coordination_startup
spec = {"worker": ["localhost:1", "localhost:2"], "evaluator": ["localhost:3"]}
first = coordination_startup.configure(spec, "worker", 20)
again = coordination_startup.configure(spec, "worker", 20)
config = context.context().coordination_service
print(json.dumps({"first": first, "again": again, "timeout": config.cluster_register_timeout_in_ms,
                  "barrier": config.cluster_register_with_barrier, "leader": config.service_leader,
                  "jobs": [[j.name, j.num_tasks] for j in config.coordinated_job_list]}))
"""


def test_coordination_startup_configures_a_bounded_barrier_once():
    out = subprocess.run([sys.executable, "-c", _CONFIGURE], env=subprocess_env(), cwd=str(REPO_ROOT),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    config = json.loads(out.stdout.strip().splitlines()[-1])
    assert config == {"first": True, "again": False, "timeout": 20000, "barrier": True,
                      "leader": "/job:worker/replica:0/task:0", "jobs": [["worker", 2]]}


def test_canary_mwms_sets_no_register_timeout():
    """Fails once TF's strategy bounds the start-up wait itself (sets a register timeout or the
    registration barrier): then delete tfdist/compat/coordination_startup.py. (Its
    `CommunicationOptions(timeout_seconds=)` bounds collectives, not the start-up.)"""
    from tensorflow.python.distribute import collective_all_reduce_strategy as cars

    source = inspect.getsource(cars.CollectiveAllReduceExtended._initialize_multi_worker)
    assert "configure_coordination_service(" in source
    assert "cluster_register_timeout" not in source and "register_with_barrier" not in source


def test_canary_shared_embedding_creator_has_no_public_config():
    """Fails when TF gives shared-embedding creators public settings (or renames the private
    ones): then tfdist.compat.shared_embedding_config should read those."""
    from tfdist.compat import shared_embedding_config

    fc = tf.feature_column
    with tf.Graph().as_default():  # shared_embeddings refuses eager mode
        column, _ = fc.shared_embeddings(
            [fc.categorical_column_with_identity("a", 4), fc.categorical_column_with_identity("b", 4)],
            dimension=3, shared_embedding_collection_name="tables")
    creator = column.shared_embedding_column_creator
    assert not any(hasattr(creator, name) for name in ("initializer", "trainable", "name"))
    config = shared_embedding_config.read(column)
    assert (config.dimension, config.name, config.trainable, config.ckpt_to_load_from) == (
        3, "tables", True, None)
    assert callable(config.initializer)


# --- private touch points that need no patch (issue 14) -------------------------------------------


def test_canary_strategies_have_no_public_worker_count():
    """Fails once tf.distribute offers a public worker count (then read that in
    tfdist.compat.strategy_workers), or drops the private one it reads."""
    from tensorflow.python.distribute import collective_all_reduce_strategy as cars
    from tensorflow.python.distribute import parameter_server_strategy_v2 as pss
    from tfdist.compat import strategy_workers

    public = ("num_workers", "worker_count", "num_processes", "num_tasks")
    for cls in (tf.distribute.Strategy, tf.distribute.StrategyExtended,
                tf.distribute.MultiWorkerMirroredStrategy,
                tf.distribute.experimental.ParameterServerStrategy):
        assert not [name for name in public if hasattr(cls, name)], cls
    for extended in (cars.CollectiveAllReduceExtended, pss.ParameterServerStrategyV2Extended):
        assert "self._num_workers =" in inspect.getsource(extended), extended
    assert strategy_workers.num_workers(tf.distribute.get_strategy()) == 1


def test_num_workers_reads_the_private_count(cpus):
    from tfdist.compat import strategy_workers

    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    assert strategy_workers.num_workers(mirrored) == 1
    assert tfdist.strategy.num_workers(mirrored) == 1


def test_canary_default_strategy_class_is_still_private(cpus):
    """Fails once TensorFlow exports the default strategy's class (then use isinstance in
    tfdist.compat.default_strategy), or renames it (then is_default needs the new name)."""
    from tfdist.compat import default_strategy

    default = tf.distribute.get_strategy()
    assert type(default).__name__ == default_strategy.CLASS_NAME
    exported = {value for module in (tf.distribute, tf.distribute.experimental)
                for value in vars(module).values() if isinstance(value, type)}
    assert type(default) not in exported
    assert default_strategy.is_default(default)
    mirrored = tfdist.get_strategy("mirrored", devices=cpus(2))
    assert not default_strategy.is_default(mirrored)
    with mirrored.scope():  # inside a scope get_strategy() is no longer the default one
        assert not default_strategy.is_default(tf.distribute.get_strategy())


@pytest.mark.multiworker  # a subprocess: the failed collective aborts its process's executor
def test_canary_second_mirrored_strategy_still_breaks_all_reduce():
    """Fails once a second MirroredStrategy over the same devices works (tensorflow#62790): then
    tfdist.compat.mirrored_strategy_reuse can go and get_strategy may build a fresh one."""
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "workers" / "mirrored_twice.py")],
                         env=subprocess_env(), cwd=str(REPO_ROOT), capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome["error"] == "InvalidArgumentError", outcome
    assert "Shape mismatch in the collective instance" in out.stderr + outcome["message"]


def test_mirrored_strategy_reuse_is_per_device_set(cpus):
    from tfdist.compat import mirrored_strategy_reuse as reuse

    two = reuse.mirrored_strategy(cpus(2))
    assert reuse.mirrored_strategy(["/job:localhost/replica:0/task:0/device:CPU:1", "/cpu:0"]) is two
    assert reuse.mirrored_strategy(cpus(3)) is not two


def test_canary_keras_model_checkpoint_still_writes_from_every_worker():
    """Fails once Keras 3's ModelCheckpoint knows about chiefs (tensorflow#38635, FINDINGS §1),
    or changes the private pair tfdist.compat.keras_checkpoint_paths overrides."""
    from tfdist.compat import keras_checkpoint_paths

    source = inspect.getsource(keras.callbacks.ModelCheckpoint)
    assert not any(word in source for word in ("is_chief", "chief", "distribute", "task_type"))
    for name in keras_checkpoint_paths.PRIVATE_METHODS:
        method = getattr(keras.callbacks.ModelCheckpoint, name)
        assert list(inspect.signature(method).parameters) == ["self", "epoch", "batch", "logs"], name
    assert "self._get_file_path(" in inspect.getsource(keras.callbacks.ModelCheckpoint._save_model)


def test_routed_model_checkpoint_writes_where_route_path_says(tmp_path):
    from tfdist.compat import keras_checkpoint_paths

    calls = []

    class Elsewhere(keras_checkpoint_paths.RoutedModelCheckpoint):
        def route_path(self, path):
            return str(tmp_path / "elsewhere" / ("x-" + Path(path).name))

        def after_save(self, succeeded):
            calls.append(succeeded)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 2), np.float32)
    model.fit(x, x[:, :1], epochs=2, verbose=0,
              callbacks=[Elsewhere(str(tmp_path / "m-{epoch}.keras"))])
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["x-m-1.keras", "x-m-2.keras"]
    assert not list(tmp_path.glob("m-*")) and calls == [True, True]


def test_canary_keras_backup_still_sets_private_initial_epoch():
    """Fails once Keras moves fit's first epoch another way than `model._initial_epoch`
    (keras-team/keras#19179): then tfdist.compat.keras_initial_epoch must follow."""
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer
    from tfdist.compat import keras_initial_epoch

    assert f"self.model.{keras_initial_epoch.ATTRIBUTE} = " in inspect.getsource(
        keras.callbacks.BackupAndRestore)
    assert f"self.{keras_initial_epoch.ATTRIBUTE} or initial_epoch" in inspect.getsource(
        keras_tf_trainer.TensorFlowTrainer.fit)


def test_set_initial_epoch_moves_fits_first_epoch():
    from tfdist.compat import keras_initial_epoch

    class StartAtTwo(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            keras_initial_epoch.set_initial_epoch(self.model, 2)

        def on_train_end(self, logs=None):
            keras_initial_epoch.set_initial_epoch(self.model, None)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.zeros((8, 2), np.float32)
    history = model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[StartAtTwo()])
    assert history.epoch == [2]
    assert model.fit(x, x[:, :1], epochs=2, verbose=0).epoch == [0, 1]  # reset at the end


# --- the private touch points live here only (issue 14) -------------------------------------------

# Names of TF/Keras internals that tfdist may touch only inside tfdist/compat/.
_PRIVATE_NAMES = ("_num_workers", "_DefaultDistributionStrategy", "_get_file_path", "_save_model",
                  "_initial_epoch", "getrefcount", "_distribution_strategy", "_distribute_strategy",
                  "MirroredExtended", "CollectiveAllReduceExtended")
_PRIVATE_IMPORT = re.compile(r"^\s*(?:from\s+(?:keras\.src|tensorflow\.python)[\w.]*\s+import\b|"
                             r"import\s+(?:keras\.src|tensorflow\.python)\b)", re.MULTILINE)


def _package_sources():
    package = REPO_ROOT / "tfdist"
    return {path.relative_to(REPO_ROOT).as_posix(): path.read_text()
            for path in sorted(package.rglob("*.py")) if "compat" not in path.relative_to(package).parts}


def test_private_imports_live_in_compat_only():
    offenders = [f"{path}:{text[:match.start()].count(chr(10)) + 1}: {match.group().strip()}"
                 for path, text in _package_sources().items()
                 for match in _PRIVATE_IMPORT.finditer(text)]
    assert not offenders, offenders


def test_private_names_live_in_compat_only():
    offenders = [f"{path}:{number}: {line.strip()}"
                 for path, text in _package_sources().items()
                 for number, line in enumerate(text.splitlines(), 1)
                 if any(re.search(rf"\b{re.escape(name)}\b", line) for name in _PRIVATE_NAMES)]
    assert not offenders, offenders


_IMPORT_DATA = """
import json, sys
import tensorflow
baseline = {m for m in sys.modules if m.startswith("keras.src")}
import tfdist.data
print(json.dumps({"keras_src": sorted(m for m in sys.modules if m.startswith("keras.src") and m not in baseline),
                  "compat": sorted(m for m in sys.modules if m.startswith("tfdist.compat"))}))
"""


def test_import_tfdist_data_loads_no_keras_patches():
    out = subprocess.run([sys.executable, "-c", _IMPORT_DATA], env=subprocess_env(),
                         cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["keras_src"] == []  # beyond what `import tensorflow` itself loads
    assert loaded["compat"] == ["tfdist.compat", "tfdist.compat.iterator_teardown",
                                "tfdist.compat.strategy_workers"]


# --- compat.keras_remat: RematScope inside tf.function (keras-team/keras#21207) ------------------


class MatmulRelu(keras.layers.Layer):
    """A user layer whose call takes only its inputs (so no keyword reaches remat)."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 4), initializer="ones")

    def call(self, x):
        return keras.ops.relu(keras.ops.matmul(x, self.kernel))


def _remat_step(make_layer, *, upstream, policy="float32"):
    """One compiled gradient step through a layer made under RematScope('full')."""
    from keras.src.backend.tensorflow import core as tf_backend_core

    from tfdist.compat import keras_remat

    tf_backend_core.remat = keras_remat._upstream_remat if upstream else keras_remat.remat
    keras.mixed_precision.set_global_policy(policy)
    try:
        with keras.RematScope(mode="full"):
            layer = make_layer()
        x = tf.ones((2, 3))
        layer(x)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                value = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))
            return tape.gradient(value, layer.trainable_variables)

        return [g.numpy() for g in step()]
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras_remat.install()


def test_canary_keras_remat_still_fails_on_keywords_inside_tf_function():
    """Fails when Keras's TensorFlow remat takes `training=` inside tf.function: then drop the
    keyword handling of compat/keras_remat.py."""
    with pytest.raises(ValueError, match="supports keywords arguments only when eager"):
        _remat_step(lambda: keras.layers.Dense(4, activation="relu"), upstream=True)
    grads = _remat_step(lambda: keras.layers.Dense(4, activation="relu"), upstream=False)
    assert [g.shape for g in grads] == [(3, 4), (4,)]


def test_canary_keras_remat_still_recomputes_outside_the_autocast_scope():
    """Fails when Keras's remat replays the layer's autocast scope in the backward pass: then
    drop the AutocastScope of compat/keras_remat.py."""
    with pytest.raises(TypeError, match="ReluGrad"):
        _remat_step(MatmulRelu, upstream=True, policy="mixed_bfloat16")
    grads = _remat_step(MatmulRelu, upstream=False, policy="mixed_bfloat16")
    np.testing.assert_allclose(grads[0], np.full((3, 4), 2.0))  # d/dk sum(relu(x @ k)), x = 1


def test_canary_keras_remat_still_marks_the_model_itself_and_nested_layers():
    """Fails when a functional model built in a RematScope is no longer marked itself, nor the
    layers nested in its layers: then compat.keras_remat.unmark_model can go."""
    from tfdist import recompute

    def block(name):
        block_inputs = keras.Input((3,))
        return keras.Model(block_inputs, keras.layers.Dense(3, name="inner")(block_inputs),
                           name=name)

    def build():
        inputs = keras.Input((3,))
        hidden = block("block")(keras.layers.Dense(3, name="dense")(inputs))
        return keras.Model(inputs, block("last")(keras.layers.Dropout(0.5)(hidden)))

    with keras.RematScope(mode="full"):
        upstream = build()
    assert upstream._remat_mode is not None
    assert upstream.get_layer("block").get_layer("inner")._remat_mode is not None
    model = recompute.builder(build, "full")()
    assert model._remat_mode is None
    dense, first, dropout, last = model.layers[1:]
    assert dense._remat_mode is not None and dropout._remat_mode is None  # masks are kept
    assert first._remat_mode is not None and first.get_layer("inner")._remat_mode is None
    assert last._remat_mode is None and last.get_layer("inner")._remat_mode is None  # tfdist's
    # choice, not upstream's: the last block's backward comes first, recomputing it saves ~nothing


# --- Gradient reduction and accumulation (tfdist.compat.keras_gradient_reduction, ----------------
# --- tfdist.compat.keras_fit_accumulation) -------------------------------------------------------


def test_canary_keras_optimizer_still_has_no_all_reduce_options():
    """Fails when Keras's optimizer offers its own all-reduce options: then use them instead."""
    from keras.src.backend.tensorflow import optimizer as keras_tf_optimizer

    reduce = keras_tf_optimizer.TFOptimizer.__dict__["_all_reduce_sum_gradients"]
    assert list(inspect.signature(reduce).parameters) == ["self", "grads_and_vars"]
    accepted = set(inspect.signature(keras.optimizers.Optimizer.__init__).parameters)
    assert not accepted & {"communication_options", "all_reduce_dtype", "gradient_compression"}


def test_canary_keras_gradient_accumulation_still_fails_under_mirrored_fit(cpus):
    """Fails when Keras's own accumulation works in fit under MirroredStrategy: drop ours."""
    strategy = tfdist.get_strategy("mirrored", devices=cpus(2))
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(gradient_accumulation_steps=2),
                      "sparse_categorical_crossentropy")
    with pytest.raises(RuntimeError, match="`merge_call` called while defining a new graph"):
        model.fit(_xy_dataset(), steps_per_epoch=4, verbose=0)
