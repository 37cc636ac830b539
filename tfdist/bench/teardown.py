"""Process teardown for the benchmark: no tf.data iterator is destroyed before the process ends.

Destroying an autotuned tf.data iterator on TF 2.21 can block until the autotune thread's next
timed wake-up, which for an iterator that lived minutes is minutes away (FINDINGS §2, cause 1).
In a benchmark worker this showed as a chief writing its report 60 s after its peer, and then
hanging in `RootDataset::Iterator::~Iterator` at exit. So built routes and pipelines are kept
alive (`keep`), and the binary ends with `exit_now` once its output is written and flushed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_KEPT: list[Any] = []


def keep(obj: Any) -> None:
    """Keeps `obj` (and the iterators it holds) alive until the process ends."""
    _KEPT.append(obj)


def exit_now(status: int) -> None:
    """Flushes stdout and stderr and ends the process without running any destructor."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
