"""The output directory: run manifest, shard files that appear only when complete, worker stats.

    <output_dir>/run.json                    the arguments' fingerprint (a rerun must match it)
    <output_dir>/shards/shard-00003-of-00011.npz   keys + raw outputs of one shard
    <output_dir>/workers/worker-00001.json   one worker's timings for the last attempt
    <output_dir>/predictions.<ext> | parts/ + manifest.json    the chief's merged output
    <output_dir>/summary.json                the run's summary

Every file is written under a temporary name in the same directory, flushed to disk, then
renamed (`os.replace` is atomic), so a reader never sees half a file and a killed worker leaves
at most a stale temporary file, which the next attempt removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO, Any

import numpy as np

from tfdist.predict.errors import PredictError

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
SHARDS_DIR = "shards"
WORKERS_DIR = "workers"
KEY = "__key__"
_TEMP_MARK = ".tmp-"
_SHARD = re.compile(r"^shard-(\d{5,})-of-(\d{5,})\.npz$")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Opens a temporary file beside `path`; on success it is synced and renamed to `path`."""
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}{_TEMP_MARK}", dir=directory or ".")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside `path` for a writer that opens files itself; renamed on success."""
    directory, name = os.path.split(path)
    fd, temp = tempfile.mkstemp(prefix=f".{name}{_TEMP_MARK}", dir=directory or ".")
    os.close(fd)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
        raise


def write_json(path: str, value: Any) -> None:
    with atomic_open(path, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def check_writable(output_dir: str) -> None:
    """Creates `output_dir` (and its subdirectories) and proves it is writable.

    Raises:
        PredictError: It cannot be created or written.
    """
    try:
        for sub in ("", SHARDS_DIR, WORKERS_DIR):
            os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=f".probe{_TEMP_MARK}"):
            pass
    except OSError as e:
        raise PredictError(f"Invalid value for argument `output_dir`. Received: output_dir="
                           f"{output_dir!r}, which is not writable ({e.strerror or e}). Pass a "
                           "directory you can write to.") from None


def claim_run(output_dir: str, fingerprint: Mapping[str, Any]) -> bool:
    """Records the run's fingerprint, or checks it against the one already there.

    Every worker calls it; the first to arrive writes `run.json` (create-if-absent, atomic), the
    others compare.

    Returns:
        True when this run resumes an earlier one (the file was there).

    Raises:
        PredictError: The directory holds a run with other arguments; nothing is touched.
    """
    path = os.path.join(output_dir, RUN_FILE)
    wanted = json.loads(json.dumps(dict(fingerprint)))
    if not os.path.exists(path):
        fd, temp = tempfile.mkstemp(prefix=f".{RUN_FILE}{_TEMP_MARK}", dir=output_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(wanted, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)  # fails if another worker got there first
            return False
        except FileExistsError:
            pass
        finally:
            os.remove(temp)
    try:
        existing = read_json(path)
    except (OSError, ValueError) as e:
        raise PredictError(f"{path} is unreadable ({e}); it is not a tfdist-predict run. Use a new "
                           "output_dir.") from None
    if existing != wanted:
        changed = [k for k in sorted(set(existing) | set(wanted)) if existing.get(k) != wanted.get(k)]
        detail = "; ".join(f"{k}: {_short(existing.get(k))} -> {_short(wanted.get(k))}"
                           for k in changed[:3])
        raise PredictError(f"output_dir {output_dir!r} holds a run with different arguments "
                           f"({detail}). Rerun with the same arguments to resume, or pass a new "
                           "output_dir (or delete this one) to start over.")
    return True


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shard_path(output_dir: str, index: int, num_shards: int) -> str:
    return os.path.join(output_dir, SHARDS_DIR, f"shard-{index:05d}-of-{num_shards:05d}.npz")


def completed_shards(output_dir: str, num_shards: int) -> set[int]:
    """Indices of the shard files present (complete by construction)."""
    found = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(os.path.join(output_dir, SHARDS_DIR)):
            match = _SHARD.match(name)
            if match and int(match.group(2)) == num_shards:
                found.add(int(match.group(1)))
    return found


def remove_stale_temps(output_dir: str, shard_indices: set[int], num_shards: int) -> int:
    """Removes temporary files a killed attempt left for these shards; returns how many."""
    removed = 0
    directory = os.path.join(output_dir, SHARDS_DIR)
    names = {os.path.basename(shard_path(output_dir, i, num_shards)) for i in shard_indices}
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(directory):
            if _TEMP_MARK in name and name[1:].split(_TEMP_MARK)[0] in names:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(directory, name))
                    removed += 1
    return removed


def write_shard(path: str, keys: np.ndarray, outputs: Mapping[str, np.ndarray]) -> None:
    """Writes one shard's keys and outputs (sorted by key) so it appears only when complete."""
    order = np.argsort(keys, kind="stable")
    columns = {n: v[order] for n, v in outputs.items()}
    with atomic_open(path) as f:
        # numpy's stub takes the **arrays for its `allow_pickle: bool`; they are array names.
        np.savez(f, **{KEY: keys[order]}, **columns)  # type: ignore[arg-type]


def read_shard(path: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as loaded:
        arrays = {k: loaded[k] for k in loaded.files}
    return arrays.pop(KEY), arrays


def worker_stats_path(output_dir: str, rank: int) -> str:
    return os.path.join(output_dir, WORKERS_DIR, f"worker-{rank:05d}.json")
