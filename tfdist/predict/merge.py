"""The chief's last step: wait for every shard, then merge them in key order (or write a manifest)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from tfdist import data as data_lib
from tfdist.predict import store, writers
from tfdist.predict.errors import PredictError
from tfdist.predict.features import ID_FEATURE
from tfdist.predict.postprocess import PostProcess

MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"


def output_path(output_dir: str, fmt: str, merge: bool) -> str:
    """The merged file, or the manifest when not merging."""
    if merge:
        return os.path.join(output_dir, "predictions" + writers.extension(fmt))
    return os.path.join(output_dir, MANIFEST_FILE)


def wait_for(predicate: Callable[[], bool], *, timeout: float | None, what: str,
             tick: Callable[[], None] = lambda: None, poll: float = 0.2) -> None:
    """Polls `predicate` until it holds.

    Raises:
        PredictError: `timeout` seconds passed first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not predicate():
        tick()
        if deadline is not None and time.monotonic() > deadline:
            raise PredictError(f"Timed out after {timeout:.0f}s waiting for {what}. Check the other "
                               "workers' logs; rerun with the same arguments to resume.")
        time.sleep(poll)


def _chunks(output_dir: str, shards: Sequence[data_lib.KeyRange], num_shards: int,
            post: PostProcess, key_name: str) -> Iterator[dict[str, np.ndarray]]:
    for shard in shards:
        keys, outputs = store.read_shard(store.shard_path(output_dir, shard.index, num_shards))
        if len(keys) != shard.size or keys[0] != shard.start or keys[-1] != shard.stop - 1:
            raise PredictError(f"Shard {shard.index} holds keys {keys[0]}..{keys[-1]} "
                               f"({len(keys)} rows), not {shard.start}..{shard.stop - 1}; delete "
                               "it and rerun to score it again.")
        ids = outputs.pop(ID_FEATURE, None)
        yield post.apply(key_name, keys if ids is None else ids, outputs)


def merge(output_dir: str, plan: data_lib.InferencePlan, *, fmt: str, merge_into_one: bool,
          post: PostProcess, key_name: str) -> tuple[str, int]:
    """Post-processes every shard in key order and writes the final output.

    Returns:
        The output path (the merged file or the manifest) and the rows written.
    """
    num = len(plan.shards)
    target = output_path(output_dir, fmt, merge_into_one)
    if merge_into_one:
        rows = writers.write(target, fmt, _chunks(output_dir, plan.shards, num, post, key_name))
        return target, rows
    os.makedirs(os.path.join(output_dir, PARTS_DIR), exist_ok=True)
    parts, rows = [], 0
    for shard in plan.shards:
        name = os.path.join(PARTS_DIR, f"part-{shard.index:05d}-of-{num:05d}{writers.extension(fmt)}")
        count = writers.write(os.path.join(output_dir, name), fmt,
                              _chunks(output_dir, [shard], num, post, key_name))
        parts.append({"path": name, "first_key": shard.start, "last_key": shard.stop - 1,
                      "rows": count})
        rows += count
    store.write_json(target, {"format": fmt, "rows": rows, "parts": parts})
    return target, rows
