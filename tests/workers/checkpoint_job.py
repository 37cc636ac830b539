"""Worker program for tests/test_checkpoint.py: `tfdist.checkpoint` across 2 real workers.

Usage: checkpoint_job.py MODEL_DIR OUT_DIR
Each worker votes in `any_worker` (only worker:1 votes yes in the first round), saves its own
variable through one `CheckpointManager` on `MODEL_DIR` (the chief writes there, worker:1 into a
scratch directory under $TMPDIR), then restores the chief's checkpoint. Writes
OUT_DIR/<task_type>-<task_id>.json with what it saw.
"""

import json
import os
import sys

import tensorflow as tf

import tfdist
from tfdist import checkpoint


def main(model_dir: str, out_dir: str) -> None:
    info = tfdist.cluster.resolve()
    strategy = tfdist.get_strategy("multi_worker_mirrored")
    votes = {
        "one_yes": checkpoint.any_worker(strategy, info.task_id == 1),
        "all_no": checkpoint.any_worker(strategy, False),
        "all_yes": checkpoint.any_worker(strategy, True),
    }
    # Outside the strategy's scope, so each worker keeps its own value: only the chief's is saved.
    value = tf.Variable(10.0 + info.task_id)
    manager = checkpoint.CheckpointManager(tf.train.Checkpoint(value=value), model_dir)
    saved = manager.save(step=7)
    checkpoint.any_worker(strategy, False)  # a barrier: the chief has finished writing
    value.assign(0.0)
    restored = manager.restore_latest()
    report = {"votes": votes, "is_chief": manager.is_chief, "saved": saved, "restored": restored,
              "value": float(value.numpy())}
    with open(os.path.join(out_dir, f"{info.task_type}-{info.task_id}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
