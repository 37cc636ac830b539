"""Route 1: custom training loops on `strategy.run` (inner loop: Trainer; outer loop: Controller)."""

from tfdist.loop.controller import Controller
from tfdist.loop.controller import NonFiniteLossError
from tfdist.loop.trainer import Trainer
from tfdist.loop.trainer import TrainerError
