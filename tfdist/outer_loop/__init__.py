"""The one outer training loop (shared layer): cadence, checkpoints, preemption, evaluation."""

from tfdist.outer_loop.controller import NONFINITE_ACTIONS
from tfdist.outer_loop.controller import NonFiniteLossError
from tfdist.outer_loop.controller import OuterLoop
from tfdist.outer_loop.evaluator import EvaluationRun
from tfdist.outer_loop.evaluator import evaluate_continuously
from tfdist.outer_loop.evaluator import latest_tf_checkpoint
from tfdist.outer_loop.evaluator import mark_training_ended
from tfdist.outer_loop.evaluator import mark_training_started
from tfdist.outer_loop.interface import EvalTarget
from tfdist.outer_loop.interface import TrainAction
from tfdist.outer_loop.interface import TrainTarget
