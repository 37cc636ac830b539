"""The chief's progress bar (rows, rows/s, ETA) and the run summary."""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    """A one-line progress bar on a terminal, or a line every `interval` seconds otherwise.

    Args:
        total: Records in the run.
        done: Records already done when it starts (skipped shards); not counted in the rate.
        enabled: Print anything at all. Defaults to True.
        stream: Where to print. Defaults to stderr.
        interval: Seconds between updates. Defaults to 0.5 on a terminal, 10 otherwise.
    """

    def __init__(self, total: int, done: int = 0, *, enabled: bool = True,
                 stream: IO[str] | None = None, interval: float | None = None) -> None:
        self.total, self.start_done, self.done = total, done, done
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.started = time.perf_counter()
        self._last = self.started

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = self.total - self.done
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else ("0s" if left <= 0 else "?")
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        bar = "#" * filled + "." * (width - filled)
        return (f"[{bar}] {self.done}/{self.total} rows {100 * self.done / self.total:5.1f}% "
                f"{rate:,.0f} rows/s ETA {eta}")

    def update(self, done: int, *, force: bool = False) -> None:
        self.done = done
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self.done, force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the end of a run."""
    lines = [f"tfdist-predict: {summary['rows']} rows -> {summary['output']} "
             f"({summary['shards']} shard(s): {summary['shards_written']} written, "
             f"{summary['shards_skipped']} skipped as already done)",
             f"  {summary['rows_per_second']:,.0f} rows/s scoring; wall {summary['wall_seconds']:.1f}s"
             f" (merge {summary['merge_seconds']:.1f}s); input pipeline waits "
             f"{summary['input_seconds']:.2f}s in all"]
    for w in summary["workers"]:
        lines.append(f"  worker {w['rank']}: {w['rows_scored']} rows in {w['loop_seconds']:.2f}s "
                     f"(input {w['input_seconds']:.2f}s, inference {w['inference_seconds']:.2f}s, "
                     f"write {w['write_seconds']:.2f}s; start-up {w['startup_seconds']:.1f}s), "
                     f"{w['shards_written']} shards written, {w['shards_skipped']} skipped")
    return "\n".join(lines)
