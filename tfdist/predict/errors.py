"""The one error type of `tfdist.predict`: bad input, found before any work starts."""

from __future__ import annotations


class PredictError(ValueError):
    """An argument, the model, the inputs or the output directory cannot work (one line)."""
