"""Runs `tfdist-train` (argv after the first two) and, on the chosen task, dies by design.

Usage: peer_victim.py VICTIM STAMP_FILE TFDIST_TRAIN_FLAGS...
       peer_victim.py VICTIM STAMP_FILE SCRIPT.py MODEL_DIR ARGS...   (a user's script instead)

On the task named VICTIM (e.g. "worker:1"; "none" for nobody) a thread waits until a checkpoint
exists under --model_dir (a file named "checkpoint", which TensorFlow writes after the data
files), then writes time.time() to STAMP_FILE and sends this process SIGKILL: a peer dying
mid-run with a checkpoint to resume from. Other tasks just run tfdist-train.
"""

import os
import runpy
import signal
import sys
import threading
import time

from tfdist import cluster


def _has_checkpoint(model_dir: str) -> bool:
    return any("checkpoint" in files for _, _, files in os.walk(model_dir))


def _die_after_checkpoint(model_dir: str, stamp: str) -> None:
    while not _has_checkpoint(model_dir):
        time.sleep(0.1)
    with open(stamp + ".tmp", "w") as f:
        f.write(repr(time.time()))
    os.replace(stamp + ".tmp", stamp)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    victim, stamp, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
    script = flags[0] if flags[0].endswith(".py") else None
    info = cluster.resolve()
    if victim == f"{info.task_type}:{info.task_id}":
        model_dir = flags[1] if script else next(
            f.split("=", 1)[1] for f in flags if f.startswith("--model_dir="))
        threading.Thread(target=_die_after_checkpoint, args=(model_dir, stamp), daemon=True).start()
    if script:
        sys.argv = flags
        runpy.run_path(script, run_name="__main__")
        return
    sys.argv = ["tfdist-train", *flags]
    from tfdist import train

    train.run()


if __name__ == "__main__":
    main()
