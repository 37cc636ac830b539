"""`python -m tfdist.bench`: the same as the `tfdist-bench` console script."""

from tfdist.bench.cli import run

run()
