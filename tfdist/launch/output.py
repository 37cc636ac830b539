"""Where children's output goes: a prefixed stream, memory, one log file per process."""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import IO, TextIO

from tfdist import quiet
from tfdist.launch.errors import LaunchError

# Lines by which TensorFlow's gRPC server (or any program) says its port was taken meanwhile.
PORT_CLASH_MARKERS = ("Address already in use", "Failed to add port", "failed to bind")


class Output:
    """Where children's lines go: a stream with a ``[worker:1]`` prefix, memory, log files.

    One instance serves a whole launch (all restarts), so captured output and log files hold
    every attempt. Launcher messages go to ``messages``, prefixed ``tfdist-launch: ``.

    Args:
        stream: Text stream for prefixed lines (e.g. `sys.stdout`), or None.
        capture: Keep every line in memory for `captured()`. Defaults to False.
        log_dir: Directory for one ``<task>-<id>.log`` file per process, or None.
        messages: Text stream for the launcher's own messages, or None to drop them.
        drop_startup_noise: Leave TensorFlow's C++ start-up noise (`tfdist.quiet`) out of the
            stream and the captured output; log files keep every line. Defaults to False.
    """

    def __init__(self, *, stream: TextIO | None = None, capture: bool = False,
                 log_dir: str | os.PathLike | None = None, messages: TextIO | None = None,
                 drop_startup_noise: bool = False) -> None:
        self._lock = threading.Lock()  # one writer at a time: lines never interleave mid-line
        self.drop_startup_noise = drop_startup_noise
        self._stream = stream
        self._messages = messages
        self._captured: dict[str, list[str]] | None = (
            collections.defaultdict(list) if capture else None)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._logs_started: set[str] = set()  # truncated at a launch's first attempt, then appended
        if self._log_dir is not None:
            try:
                self._log_dir.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise LaunchError(
                    f"cannot create the log directory {str(log_dir)!r}: {err.strerror}") from None

    def message(self, text: str) -> None:
        """Writes one launcher message line."""
        if self._messages is not None:
            self._write(self._messages, f"tfdist-launch: {text}\n")

    def captured(self, name: str) -> str:
        """Everything captured for one process, e.g. ``captured("worker:1")``."""
        return "\n".join(self._captured.get(name, ())) if self._captured is not None else ""

    def open(self, name: str, header: str | None = None) -> Sink:
        """Opens the sink for one process of one attempt; ``header`` starts a restart's section."""
        log = None
        if self._log_dir is not None:
            mode = "a" if name in self._logs_started else "w"
            self._logs_started.add(name)
            log = open(self._log_dir / f"{name.replace(':', '-')}.log", mode, encoding="utf-8")
        sink = Sink(self, name, log)
        if header is not None:
            sink.record(header)
        return sink

    def _write(self, stream: TextIO, text: str) -> None:
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (e.g. `| head`) must not stop the job
                if stream is self._stream:
                    self._stream = None
                else:
                    self._messages = None


class Sink:
    """One process's output channel for one attempt."""

    def __init__(self, output: Output, name: str, log: IO[str] | None) -> None:
        self._output = output
        self._name = name
        self._log = log
        self.port_clash = False
        self._noise = quiet.StartupNoiseFilter() if output.drop_startup_noise else None

    def record(self, line: str) -> None:
        """Captures and logs a line without streaming it (restart headers)."""
        if self._output._captured is not None:
            self._output._captured[self._name].append(line)
        if self._log is not None:
            self._log.write(line + "\n")
            self._log.flush()

    def write(self, line: str) -> None:
        if any(marker in line for marker in PORT_CLASH_MARKERS):
            self.port_clash = True
        if self._noise is not None and self._noise.is_noise(line):
            if self._log is not None:
                self._log.write(line + "\n")
                self._log.flush()
            return
        self.record(line)
        stream = self._output._stream
        if stream is not None:
            self._output._write(stream, f"[{self._name}] {line}\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
