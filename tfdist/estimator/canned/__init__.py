"""Canned (premade) estimators, heads and feature-column translation for `tfdist.estimator`."""

from tfdist.estimator.canned.feature_columns import make_parse_example_spec
from tfdist.estimator.canned.heads import BinaryClassHead
from tfdist.estimator.canned.heads import Head
from tfdist.estimator.canned.heads import MetricKeys
from tfdist.estimator.canned.heads import MultiClassHead
from tfdist.estimator.canned.heads import MultiLabelHead
from tfdist.estimator.canned.heads import PredictionKeys
from tfdist.estimator.canned.heads import RegressionHead
from tfdist.estimator.canned.premade import BaselineClassifier
from tfdist.estimator.canned.premade import BaselineEstimator
from tfdist.estimator.canned.premade import BaselineRegressor
from tfdist.estimator.canned.premade import BoostedTreesClassifier
from tfdist.estimator.canned.premade import BoostedTreesRegressor
from tfdist.estimator.canned.premade import DNNClassifier
from tfdist.estimator.canned.premade import DNNEstimator
from tfdist.estimator.canned.premade import DNNLinearCombinedClassifier
from tfdist.estimator.canned.premade import DNNLinearCombinedEstimator
from tfdist.estimator.canned.premade import DNNLinearCombinedRegressor
from tfdist.estimator.canned.premade import DNNRegressor
from tfdist.estimator.canned.premade import LinearClassifier
from tfdist.estimator.canned.premade import LinearEstimator
from tfdist.estimator.canned.premade import LinearRegressor
