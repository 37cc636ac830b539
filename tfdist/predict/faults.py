"""Faults by design, for tests: a chosen worker SIGKILLs itself after writing its k-th shard.

`TFDIST_PREDICT_TEST_FAULT="kill_after_shards:RANK:K"` makes the worker of rank RANK kill itself
(`kill -9`) right after its K-th shard file of this attempt is renamed into place, so what is on
disk at that moment is certain, unlike a kill timed from outside.
"""

from __future__ import annotations

import os
import signal

FAULT_VAR = "TFDIST_PREDICT_TEST_FAULT"


def after_shard(rank: int, written: int) -> None:
    """Called after each shard this worker writes (`written` counts them, from 1)."""
    spec = os.environ.get(FAULT_VAR)
    if not spec:
        return
    kind, rank_text, count_text = spec.split(":")
    if kind == "kill_after_shards" and int(rank_text) == rank and int(count_text) == written:
        os.kill(os.getpid(), signal.SIGKILL)
