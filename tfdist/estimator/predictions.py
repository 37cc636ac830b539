"""Shaping `Estimator.predict` output: predict-key checks and per-example splitting."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any


def check_predict_keys(predictions: Any, predict_keys: list[str] | None) -> None:
    """Raises a ValueError naming the available keys when `predict_keys` asks for others."""
    if predict_keys is None:
        return
    if not isinstance(predictions, dict):
        raise ValueError(
            f"predict_keys={predict_keys} was given, but model_fn's predictions are a single "
            "tensor, not a dict. Drop predict_keys, or return predictions as a dict."
        )
    missing = [k for k in predict_keys if k not in predictions]
    if missing:
        hints = {k: difflib.get_close_matches(k, list(predictions), n=1) for k in missing}
        hint = "; ".join(f"did you mean {v[0]!r} for {k!r}?" for k, v in hints.items() if v)
        raise ValueError(
            f"predict_keys {missing} are not in model_fn's predictions. Available keys: "
            f"{sorted(predictions)}." + (f" ({hint})" if hint else "")
        )


def examples(batch: Any) -> Iterator[Any]:
    """Splits a batch of predictions (a dict or an array) into examples."""
    if isinstance(batch, dict):
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in batch.items()}
        size = next(iter(sizes.values()), 0)
        if size is None or len(set(sizes.values())) > 1:
            raise ValueError(
                "yield_single_examples=True needs every prediction to have the same batch "
                f"dimension; received batch sizes {sizes}. Pass yield_single_examples=False."
            )
        for i in range(size):
            yield {k: v[i] for k, v in batch.items()}
    else:
        yield from batch
