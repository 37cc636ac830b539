"""The notebook-safe entries of the absl binaries: they never read sys.argv (a kernel's argv).

Inside a Jupyter/Colab kernel `sys.argv` is `[".../ipykernel_launcher.py", "-f", ".../kernel.json"]`
and absl's `app.run` rejects `-f` (googlecolab/colabtools#1323). Each test here runs with that
argv in place. The notebooks (tests/test_notebooks_*.py) call the same entries in a real kernel.
"""

import json
import sys

import pytest

from tfdist import absl_entry

KERNEL_ARGV = ["/usr/local/lib/python3.11/dist-packages/ipykernel_launcher.py", "-f",
               "/root/.local/share/jupyter/runtime/kernel-1f2e3d4c.json"]


@pytest.fixture
def kernel_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", list(KERNEL_ARGV))


def test_to_argv():
    assert absl_entry.to_argv({"route": "fit", "train_steps": 20, "deterministic": True,
                               "merge": False, "input": ["a.npy", "b.npy"], "seed": None}) == [
        "--route=fit", "--train_steps=20", "--deterministic", "--nomerge", "--input=a.npy,b.npy"]


def test_train_then_predict_then_train_again_under_a_kernel_argv(kernel_argv, tmp_path, capsys):
    # One process, as in a notebook: no UnrecognizedFlagError from the kernel's `-f`, and no
    # DuplicateFlagError from defining flags again (tfdist-train and tfdist-predict both define
    # --model and --strategy; a second tfdist-train call defines all of its flags again).
    import numpy as np

    import tfdist.predict_main
    import tfdist.train
    from input_pipelines import digits

    model_dir = tmp_path / "run"
    assert tfdist.train.run_from_notebook(
        f"--model_dir={model_dir}", model="mlp", strategy="default", train_steps=20,
        steps_per_loop=10) == 0
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert (metrics["route"], metrics["model"], metrics["steps"]) == ("ctl", "mlp", 20)

    np.save(tmp_path / "x.npy", digits.load_arrays()[1][0][:50])
    assert tfdist.predict_main.run_from_notebook(
        model=str(model_dir), input=[str(tmp_path / "x.npy")], output_dir=str(tmp_path / "scores"),
        output_format="numpy", argmax=True, progress=False) == 0
    assert json.loads((tmp_path / "scores" / "summary.json").read_text())["rows"] == 50
    assert "error" not in capsys.readouterr().err

    # Flags defined afresh, and nothing kept from the first call (--model_dir is required again).
    assert tfdist.train.run_from_notebook(route="fit", train_steps=5) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfdist-train: error:") and "--model_dir" in err, err
    assert sys.argv == KERNEL_ARGV  # read by nobody, changed by nobody


def test_bad_flags_are_one_line_and_status_2(kernel_argv, capsys):
    import tfdist.predict_main
    import tfdist.train

    assert tfdist.train.run_from_notebook(model_dir="/tmp/x", trian_steps=5) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfdist-train: error: Unknown command line flag 'trian_steps'"), err
    assert len(err.splitlines()) == 1

    assert tfdist.predict_main.run_from_notebook(model="m.keras", input=["x.npy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tfdist-predict: error:") and "--output_dir" in err, err


def test_help_prints_the_flags_and_returns_0(kernel_argv, capsys):
    import tfdist.train

    assert tfdist.train.run_from_notebook("--help") == 0
    assert "--train_steps" in capsys.readouterr().out


def test_argv_as_a_string_is_an_error():
    with pytest.raises(TypeError, match=r"Invalid value for argument `argv`. Received: "
                                        r"argv='--route=fit'"):
        absl_entry.call("tfdist-train", lambda fv: None, lambda argv, fv: 0, "--route=fit")


def test_bench_main_with_argv_ignores_the_kernel_argv(kernel_argv, capsys):
    # tfdist-bench is argparse: `main(argv)` parses only `argv` (the notebooks' entry), while
    # `main()` parses sys.argv and names the kernel's -f.
    from tfdist import bench

    assert bench.main(["--strategies=bogus"]) == 2
    err = capsys.readouterr().err
    assert "--strategies" in err and "-f" not in err, err
    assert bench.main() == 2
    assert "-f" in capsys.readouterr().err
