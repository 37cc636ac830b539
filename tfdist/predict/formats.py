"""The closed sets of names the options take (no TensorFlow import: the binary checks flags first)."""

INPUT_FORMATS = ("auto", "csv", "parquet", "numpy", "tfrecord")
OUTPUT_FORMATS = ("csv", "parquet", "tfrecord", "numpy")
STRATEGIES = ("auto", "default", "one_device", "mirrored")
