"""Bytes a training step moves between processes, parameter-server vs all-reduce (an estimate).

Counted from the model's shapes and the benchmark's own ids, not measured on the wire:

- `parameter_server` (a step runs on one worker with the whole global batch): the worker reads
  every dense weight from the ps and sends back its gradient; the embedding lookup runs on the
  ps (a gather is placed with its variable), so the ids go there and only the looked-up rows
  come back, one per id; their gradient returns as `tf.IndexedSlices` (one row and one index
  per id), applied on the ps by a scatter. With `keras.layers.Embedding` as the lookup
  (`parameter_server_keras_lookup`) the worker reads the whole table instead (its `ops.take`
  converts the variable to a tensor first); the gradient still goes back sparse.
- `multi_worker` (every worker a replica with `batch / workers` examples): dense gradients are
  summed by a ring all-reduce (each worker sends `2 (W - 1) / W` of their bytes); the embedding
  gradient stays `tf.IndexedSlices` and is all-gathered (each worker sends its rows and indices
  to the `W - 1` others). Every worker holds a whole replica of the table.

Totals are summed over all processes, float32 weights and int32 ids. Framing, RPC and
collective headers are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_BYTES = 4
ID_BYTES = 4


def per_step(workload: Any, batch: int, workers: int) -> dict[str, Any]:
    """Estimated bytes per training step of `workload` at global batch `batch`.

    Args:
        workload: A `tfdist.bench.workloads.Workload` (its `table` and `features` are read).
        batch: Global batch size.
        workers: Worker processes of the `multi_worker` row.

    Returns:
        `{"parameter_server": ..., "parameter_server_keras_lookup": ..., "multi_worker": ...}`,
        each with `dense`, `embedding`
        and `total` bytes, and for reference the table's bytes and the unique ids per batch.
    """
    rows, dim = workload.table if workload.table is not None else (0, 0)
    dense_bytes = (workload.params - rows * dim) * FLOAT_BYTES
    ids = int(np.prod(workload.features.shape[1:])) if workload.table is not None else 0
    row_bytes = dim * FLOAT_BYTES
    ps_lookup = batch * ids * (ID_BYTES + row_bytes)  # ids there, rows back
    ps_update = batch * ids * (ID_BYTES + row_bytes)  # IndexedSlices: one index and row per id
    shard = batch // workers
    gather_out = shard * ids * (ID_BYTES + row_bytes) * (workers - 1)  # per worker
    ring = 2 * (workers - 1) / workers * dense_bytes  # per worker
    keras_lookup = rows * dim * FLOAT_BYTES  # the whole table read, ids stay on the worker
    return {
        "parameter_server_keras_lookup": {
            "dense": 2 * dense_bytes, "embedding": keras_lookup + ps_update,
            "total": 2 * dense_bytes + keras_lookup + ps_update},
        "parameter_server": {"dense": 2 * dense_bytes, "embedding": ps_lookup + ps_update,
                             "total": 2 * dense_bytes + ps_lookup + ps_update},
        "multi_worker": {"dense": int(workers * ring), "embedding": workers * gather_out,
                         "total": int(workers * ring) + workers * gather_out},
        "table_bytes": rows * dim * FLOAT_BYTES,
        "dense_bytes": dense_bytes,
        "unique_ids_per_batch": unique_ids(workload, batch),
    }


def unique_ids(workload: Any, batch: int) -> float:
    """Mean distinct ids in a batch of `batch` examples of the workload (0 without a table)."""
    if workload.table is None:
        return 0.0
    batches = [workload.features[i:i + batch] for i in range(0, len(workload.features), batch)]
    return float(np.mean([len(np.unique(b)) for b in batches if len(b) == batch] or [0]))


def render(traffic: dict[str, Any]) -> str:
    """One line per row, in MB per step."""
    def mb(value: float) -> str:
        return f"{value / 1e6:,.2f} MB"

    lines = [f"  estimated bytes per step (all processes; table {mb(traffic['table_bytes'])}, "
             f"dense weights {mb(traffic['dense_bytes'])}, "
             f"{traffic['unique_ids_per_batch']:,.0f} distinct ids per batch):"]
    for row in ("parameter_server", "parameter_server_keras_lookup", "multi_worker"):
        t = traffic[row]
        lines.append(f"    {row}: {mb(t['total'])} (dense {mb(t['dense'])}, embedding "
                     f"{mb(t['embedding'])})")
    return "\n".join(lines)
