"""Executes notebooks 01, 02, 04 and 05 top to bottom in a real kernel (see tests/notebook_exec.py).

Split from tests/test_notebooks_b.py so `make test`'s two pytest workers run them side by side.
"""

import pytest

from tests import notebook_exec

NAMES = ["01_quickstart.ipynb", "02_multi_worker.ipynb", "04_input_sharding.ipynb",
         "05_speed.ipynb"]
MULTIWORKER = {"02_multi_worker.ipynb"}  # starts worker processes


@pytest.mark.timeout(notebook_exec.NOTEBOOK_SECONDS + 120)  # the kernel's start and stop too
@pytest.mark.parametrize("name", notebook_exec.params(NAMES, MULTIWORKER))
def test_notebook_executes(name, tmp_path):
    notebook_exec.execute_and_check(name, tmp_path)
