"""Route 3: tf.estimator's API (model_fn, input_fn, RunConfig, train_and_evaluate) on TF2 and Keras 3.

Port a tf.estimator program by replacing `tf.estimator.` with `tfdist.estimator.` and making
the edits listed in docs/estimator_migration.md.
"""

from tfdist.estimator import export
from tfdist.estimator import inputs
from tfdist.estimator.array_inputs import numpy_input_fn
from tfdist.estimator.array_inputs import pandas_input_fn
from tfdist.estimator.canned import BaselineClassifier
from tfdist.estimator.canned import BaselineEstimator
from tfdist.estimator.canned import BaselineRegressor
from tfdist.estimator.canned import BinaryClassHead
from tfdist.estimator.canned import BoostedTreesClassifier
from tfdist.estimator.canned import BoostedTreesRegressor
from tfdist.estimator.canned import DNNClassifier
from tfdist.estimator.canned import DNNEstimator
from tfdist.estimator.canned import DNNLinearCombinedClassifier
from tfdist.estimator.canned import DNNLinearCombinedEstimator
from tfdist.estimator.canned import DNNLinearCombinedRegressor
from tfdist.estimator.canned import DNNRegressor
from tfdist.estimator.canned import Head
from tfdist.estimator.canned import LinearClassifier
from tfdist.estimator.canned import LinearEstimator
from tfdist.estimator.canned import LinearRegressor
from tfdist.estimator.canned import MetricKeys
from tfdist.estimator.canned import MultiClassHead
from tfdist.estimator.canned import MultiLabelHead
from tfdist.estimator.canned import PredictionKeys
from tfdist.estimator.canned import RegressionHead
from tfdist.estimator.canned import make_parse_example_spec
from tfdist.estimator.estimator import Estimator
from tfdist.estimator.exporters import BestExporter
from tfdist.estimator.exporters import Exporter
from tfdist.estimator.exporters import FinalExporter
from tfdist.estimator.exporters import LatestExporter
from tfdist.estimator.hooks import CheckpointSaverListener
from tfdist.estimator.hooks import LoggingTensorHook
from tfdist.estimator.hooks import NanLossDuringTrainingError
from tfdist.estimator.hooks import NanTensorHook
from tfdist.estimator.hooks import SessionRunArgs
from tfdist.estimator.hooks import SessionRunContext
from tfdist.estimator.hooks import SessionRunHook
from tfdist.estimator.hooks import SessionRunValues
from tfdist.estimator.hooks import StopAtStepHook
from tfdist.estimator.keras_estimator import model_to_estimator
from tfdist.estimator.run_config import RunConfig
from tfdist.estimator.spec import EstimatorSpec
from tfdist.estimator.spec import EvalSpec
from tfdist.estimator.spec import ModeKeys
from tfdist.estimator.spec import TrainSpec
from tfdist.estimator.training import train_and_evaluate
from tfdist.estimator.warm_start import WarmStartSettings
