"""A multi-worker prediction program: runs `tfdist.predict.run` once per spec, in order.

    python -m tests.workers.predict_job SPEC.json

SPEC.json: a list of `PredictOptions` keyword dicts (`postprocess` omitted). Each worker splits
its CPU into 2 logical devices first. Lets one launch score several models, which saves a
TensorFlow start-up per model in the tests.
"""

from __future__ import annotations

import json
import sys


def main(spec_path: str) -> int:
    from tfdist import strategy
    from tfdist import predict

    strategy.configure_virtual_cpus(2)
    with open(spec_path) as f:
        specs = json.load(f)
    for spec in specs:
        predict.run(predict.PredictOptions(**spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
