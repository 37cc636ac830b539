"""Workaround: destroys finished tf.data iterators off the training thread.

Upstream: no issue found (searched 2026-12-01); FINDINGS §2 cause 1. On TF 2.21, destroying an autotuned iterator that was consumed inside a `tf.function` can block
until the tf.data autotune thread's next timed wake-up: 2.5 s, 5 s, 10 s, ... after the iterator
was created (FINDINGS §2, cause 1). Every epoch boundary, evaluation and Keras `fit` call drops an
iterator. The wait releases the GIL, so destroying them on a background thread removes the stall
from training. Used by `tfdist.data` (routes) and `tfdist.compat.keras_fit` (Keras's iterators).

Once the interpreter is shutting down, iterators are destroyed on the caller's thread, as without
tfdist: a thread started during finalization never runs, so `Thread.start` waits for it forever
(an uncaught exception in `fit` leaves Keras's iterator to be dropped then: issue 13).

The hand-over waits until the reaper holds the last reference, read with `sys.getrefcount`
(CPython's reference counts: an implementation detail, hence here). Canary:
tests/test_compat.py::test_canary_iterator_teardown_stall_still_present_upstream.
"""

from __future__ import annotations

import atexit
import queue
import sys
import threading
import time
from typing import Any

UPSTREAM = "FINDINGS §2 cause 1 (tf.data autotune wake-up on iterator destruction); no upstream issue"


class _IteratorReaper:
    """A daemon thread that drops the iterators handed to it; joined at interpreter exit."""

    _STOP = object()
    # The longest stall seen is the autotuner's next wake-up; this bounds the wait at exit.
    _EXIT_TIMEOUT_SECS = 60.0
    _HANDOVER_TIMEOUT_SECS = 5.0

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.released = 0
        # Registered before any thread exists, so every thread started (even by another atexit
        # handler) is joined before finalization.
        atexit.register(self._drain)

    def release(self, iterator: Any) -> None:
        with self._lock:
            if self._closed or sys.is_finalizing():
                # Too late for the thread: the caller's reference drops it on its own thread.
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tfdist-iterator-reaper", daemon=True
                )
                self._thread.start()
            self.released += 1
            self._queue.put(iterator)

    def _run(self) -> None:
        while True:
            iterator = self._queue.get()
            if iterator is self._STOP:
                return
            # Callers may still hold a transient reference (a loop variable); wait until ours is
            # the last one, or the destructor would run on their thread after all. Not at exit:
            # a traceback kept for printing holds its frames' references until finalization.
            deadline = time.monotonic() + self._HANDOVER_TIMEOUT_SECS
            while (sys.getrefcount(iterator) > 2 and not self._closed
                   and time.monotonic() < deadline):
                time.sleep(0.005)
            del iterator  # the (possibly blocking) destructor runs here, not on the caller

    def _drain(self) -> None:
        # A daemon thread still inside TensorFlow's C++ destructor when the interpreter exits is
        # unwound by force, which aborts the process ("FATAL: exception not rethrown").
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(self._STOP)
            thread.join(self._EXIT_TIMEOUT_SECS)


_reaper = _IteratorReaper()


def release_iterator(iterator: Any) -> None:
    """Hands a finished iterator over to be destroyed off the training thread.

    The caller must drop its own references after this call.

    Args:
        iterator: A `tf.data` or distributed iterator that will not be used again.
    """
    _reaper.release(iterator)


def released_count() -> int:
    """How many iterators were handed over so far (for tests and diagnostics)."""
    return _reaper.released
