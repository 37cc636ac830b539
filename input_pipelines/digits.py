"""scikit-learn's bundled 8x8 handwritten digits: real data that needs no network.

1,797 grayscale images of the digits 0-9 (`sklearn.datasets.load_digits`, shipped inside the
scikit-learn package). They are read from scikit-learn's bundled file without importing
scikit-learn, whose import costs every worker process about 1.5 s of CPU; when the file is not
where it is expected, `sklearn.datasets.load_digits` reads it instead. The split is fixed: a permutation of all examples by NumPy's
`default_rng(0)`, whose first 1,437 are the training set and last 360 the test set (80/20, every
class in both). Pixel values 0-16 are scaled to [0, 1]; images have shape `(8, 8, 1)`, labels
are int32 class ids.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import tensorflow as tf

from input_pipelines.base import DatasetSources

NUM_TRAIN = 1437
NUM_TEST = 360
_SPLIT_SEED = 0


def _bundled_csv() -> Path | None:
    """scikit-learn's `datasets/data/digits.csv.gz`, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")  # locates the package; does not run it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def load_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as `sklearn.datasets.load_digits` gives them: `(images, target)`.

    Returns:
        `images`, float64 of shape `(1797, 8, 8)` with pixel values 0-16, and `target`, the
        int class ids 0-9, in scikit-learn's order.
    """
    path = _bundled_csv()
    if path is None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(int)


def load_arrays() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The fixed split as arrays: `((x_train, y_train), (x_test, y_test))`."""
    raw_images, target = load_raw()
    images = (raw_images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = target.astype(np.int32)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
    train, test = order[:NUM_TRAIN], order[NUM_TRAIN:]
    return (images[train], labels[train]), (images[test], labels[test])


def sources() -> DatasetSources:
    """The digits as in-memory `tf.data` sources (sharded by example across workers)."""
    (x_train, y_train), (x_test, y_test) = load_arrays()
    return DatasetSources(
        name="digits",
        train=tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        eval=tf.data.Dataset.from_tensor_slices((x_test, y_test)),
        input_shape=(8, 8, 1),
        num_classes=10,
        train_examples=len(y_train),
        eval_examples=len(y_test),
    )
