"""Worker program: records which example ids this worker receives through tfdist.data.

Usage: sharding_worker.py OUT_DIR RECORDS_GLOB NUM_EXAMPLES
Writes OUT_DIR/<task_type>-<task_id>.json with, per case, the ids seen and per-replica shapes.
"""

import json
import os
import sys

import tensorflow as tf

import tfdist
from tfdist import data


def _parse(record):
    return tf.io.parse_single_example(record, {"id": tf.io.FixedLenFeature([], tf.int64)})["id"]


def main(out_dir: str, records_glob: str, num_examples: int) -> None:
    info = tfdist.cluster.resolve()
    strategy = tfdist.get_strategy("multi_worker_mirrored")
    in_memory = tf.data.Dataset.range(num_examples)
    cases = {}
    for name, source, sharding, map_fn in [
        ("data", in_memory, "auto", None),
        ("file", records_glob, "auto", _parse),
        ("forced_data_on_files", records_glob, "data", _parse),
    ]:
        for gbs in (4, 6):
            spec = data.DataSpec(
                source=source,
                global_batch_size=gbs,
                repeat=False,
                drop_remainder=False,
                shuffle_buffer=64,
                sharding=sharding,
                map_fn=map_fn,
                seed=1,
            )
            plan = data.plan_sharding(
                spec,
                tf.distribute.InputContext(
                    num_input_pipelines=info.num_workers,
                    input_pipeline_id=info.rank,
                    num_replicas_in_sync=strategy.num_replicas_in_sync,
                ),
            )
            ids, shapes = [], []
            for batch in data.distribute(strategy, spec):
                for local in strategy.experimental_local_results(batch):
                    ids.extend(int(v) for v in local.numpy())
                    shapes.append(int(local.shape[0]))
            cases[f"{name}/{gbs}"] = {"ids": ids, "shapes": shapes, "policy": plan.policy}
    path = os.path.join(out_dir, f"{info.task_type}-{info.task_id}.json")
    with open(path, "w") as f:
        json.dump({"describe": tfdist.describe(strategy), "cases": cases}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
