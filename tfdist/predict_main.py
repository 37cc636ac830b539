"""tfdist-predict: score files with a trained model on one process or N workers, exactly once, in order.

    tfdist-predict --model=runs/default --input=digits.npy --output_dir=/tmp/scores --argmax
    tfdist-launch --workers 2 -- tfdist-predict --model=runs/default --input='data/*.parquet' \\
        --output_dir=/tmp/scores --output_format=csv --top_k=3 --virtual_cpus=2

Each worker scores its shards of the input and writes them atomically into --output_dir; the
chief merges them in input order into `predictions.<ext>` (or, with --nomerge, writes
`manifest.json` and one part per shard) and `summary.json`. A rerun with the same flags resumes,
skipping finished shards; other flags against the same --output_dir are an error. Bad input exits
2 with one `error:` line before any work starts. See docs/predict.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from absl import app
from absl import flags

from tfdist import absl_entry
from tfdist import quiet
from tfdist.predict import formats

FLAGS = flags.FLAGS
USAGE_ERROR = 2


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines tfdist-predict's flags on `flag_values` (only when the binary runs)."""
    fv = flag_values
    flags.DEFINE_string("model", None, "A .keras file, a SavedModel directory (any route's export, "
                        "the Estimator-style one included) or a tfdist-train model_dir.",
                        flag_values=fv)
    flags.DEFINE_list("input", None, "Input files or glob patterns, comma-separated (CSV, Parquet, "
                      ".npy/.npz, or the <prefix>.json of TFRecord files written by "
                      "input_pipelines.tfrecord).", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Shards, merged predictions and summary.json (shared "
                        "by all workers); an existing run there with the same flags is resumed.",
                        flag_values=fv)
    flags.DEFINE_enum("input_format", "auto", formats.INPUT_FORMATS,
                      "Input format; auto: from the file extension.", flag_values=fv)
    flags.DEFINE_string("features", None, "Which columns feed the model: input=column pairs, or "
                        "columns to stack into the model's one vector input. Default: by name.",
                        flag_values=fv)
    flags.DEFINE_string("id_column", None, "A column of record ids to write as the key (default: "
                        "the row number, 'key').", flag_values=fv)
    flags.DEFINE_integer("batch_size", 256, "Records per batch on each replica.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("shard_size", 8192, "Records per output shard (the unit of resume).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("output_format", "parquet", formats.OUTPUT_FORMATS, "Output format.",
                      flag_values=fv)
    flags.DEFINE_boolean("merge", True, "Merge the shards into one file on the chief; --nomerge "
                         "writes one part per shard and manifest.json.", flag_values=fv)
    flags.DEFINE_string("output", None, "The model output to post-process (default: the only one).",
                        flag_values=fv)
    flags.DEFINE_boolean("argmax", False, "Add class_id (and class_name with --class_names).",
                         flag_values=fv)
    flags.DEFINE_integer("top_k", 0, "Add the k best top_k_ids / top_k_scores (/ top_k_names).",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_list("class_names", None, "Names of the output's classes, comma-separated.",
                      flag_values=fv)
    flags.DEFINE_string("class_names_file", None, "A file with one class name per line.",
                        flag_values=fv)
    flags.DEFINE_float("threshold", None, "Add label = 1 where the score >= threshold.",
                       flag_values=fv)
    flags.DEFINE_string("postprocess", None, "A module:function taking and returning a dict of "
                        "columns, applied last.", flag_values=fv)
    flags.DEFINE_boolean("keep_outputs", True, "Write the raw model outputs as well.",
                         flag_values=fv)
    flags.DEFINE_enum("strategy", "auto", formats.STRATEGIES, "Each worker's local strategy; auto: "
                      "mirrored over several GPUs or --virtual_cpus, else the default one.",
                      flag_values=fv)
    flags.DEFINE_integer("virtual_cpus", None, "Split the CPU into this many logical devices and "
                         "mirror over them.", lower_bound=1, flag_values=fv)
    flags.DEFINE_boolean("progress", True, "Progress bar (rows, rows/s, ETA) on the chief.",
                         flag_values=fv)
    flags.DEFINE_float("wait_timeout", None, "Seconds the chief waits for the other workers' "
                       "shards (default: as long as it takes).", flag_values=fv)
    flags.DEFINE_boolean("json", False, "Print the summary as JSON on stdout.", flag_values=fv)
    flags.mark_flags_as_required(["model", "input", "output_dir"], flag_values=fv)


def to_options(flag_values: flags.FlagValues = flags.FLAGS):
    """The parsed flags as `PredictOptions` (raises `PredictError` for bad values)."""
    from tfdist.predict import PredictError, PostProcess, PredictOptions

    fv = flag_values
    names = tuple(fv.class_names or ())
    if fv.class_names_file:
        if names:
            raise PredictError("Pass --class_names or --class_names_file, not both.")
        try:
            with open(fv.class_names_file) as f:
                names = tuple(line.strip() for line in f if line.strip())
        except OSError as e:
            raise PredictError(f"Invalid value for argument `class_names_file`. Received: "
                               f"class_names_file={fv.class_names_file!r} ({e.strerror}).") from None
    post = PostProcess(output=fv.output, argmax=fv.argmax, top_k=fv.top_k, class_names=names,
                       threshold=fv.threshold, function=fv.postprocess,
                       keep_outputs=fv.keep_outputs)
    return PredictOptions(model=fv.model, inputs=tuple(fv.input), output_dir=fv.output_dir,
                          input_format=fv.input_format, features=fv.features,
                          id_column=fv.id_column, batch_size=fv.batch_size,
                          shard_size=fv.shard_size, output_format=fv.output_format,
                          merge=fv.merge, postprocess=post, strategy=fv.strategy,
                          virtual_cpus=fv.virtual_cpus, progress=fv.progress,
                          wait_timeout=fv.wait_timeout)


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> int:
    """Checks the flags, sets up the process, then scores; bad input exits 2 with one line.

    Args:
        argv: What is left of the command line after the flags (only the program name).
        flag_values: The parsed flags. Defaults to absl's global `FLAGS` (the console script).
    """
    if len(argv) > 1:
        print(f"tfdist-predict: error: unexpected arguments: {' '.join(argv[1:])} "
              "(flags are --name=value; see --help)", file=sys.stderr)
        return USAGE_ERROR
    from tfdist.predict import locate, store
    from tfdist.predict.errors import PredictError

    try:
        options = to_options(flag_values)
        locate.resolve_path(options.model)  # the cheap checks, before TensorFlow loads
        store.check_writable(options.output_dir)
    except PredictError as e:
        print(f"tfdist-predict: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    quiet.importing_tensorflow(quiet.tf_log_level_env(verbose=flag_values.verbosity >= 1))
    from tfdist import cluster, data, strategy
    from tfdist.predict import job, progress

    try:
        if options.virtual_cpus is not None:  # before TensorFlow initialises its devices
            strategy.configure_virtual_cpus(options.virtual_cpus)
        summary = job.run(options)
    except (PredictError, data.DataConfigError, strategy.StrategyError,
            cluster.ClusterConfigError) as e:
        print(f"tfdist-predict: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    if "workers" in summary:  # the chief
        print(json.dumps(summary, indent=1) if flag_values.json else progress.format_summary(summary))
    return 0


def run_from_notebook(*args: str, **flag_kwargs: Any) -> int:
    """`tfdist-predict` from Python: a notebook or Colab cell, a script, a test. Never reads sys.argv.

    Parses only the flags given (not the kernel's `-f kernel.json`, which absl's `app.run` would
    reject: googlecolab/colabtools#1323), on flag values of its own, so it can be called again
    in the same process. `tfdist.predict.run(PredictOptions(...))` is the same run as a value.

    Args:
        *args: Flags as command-line arguments, e.g. `"--argmax"`.
        **flag_kwargs: Flags as keywords: `model="runs/default"`, `input=["digits.npy"]`
            (lists joined with commas), `argmax=True`, `False` for `--noname`.

    Returns:
        The exit status `tfdist-predict` would have: 0 on success, 2 after one `error:` line on
        stderr for bad input.

    Example:

    ```python
    import tfdist.predict_main
    tfdist.predict_main.run_from_notebook(model="runs/default", input=["digits.npy"],
                                          output_dir="/tmp/scores", argmax=True)
    ```
    """
    argv = [*args, *absl_entry.to_argv(flag_kwargs)]
    return absl_entry.call("tfdist-predict", define_flags, main, argv)


def run() -> None:
    """The `tfdist-predict` console script: defines the flags, then runs `main`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
