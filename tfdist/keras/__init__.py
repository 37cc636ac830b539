"""Route 2: Keras 3 `Model.fit` under tf.distribute (multi-worker-safe callbacks, evaluator).

The fixes that make plain `fit` work and fast live in `tfdist.compat` and are applied by
`tfdist.get_strategy` (or `tfdist.compat.apply()` for strategies built by hand).
"""

from tfdist.keras import callbacks
from tfdist.keras import gradients
from tfdist.keras.sidecar_evaluator import SidecarEvaluator
