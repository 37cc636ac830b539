"""tfdist-bench: the training routes timed side by side, against a hand loop and the hardware.

    tfdist-bench                                  # dense model, every route and strategy
    tfdist-bench --model resnet --strategies default,mirrored --json out.json --plot out.png
    python -m tfdist.bench --help

Modules: `options` (the command line as a value, no TensorFlow), `cli` (parse, run, print),
`benchmark` (one whole run), `workloads` (models and data), `routes` (the five routes),
`suite` (interleaved timing of routes), `timing` (summaries), `peak` (matmul peak), `pipeline`
(input pipelines alone), `multiworker` (worker processes via tfdist.launch), `machine`,
`report` (targets and tables), `plot` (optional PNG). See docs/benchmarks.md.

This file only re-exports the entry points; importing it loads no TensorFlow.
"""

from tfdist.bench.cli import main
from tfdist.bench.cli import run

__all__ = ["main", "run"]
