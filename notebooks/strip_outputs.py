"""Strips outputs, execution counts and run metadata from notebooks, in place (`make strip-notebooks`).

    python notebooks/strip_outputs.py                 # every notebooks/*.ipynb
    python notebooks/strip_outputs.py path.ipynb ...

Committed notebooks carry no outputs: the plots a reader sees are made by running them, and
tests/test_notebooks.py fails on a notebook that carries any. Needs `nbformat` (the test extra).
"""

from __future__ import annotations

import pathlib
import sys

import nbformat

# Cell metadata a run adds (nbclient's timings, Jupyter's and Colab's view state).
RUN_METADATA = ("execution", "collapsed", "scrolled", "outputId", "colab")


def strip(path: pathlib.Path) -> bool:
    """Strips `path` in place; returns True if anything changed."""
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        for key in RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"))
    return after != before


def main(argv: list[str]) -> int:
    paths = [pathlib.Path(a) for a in argv] or sorted(pathlib.Path(__file__).parent.glob("*.ipynb"))
    for path in paths:
        if strip(path):
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
