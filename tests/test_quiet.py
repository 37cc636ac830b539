"""Quiet binaries: TensorFlow's C++ start-up noise stays out of tfdist's commands' output."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys

from tests.multiworker import PYTHONPATH, REPO_ROOT
from tfdist import quiet

PY = sys.executable
# A line in the format of TensorFlow's C++ logging: "I0000 00:00:1796.1 4910 cudart_stub.cc:31] ...".
CPP_LOG_LINE = re.compile(r"\b[IWEF]\d{4} [\d:.]+ +\d+ [\w./-]+\.cc:\d+\]")
NOISE_SNIPPETS = ("absl::InitializeLog", "Could not find cuda drivers", "cuInit",
                  "cpu_feature_guard", "oneDNN custom operations",
                  "rebuild TensorFlow with the appropriate compiler flags")

# Lines TensorFlow 2.21 printed at start-up on this kind of machine (no GPU, x86-64).
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796115187.455542    4910 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1796115187.517042    4910 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
    "the appropriate compiler flags.",
    "E0000 00:00:1796115188.870082    4910 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
CU_INIT = STARTUP_LINES[-1]


def _env_without_level(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=PYTHONPATH, **extra)
    env.pop(quiet.LOG_LEVEL_VAR, None)
    env.pop("TF_CONFIG", None)
    return env


def _noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if any(s in line for s in NOISE_SNIPPETS) or CPP_LOG_LINE.search(line)]


def _run_at_once(*argvs: list[str]) -> list[subprocess.CompletedProcess]:
    """Runs the independent commands side by side (each mostly waits on its own start-up)."""
    with concurrent.futures.ThreadPoolExecutor(len(argvs)) as pool:
        futures = [pool.submit(subprocess.run, argv, cwd=REPO_ROOT, env=_env_without_level(),
                               capture_output=True, text=True, timeout=400) for argv in argvs]
        return [f.result() for f in futures]


def test_the_filter_drops_known_start_up_noise_and_keeps_the_rest():
    noise = quiet.StartupNoiseFilter()
    kept = [line for line in [*STARTUP_LINES, "tfdist-train: test accuracy 0.98",
                              "W0000 00:00:1.0 12 grpc_server.cc:1] a real warning"]
            if not noise.is_noise(line)]
    assert kept == ["tfdist-train: test accuracy 0.98", "W0000 00:00:1.0 12 grpc_server.cc:1] a real warning"]


def test_a_failed_cuinit_is_kept_where_a_cuda_driver_exists():
    # Without the "no driver" line first, a failed cuInit is a real error on a GPU machine.
    assert not quiet.StartupNoiseFilter().is_noise(CU_INIT)


def test_child_log_settings_respect_a_level_the_user_set():
    assert quiet.child_log_settings(False, {}) == ({"TF_CPP_MIN_LOG_LEVEL": "2"}, True)
    assert quiet.child_log_settings(True, {}) == ({"TF_CPP_MIN_LOG_LEVEL": "0"}, False)
    assert quiet.child_log_settings(False, {}, {"TF_CPP_MIN_LOG_LEVEL": "1"}) == ({}, False)


def test_importing_tensorflow_quietly_keeps_other_stderr_lines():
    code = ("import sys; from tfdist import quiet\n"
            "quiet.importing_tensorflow(True)\n"
            "print('after', file=sys.stderr)\n")
    result = subprocess.run([PY, "-c", code], cwd=REPO_ROOT, env=_env_without_level(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _noise_in(result.stderr) == [], result.stderr
    assert result.stderr.strip().splitlines()[-1] == "after"


def test_tfdist_train_prints_only_its_own_lines(tmp_path):
    argv = [PY, "-m", "tfdist.train", f"--model_dir={tmp_path / 'run'}", "--train_steps=4",
            "--eval_every=4", "--steps_per_loop=2"]
    # --verbosity=1 (absl's flag) brings TensorFlow's C++ logging back for debugging.
    result, verbose = _run_at_once(argv, [*argv, f"--model_dir={tmp_path / 'verbose'}", "--verbosity=1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tfdist-train: test accuracy" in result.stdout
    assert _noise_in(result.stdout + result.stderr) == [], result.stderr[-3000:]

    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert CPP_LOG_LINE.search(verbose.stderr), verbose.stderr[-3000:]


def test_tfdist_launch_children_are_quiet_unless_verbose():
    child = [PY, "-c", "import tensorflow as tf; tf.constant(1); print('child done')"]
    argv = [PY, "-m", "tfdist.launch", "--timeout", "120"]
    # One verbose worker is enough to see TensorFlow's C++ lines come back.
    result, verbose = _run_at_once([*argv, "--workers", "2", "--", *child],
                                   [*argv, "--workers", "1", "-v", "--", *child])
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(result.stdout.splitlines()) == ["[worker:0] child done", "[worker:1] child done"]
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert CPP_LOG_LINE.search(verbose.stdout), verbose.stdout[-3000:]
