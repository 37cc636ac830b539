"""Executes a notebook of notebooks/ top to bottom in a real Jupyter kernel (nbclient).

The notebook is read from the repository and run from a temporary working directory, so nothing
is written into the repository. The kernel is this interpreter's (`python3` kernelspec of the
venv), inherits this process's environment with the repository first on PYTHONPATH (so
`import tfdist` is this checkout; tests/startup too, as for every test child), runs on CPU with matplotlib's inline backend, and gets a
bound for the whole notebook: each cell's timeout is what is left of it.
"""

from __future__ import annotations

import os
import pathlib
import resource
import time

import nbformat
from nbclient import NotebookClient

from tests.multiworker import PYTHONPATH

REPO = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# Generous against a loaded 2-core machine: idle, the slowest notebook takes about a third of it.
NOTEBOOK_SECONDS = 300


def kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    # The repository and the tests' start-up file, as every test child (tests/startup).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PYTHONPATH, env.get("PYTHONPATH")) if p)
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU only, as in the tests
    env.pop("MPLBACKEND", None)       # ipykernel's inline backend, so figures become image/png
    env.pop("TF_CONFIG", None)        # the kernel is a single process; launches set their own
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def children_cpu_seconds() -> float:
    """CPU time of the finished child processes (a kernel, and the workers it started)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def execute(name: str, work_dir: pathlib.Path, seconds: float = NOTEBOOK_SECONDS):
    """Runs notebooks/<name> in a kernel with cwd `work_dir`; returns (executed notebook, seconds).

    Raises:
        nbclient.exceptions.CellExecutionError: A cell raised (its traceback in the message).
        TimeoutError: The notebook did not finish within `seconds`.
    """
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=int(seconds),
                            resources={"metadata": {"path": str(work_dir)}})
    started = time.monotonic()
    deadline = started + seconds
    with client.setup_kernel(env=kernel_env(), cwd=str(work_dir)):
        for index, cell in enumerate(nb.cells):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name}: still running after {seconds:g} s, at cell {index}")
            client.timeout = max(1, int(left))
            client.execute_cell(cell, index)
    return nb, time.monotonic() - started


def image_outputs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def check_executed(name: str, nb) -> None:
    """Every cell tagged `plot` drew a figure; no output mentions absl's flag error."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "plot" in cell.metadata.get("tags", []):
            assert image_outputs(cell), f"{name}: cell {index} is tagged `plot` but has no image/png output"
        text = "".join(out.get("text", "") for out in cell.get("outputs", []))
        assert "UnrecognizedFlagError" not in text, f"{name}: cell {index}: {text[-2000:]}"


def params(names, multiworker):
    """`names` as pytest parameters; those in `multiworker` (they start processes) so marked."""
    import pytest

    return [pytest.param(n, marks=pytest.mark.multiworker) if n in multiworker else n for n in names]


def execute_and_check(name: str, work_dir: pathlib.Path) -> None:
    """`execute`, then `check_executed`; prints the notebook's wall and CPU seconds."""
    cpu = children_cpu_seconds()
    nb, seconds = execute(name, work_dir)
    check_executed(name, nb)
    # CPU time of the kernel and its workers (reaped by now): about the wall time on a quiet machine.
    print(f"{name}: {seconds:.1f} s wall, {children_cpu_seconds() - cpu:.1f} s CPU")
