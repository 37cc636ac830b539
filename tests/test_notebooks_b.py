"""Executes notebooks 03, 06 and 07 top to bottom in a real kernel (see tests/notebook_exec.py).

Split from tests/test_notebooks_a.py so `make test`'s two pytest workers run them side by side.
"""

import pytest

from tests import notebook_exec

NAMES = ["03_estimator_migration.ipynb", "06_parameter_server.ipynb",
         "07_batch_prediction.ipynb"]
MULTIWORKER = {"03_estimator_migration.ipynb", "06_parameter_server.ipynb"}  # start processes


@pytest.mark.timeout(notebook_exec.NOTEBOOK_SECONDS + 120)  # the kernel's start and stop too
@pytest.mark.parametrize("name", notebook_exec.params(NAMES, MULTIWORKER))
def test_notebook_executes(name, tmp_path):
    notebook_exec.execute_and_check(name, tmp_path)
