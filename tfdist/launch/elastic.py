"""Elastic sizes for ``tfdist-launch --workers MIN:MAX``: worker slots and their restart budgets.

A job starts MAX workers, one per *slot*. A slot is a stable identity (``TFDIST_SLOT``) that
survives resizes, while task ids are renumbered 0..N-1 for every group: TensorFlow's collectives
need a dense cluster. When a group fails, the failure is charged to the slot of the first
process that failed on its own. A slot may fail `budget` times (``--max-restarts``), each time
the group restarts at the same size; one failure more and the slot is dropped, and the group
restarts with one worker fewer, unless it is at MIN, when the job fails. Every restart gets
fresh ports and a new TF_CONFIG; the routes resume from their checkpoints. Knows nothing of TF.
"""

from __future__ import annotations

import dataclasses
import re

from tfdist.launch.errors import LaunchError

_RANGE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


@dataclasses.dataclass(frozen=True)
class WorkerRange:
    """How many workers a job may run with: exactly `max`, down to `min` after failures."""

    min: int
    max: int

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LaunchError(f"Invalid value for argument `workers`. Received: {name}={value!r}. "
                                  "Worker counts are integers >= 1, e.g. 2 or 2:4.")
        if self.min > self.max:
            raise LaunchError(f"Invalid value for argument `workers`. Received: {self.min}:{self.max}. "
                              f"MIN must not exceed MAX; did you mean {self.max}:{self.min}?")

    @classmethod
    def parse(cls, text: str) -> WorkerRange:
        """``"3"`` (fixed) or ``"2:3"`` (torchrun's MIN:MAX spelling)."""
        match = _RANGE.match(text)
        if not match:
            raise LaunchError(f"Invalid value for argument `--workers`. Received: {text!r}. "
                              'Pass a count ("2") or a range MIN:MAX ("2:4").')
        low = int(match.group(1))
        return cls(low, int(match.group(2)) if match.group(2) is not None else low)

    @property
    def elastic(self) -> bool:
        return self.min < self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.max}" if self.elastic else str(self.max)


@dataclasses.dataclass(frozen=True)
class Resize:
    """One resize of an elastic job: sizes, the dropped slot and why."""

    from_workers: int
    to_workers: int
    slot: int
    reason: str


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do after a failure: ``"restart"``, ``"resize"`` or ``"give_up"``, and the line to log."""

    action: str
    message: str
    resize: Resize | None = None


class Slots:
    """The live worker slots of an elastic job and the failures charged to each.

    Args:
        workers: The worker range.
        budget: Failures each slot may have before it is dropped (or, at the minimum size, the
            job fails). A chief or evaluator is charged the same way but never dropped.
    """

    def __init__(self, workers: WorkerRange, budget: int) -> None:
        self.workers = workers
        self.budget = budget
        self.active: list[int] = list(range(workers.max))
        self.failures: dict[int | str, int] = {}
        self.resizes: list[Resize] = []

    @property
    def size(self) -> int:
        return len(self.active)

    def slot_of(self, task_type: str, task_id: int) -> int | str:
        """The slot a worker of the current group runs in; a chief or evaluator's is its type."""
        return self.active[task_id] if task_type == "worker" else task_type

    def on_failure(self, task_type: str, task_id: int, status: str) -> Decision:
        """Charges a failure of `task_type:task_id` (described by `status`) and decides."""
        slot = self.slot_of(task_type, task_id)
        name = f"{task_type}:{task_id}"
        count = self.failures[slot] = self.failures.get(slot, 0) + 1
        where = f"{name} (slot {slot})" if isinstance(slot, int) else name
        if count <= self.budget:
            return Decision("restart", f"{where} failed ({status}); restarting the group of "
                                       f"{self.size} worker(s) (failure {count} of this slot, "
                                       f"budget {self.budget})")
        over = (f"{where} failed ({status}) {count} time(s), more than its restart budget of "
                f"{self.budget}")
        if not isinstance(slot, int):
            return Decision("give_up", f"{over}; the {task_type} cannot be dropped")
        if self.size <= self.workers.min:
            return Decision("give_up", f"{over}, and the job is at its minimum of "
                                       f"{self.workers.min} worker(s)")
        self.active.remove(slot)
        resize = Resize(self.size + 1, self.size, slot, over)
        self.resizes.append(resize)
        return Decision("resize", f"resizing {resize.from_workers} -> {resize.to_workers} worker(s): "
                                  f"{over}; restarting without slot {slot} on fresh ports "
                                  f"(slots {','.join(map(str, self.active))})", resize)
