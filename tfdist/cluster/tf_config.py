"""Source: the ``TF_CONFIG`` environment variable (what tfdist-launch and most engines set)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from tfdist.cluster.spec import ClusterInfo, build, fail, kind

__all__ = ["from_tf_config", "load"]


def load(tf_config: str | Mapping[str, Any] | None, environ: Mapping[str, str] | None) -> dict | None:
    """Parses TF_CONFIG into a fresh dict; None means "no cluster".

    Args:
        tf_config: TF_CONFIG as a JSON string or mapping; if None, ``environ["TF_CONFIG"]``.
        environ: Environment to read; defaults to ``os.environ``.

    Raises:
        ClusterConfigError: The JSON is malformed or not an object.
    """
    if tf_config is None:
        tf_config = (os.environ if environ is None else environ).get("TF_CONFIG")
    if tf_config is None or (isinstance(tf_config, str) and not tf_config.strip()):
        return None
    data: Any = tf_config
    if isinstance(tf_config, str):
        try:
            data = json.loads(tf_config)
        except json.JSONDecodeError as exc:
            where = f"{exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})"
            raise fail("TF_CONFIG", f"invalid JSON: {where}", tf_config,
                       "Fix the JSON syntax there; keys and strings need double quotes.") from None
    if not isinstance(data, Mapping):
        raise fail("TF_CONFIG", f"top level must be a JSON object, got {kind(data)}", data,
                   'Use an object like {"cluster": {...}, "task": {"type": "worker", "index": 0}}.')
    return dict(data) or None  # TensorFlow treats "{}" as "no cluster"; keep that reset working


def from_tf_config(tf_config: str | Mapping[str, Any] | None = None, *,
                   environ: Mapping[str, str] | None = None) -> ClusterInfo:
    """Resolves and validates a TF_CONFIG; missing, blank or ``{}`` means a local process.

    Raises:
        ClusterConfigError: If the config is invalid in any way.
    """
    config = load(tf_config, environ)
    return ClusterInfo() if config is None else build(config, "TF_CONFIG")
