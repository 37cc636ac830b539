"""Gradient compression and accumulation on a real 2-worker cluster: same results as without.

One cluster start (tests/workers/gradients_job.py) trains a digits model four ways; the custom
loop and Keras `fit` both go through tfdist's all-reduce (compat override) and accumulation.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from tests import multiworker

JOB = str(Path(__file__).parent / "workers" / "gradients_job.py")
STEPS = 60


@pytest.mark.multiworker
def test_compression_and_accumulation_match_float32_full_batch_on_two_workers(tmp_path):
    multiworker.run_workers(["python", JOB, str(tmp_path), str(STEPS)], num_workers=2,
                            timeout=600)
    reports = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    for name in reports[0]:  # every run leaves both workers with the same weights
        for a, b in zip(reports[0][name]["weights"], reports[1][name]["weights"]):
            np.testing.assert_array_equal(a, b, err_msg=name)
    runs = reports[0]

    def max_diff(name):
        return max(float(np.max(np.abs(np.subtract(a, b))))
                   for a, b in zip(runs[name]["weights"], runs["base"]["weights"]))

    assert runs["base"]["accuracy"] > 0.6  # it learned: 0.80 observed after 60 steps, chance 0.1
    # 4 micro-batches of 8 per worker sum to the full batch's gradient: float32 rounding only.
    assert max_diff("accum4") < 1e-4
    # bfloat16 on the wire (8 mantissa bits): weights drift slightly, accuracy does not move.
    assert 0 < max_diff("bf16") < 0.05
    assert abs(runs["bf16"]["accuracy"] - runs["base"]["accuracy"]) <= 0.02
    # fit: Keras's own all-reduce replaced (bf16) and micro-batches (4) under multi-worker.
    assert 0 < max_diff("fit_accum4_bf16") < 0.05
    assert abs(runs["fit_accum4_bf16"]["accuracy"] - runs["base"]["accuracy"]) <= 0.02
