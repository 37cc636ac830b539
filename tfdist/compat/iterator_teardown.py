"""Workaround: destroys tf.data iterators off the thread that drops them.

Upstream: no issue found (searched 2026-12-01); FINDINGS §2 cause 1. On TF 2.21, destroying an
autotuned iterator that was consumed inside a `tf.function` can block until the tf.data autotune
thread's next timed wake-up: 2.5 s, 5 s, 10 s, 20 s, 41 s, 82 s ... after the iterator was created.
Every epoch boundary, evaluation and Keras `fit` call drops an iterator, and an iterator caught in
a reference cycle is destroyed whenever the garbage collector gets to it, possibly minutes later:
then the stall is as long as the iterator is old (tests that take 2 s alone took 98 s in the
suite). The wait releases the GIL, so destroying iterators on a background thread removes the
stall from training.

Two ways in, one thread:
- On import, `OwnedIterator` and `OwnedMultiDeviceIterator` get a finalizer that hands their
  eager resource handle (whose destructor is what blocks) to the reaper thread, wherever and
  however the Python object dies: a dropped reference, the garbage collector, Keras's epoch
  iterator, a user's own loop.
- `release_iterator` hands a whole iterator over (the routes use it at their epoch boundaries).

Once the interpreter is shutting down, iterators are destroyed on the caller's thread, as without
tfdist: a thread started during finalization never runs, so `Thread.start` waits for it forever
(an uncaught exception in `fit` leaves Keras's iterator to be dropped then: issue 13).

The reaper destroys an object once it holds the last reference, read with `sys.getrefcount`
(CPython's reference counts: an implementation detail, hence here). Canary:
tests/test_compat.py::test_canary_iterator_teardown_stall_still_present_upstream.
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import sys
import threading
import time
from typing import Any, Callable, Iterator

from tensorflow.python.data.ops import iterator_ops, multi_device_iterator_ops
from tensorflow.python.framework import ops as framework_ops

UPSTREAM = "FINDINGS §2 cause 1 (tf.data autotune wake-up on iterator destruction); no upstream issue"


class _IteratorReaper:
    """A daemon thread that drops the objects handed to it; joined at interpreter exit.

    Safe to call from finalizers: the garbage collector may run one on any thread, including
    this one and one that is inside `release` already (hence the re-entrant lock and the
    re-entrant `SimpleQueue.put`).
    """

    _STOP = object()
    # The longest stall seen is the autotuner's next wake-up; this bounds the wait at exit.
    _EXIT_TIMEOUT_SECS = 60.0
    # A caller may still hold a transient reference (a loop variable, the dying object's own
    # attribute): wait this long for ours to become the last one, then drop ours anyway.
    _HANDOVER_TIMEOUT_SECS = 5.0
    _POLL_SECS = 0.005

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._closed = False
        self.counts = {"released": 0, "finalized": 0}
        # Registered before any thread exists, so every thread started (even by another atexit
        # handler) is joined before finalization.
        atexit.register(self._drain)

    def release(self, obj: Any, kind: str = "released") -> None:
        with self._lock:
            if self._closed or sys.is_finalizing():
                # Too late for the thread: the caller's reference drops it on its own thread.
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tfdist-iterator-reaper", daemon=True
                )
                self._thread.start()
            self.counts[kind] += 1
            self._queue.put((time.monotonic() + self._HANDOVER_TIMEOUT_SECS, obj))

    def _run(self) -> None:
        pending: list[tuple[float, Any]] = []
        while True:
            try:
                item = self._queue.get(timeout=self._POLL_SECS if pending else None)
            except queue.Empty:
                item = None
            if item is self._STOP:
                return  # `pending` is dropped here, on this thread
            if item is not None:
                pending.append(item)
                item = None  # or the newest entry would outlive its sweep
            # Entries not kept are destroyed (possibly blocking) when the old list is dropped.
            pending = self._still_referenced(pending)

    def _still_referenced(self, pending: list[tuple[float, Any]]) -> list[tuple[float, Any]]:
        now = time.monotonic()
        # Two references when ours is the last: the tuple's and getrefcount's argument. Not at
        # exit: a traceback kept for printing holds its frames' references until finalization.
        return [entry for entry in pending
                if sys.getrefcount(entry[1]) > 2 and not self._closed and now < entry[0]]

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
_finalizers_enabled = True


def release_iterator(iterator: Any) -> None:
    """Hands a finished iterator over to be destroyed off the training thread.

    The caller must drop its own references after this call.

    Args:
        iterator: A `tf.data` or distributed iterator that will not be used again.
    """
    _reaper.release(iterator)


def finalized_count() -> int:
    """How many iterator resources their finalizers handed over so far (for tests)."""
    return _reaper.counts["finalized"]


@contextlib.contextmanager
def finalizers_disabled() -> Iterator[None]:
    """Iterators that die inside this block are destroyed where they die, as upstream (canary)."""
    global _finalizers_enabled
    _finalizers_enabled = False
    try:
        yield
    finally:
        _finalizers_enabled = True


def _hand_over_on_finalize(resource_attr: str, previous: Callable[[Any], None] | None):
    def __del__(self) -> None:
        try:
            resource = vars(self).get(resource_attr)
            # Only eager handles own a C++ iterator; graph tensors are symbolic.
            if _finalizers_enabled and isinstance(resource, framework_ops.EagerTensor):
                _reaper.release(resource, kind="finalized")
        except Exception:  # noqa: BLE001  (a finalizer must never raise; upstream behaviour then)
            pass
        if previous is not None:
            previous(self)

    return __del__


def _install_finalizers() -> None:
    for cls, resource_attr in ((iterator_ops.OwnedIterator, "_iterator_resource"),
                               (multi_device_iterator_ops.OwnedMultiDeviceIterator,
                                "_multi_device_iterator_resource")):
        if getattr(cls.__dict__.get("__del__"), "_tfdist", False):
            continue  # idempotent
        finalizer = _hand_over_on_finalize(resource_attr, cls.__dict__.get("__del__"))
        finalizer._tfdist = True
        cls.__del__ = finalizer


_install_finalizers()
