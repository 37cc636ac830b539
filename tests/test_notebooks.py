"""The committed notebooks: no outputs, install cells and README links from setup.cfg's url.

Pure checks (no kernel). Executing the notebooks: tests/test_notebooks_a.py and _b.py.
"""

import configparser
import re

import nbformat
import pytest

from tests.notebook_exec import NOTEBOOKS
from tests.notebook_exec import REPO

NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
STRIP_HINT = ("strip it with `make strip-notebooks` (python notebooks/strip_outputs.py "
              "notebooks/{name}; or `jupyter nbconvert --clear-output --inplace`)")


def repository_url() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["metadata"]["url"].rstrip("/")


def colab_link(url: str, name: str) -> str:
    return f"{url.replace('https://github.com/', 'https://colab.research.google.com/github/', 1)}/blob/main/notebooks/{name}"


def test_every_notebook_is_executed_by_a_test():
    from tests import test_notebooks_a, test_notebooks_b

    executed = [*test_notebooks_a.NAMES, *test_notebooks_b.NAMES]
    assert sorted(executed) == NAMES and len(NAMES) >= 7


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None or "execution" in cell.metadata)]
    assert not dirty, (f"notebooks/{name} carries outputs or execution counts in cells {dirty}: "
                       + STRIP_HINT.format(name=name))


@pytest.mark.parametrize("name", NAMES)
def test_install_cell_installs_from_setup_cfg_url(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    source = first.source
    assert f'"tfdist[notebooks] @ git+{repository_url()}"' in source, (
        f"notebooks/{name}: the first code cell must pip-install git+{repository_url()} "
        f"(setup.cfg [metadata] url); it is:\n{source}")
    assert 'importlib.util.find_spec("tfdist") is None' in source, (
        f"notebooks/{name}: the install cell must do nothing when tfdist is importable")
    # Links into the repository's docs point at setup.cfg's url and at files that exist.
    text = "\n".join(cell.source for cell in nb.cells)
    for owner_repo, path in re.findall(r"https://github\.com/([\w.-]+/[\w.-]+)/blob/main/([\w./-]+)", text):
        assert f"https://github.com/{owner_repo}" == repository_url(), (name, owner_repo)
        assert (REPO / path).is_file(), f"notebooks/{name} links to {path}, which does not exist"


def test_readme_links_every_notebook_in_colab():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Notebooks", 1)
    assert len(section) == 2, "README.md has no '## Notebooks' section"
    links = re.findall(r"\((https://colab\.research\.google\.com/[^)]+)\)", section[1].split("\n## ", 1)[0])
    assert links == [colab_link(repository_url(), name) for name in NAMES], links


def test_strip_outputs_clears_what_a_run_adds(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("strip_outputs", NOTEBOOKS / "strip_outputs.py")
    strip_outputs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strip_outputs)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    cell = nb.cells[0]
    cell.metadata = {"tags": ["plot"], "execution": {"iopub.execute_input": "2026-12-01T00:00:00Z"}}
    cell.execution_count = 3
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)

    assert strip_outputs.strip(path) is True
    cell = nbformat.read(path, as_version=4).cells[0]
    assert (cell.outputs, cell.execution_count, dict(cell.metadata)) == ([], None, {"tags": ["plot"]})
    assert strip_outputs.strip(path) is False  # nothing left to strip
