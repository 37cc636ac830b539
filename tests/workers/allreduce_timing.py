"""Times MultiWorkerMirroredStrategy all-reduces of one float32 tensor (a measurement, no test).

Usage: allreduce_timing.py OUT_DIR MEGABYTES REPEATS  (writes OUT_DIR/<task>-<id>.json with the
median seconds per all-reduce after one warm-up, and the algorithm bandwidth in Gbit/s).
"""

import json
import statistics
import sys
import time

import tensorflow as tf

import tfdist


def main(out_dir: str, megabytes: float, repeats: int) -> None:
    strategy = tfdist.get_strategy("multi_worker_mirrored")
    info = tfdist.cluster.resolve()
    n = int(megabytes * 2**20 / 4)

    def replica_fn():
        # Made on each replica's device, then summed across the workers.
        return tf.distribute.get_replica_context().all_reduce("sum", tf.ones([n], tf.float32))

    @tf.function
    def reduce():
        return strategy.experimental_local_results(strategy.run(replica_fn))[0]

    reduce().numpy()  # warm-up: traces and sets up the collective
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        value = reduce()
        value.numpy()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    assert float(value[0]) == info.num_workers
    with open(f"{out_dir}/{info.task_type}-{info.task_id}.json", "w") as f:
        json.dump({"megabytes": megabytes, "seconds": median, "all": times,
                   "gbit_per_s": megabytes * 2**20 * 8 / median / 1e9}, f)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]))
