"""Where the model is: a file or SavedModel directory named directly or found in a model dir.

No TensorFlow import, so the binary can reject a wrong path before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import os

from tfdist.predict.errors import PredictError


def _is_saved_model(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, n)) for n in ("saved_model.pb", "saved_model.pbtxt"))


def _versions(path: str) -> list[str]:
    found = [os.path.join(path, n) for n in os.listdir(path) if n.isdigit()]
    return sorted((p for p in found if _is_saved_model(p)), key=lambda p: int(os.path.basename(p)))


def resolve_path(path: str) -> tuple[str, str]:
    """The model file or SavedModel directory `path` names, and its kind.

    Raises:
        PredictError: Nothing loadable there, with what was looked for.
    """
    if not path:
        raise PredictError("Invalid value for argument `model`. Received: model=''. Pass a .keras "
                           "file, a SavedModel directory or a tfdist-train model_dir.")
    if not os.path.exists(path):
        raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, which "
                           "does not exist. Pass a .keras file, a SavedModel directory or a "
                           "tfdist-train model_dir (e.g. runs/default after `make train`).")
    if os.path.isfile(path):
        if path.endswith(".keras"):
            return path, "keras"
        raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, a file "
                           "that is not a .keras model. Pass a .keras file or a SavedModel directory.")
    if _is_saved_model(path):
        return path, "saved_model"
    if os.path.isfile(os.path.join(path, "model.keras")):
        return os.path.join(path, "model.keras"), "keras"
    for sub in ("saved_model", "export"):
        if os.path.isdir(os.path.join(path, sub)):
            return resolve_path(os.path.join(path, sub))
    versions = _versions(path)
    if versions:
        return versions[-1], "saved_model"
    raise PredictError(f"Invalid value for argument `model`. Received: model={path!r}, a directory "
                       "with no model.keras, saved_model.pb, saved_model/, export/ or timestamped "
                       "export in it. Pass the model file or the export directory.")


def fingerprint(path: str, kind: str) -> str:
    """A short hash of the model (its graph and weights), for the run manifest."""
    digest = hashlib.sha256()
    if kind == "keras":
        files = [path]
    elif os.path.isfile(os.path.join(path, "fingerprint.pb")):
        # TensorFlow's own fingerprint (TF >= 2.12) hashes the graph, signatures and checkpoint.
        files = [os.path.join(path, "fingerprint.pb")]
    else:
        files = [os.path.join(root, n) for root, _, names in os.walk(path) for n in sorted(names)]
    for name in sorted(files):
        digest.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]
