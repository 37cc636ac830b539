"""`PredictOptions`: everything one prediction run needs, checked before TensorFlow is used."""

from __future__ import annotations

import dataclasses
from typing import Any

from tfdist import checks
from tfdist.predict import postprocess as postprocess_lib
from tfdist.predict import formats
from tfdist.predict.errors import PredictError

STRATEGIES = formats.STRATEGIES
DEFAULT_BATCH_SIZE = 256
DEFAULT_SHARD_SIZE = 8192


@dataclasses.dataclass(frozen=True)
class PredictOptions:
    """One prediction run.

    Args:
        model: A `.keras` file, a SavedModel directory, or a directory holding one (a
            `tfdist-train` model_dir, an export base).
        inputs: Input files or glob patterns (TFRecord: the `<prefix>.json` or its directory).
        output_dir: Where shards, the merged output and the summary go (shared by all workers).
        input_format: One of `formats.INPUT_FORMATS`. Defaults to `"auto"` (file extension).
        features: Which columns feed which model input (`features.plan_feeds`). Defaults to
            matching by name.
        id_column: A column of record ids written as the key instead of the row number.
        batch_size: Records per batch on each replica. Defaults to 256.
        shard_size: Records per output shard, the unit of resume. Defaults to 8192.
        output_format: One of `formats.OUTPUT_FORMATS`. Defaults to `"parquet"`.
        merge: The chief merges the shards into one `predictions.<ext>` file; False writes one
            part per shard plus `manifest.json` (for outputs too large for one file).
            Defaults to True.
        postprocess: What the chief adds to the outputs. Defaults to nothing.
        strategy: `"auto"`, `"default"`, `"one_device"` or `"mirrored"`: each worker's local
            strategy (workers never all-reduce). Defaults to `"auto"`.
        virtual_cpus: Split the CPU into this many logical devices (mirrored over them).
        progress: Show a progress bar on the chief. Defaults to True.
        wait_timeout: Seconds the chief waits for the other workers' shards; None waits as long
            as it takes. Defaults to None.
    """

    model: str
    inputs: tuple[str, ...]
    output_dir: str
    input_format: str = "auto"
    features: str | None = None
    id_column: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    shard_size: int = DEFAULT_SHARD_SIZE
    output_format: str = "parquet"
    merge: bool = True
    postprocess: postprocess_lib.PostProcess = postprocess_lib.PostProcess()
    strategy: str = "auto"
    virtual_cpus: int | None = None
    progress: bool = True
    wait_timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            object.__setattr__(self, "inputs", (self.inputs,))
        else:
            object.__setattr__(self, "inputs", tuple(self.inputs))
        for name in ("batch_size", "shard_size"):
            checks.positive_int(name, getattr(self, name), error=PredictError)
        checks.positive_int("virtual_cpus", self.virtual_cpus, allow_none=True, error=PredictError)
        choices = (("input_format", formats.INPUT_FORMATS), ("output_format", formats.OUTPUT_FORMATS),
                   ("strategy", STRATEGIES))
        for name, valid in choices:
            checks.one_of(name, getattr(self, name), valid, error=PredictError)
        if not self.output_dir:
            raise PredictError("Invalid value for argument `output_dir`. Received: output_dir="
                               f"{self.output_dir!r}. Pass a directory for the predictions.")
        checks.seconds("wait_timeout", self.wait_timeout, allow_none=True, error=PredictError)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The arguments that decide the output (not how many workers or devices compute it)."""
        return {"input_format": self.input_format, "features": self.features,
                "id_column": self.id_column, "batch_size": self.batch_size,
                "shard_size": self.shard_size, "output_format": self.output_format,
                "merge": self.merge, "postprocess": dataclasses.asdict(self.postprocess)}
