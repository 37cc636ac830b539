"""Any TFDS image-classification dataset by name, each worker reading only its slice.

TFDS can hand each input pipeline its own part of a split, which beats reading everything and
dropping most of it. The slicing is chosen by file count, as `tfdist.data` does for TFRecords:

- at least as many files in the split as input pipelines: `tfds.ReadConfig(input_context=...)`
  gives each pipeline whole files (TFDS refuses this with fewer files than pipelines);
- otherwise: `tfds.even_splits(split, n)[i]`, an even slice of examples per pipeline.

So the sources are `dataset_fn(input_context)`s, which `tfdist.data` treats as self-sharding.
Records are read `as_supervised`; uint8 images become float32 in [0, 1]. The dataset must be
prepared already (`tfds build NAME`, or `download=True`); there is no network at run time on
many training machines.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from input_pipelines.base import DatasetSources


def num_files(builder: tfds.core.DatasetBuilder, split: str) -> int | None:
    """Files the split (or split slice) reads, or `None` when TFDS does not know (e.g. mocked)."""
    try:
        return len(builder.info.splits[split].file_instructions)
    except (KeyError, ValueError, AssertionError, TypeError):
        return None


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int | None:
    try:
        return int(builder.info.splits[split].num_examples) or None
    except (KeyError, ValueError, AssertionError, TypeError):
        return None


def dataset_fn(
    builder: tfds.core.DatasetBuilder, split: str, *, training: bool, seed: int | None = 0
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A `dataset_fn(input_context)` reading this input pipeline's slice of `split`.

    Args:
        builder: A prepared (or mocked) TFDS builder.
        split: Split name or slice, e.g. `"train"` or `"train[:90%]"`.
        training: Shuffle the file order. Evaluation reads files in order.
        seed: File-shuffle seed. Defaults to 0.

    Returns:
        The function; its datasets yield unbatched `(features, label)` records.
    """

    def make(context: tf.distribute.InputContext) -> tf.data.Dataset:
        n, i = context.num_input_pipelines, context.input_pipeline_id
        files = num_files(builder, split)
        read_config = tfds.ReadConfig(shuffle_seed=seed)
        part = split
        if n > 1 and files is not None and files >= n:
            read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=context)
            how = f"ReadConfig(input_context): {files} files >= {n} input pipelines"
        elif n > 1:
            part = tfds.even_splits(split, n)[i]
            known = "unknown number of" if files is None else files
            how = f"even_splits: {known} file(s), {n} input pipelines"
        else:
            how = "one input pipeline: the whole split"
        logging.info("input_pipelines.tfds: %s %s, pipeline %d/%d: %s", builder.name, split, i, n, how)
        return builder.as_dataset(split=part, shuffle_files=training, read_config=read_config,
                                  as_supervised=True)

    return make


def _to_float(features: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    if features.dtype == tf.uint8:
        return tf.cast(features, tf.float32) / 255.0, label
    return tf.cast(features, tf.float32), label


def sources(
    name_or_builder: str | tfds.core.DatasetBuilder,
    *,
    data_dir: str | None = None,
    train_split: str = "train",
    eval_split: str = "test",
    download: bool = False,
    seed: int | None = 0,
) -> DatasetSources:
    """Sources for a TFDS dataset with image (or fixed-shape numeric) features and class labels.

    Args:
        name_or_builder: A TFDS name such as `"mnist"` or `"cifar10:3.0.2"`, or a builder.
        data_dir: Where the prepared dataset lives. Defaults to TFDS's default.
        train_split: Split (or slice) to train on. Defaults to `"train"`.
        eval_split: Split (or slice) to evaluate on. Defaults to `"test"`.
        download: Download and prepare the dataset first. Defaults to `False`.
        seed: File-shuffle seed. Defaults to 0.

    Returns:
        The sources (`dataset_fn`s).

    Raises:
        ValueError: The dataset has no supervised keys, or its features are not fixed-shape
            numbers with a `ClassLabel` label.
    """
    if isinstance(name_or_builder, str):
        builder = tfds.builder(name_or_builder, data_dir=data_dir)
    else:
        builder = name_or_builder
    if download:
        builder.download_and_prepare()
    info = builder.info
    keys = info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no (features, label) supervised keys "
            f"(received {keys!r}); the tfds pipeline reads classification datasets."
        )
    features, label = info.features[keys[0]], info.features[keys[1]]
    shape = tuple(features.shape)
    if not shape or any(d is None for d in shape) or not tf.as_dtype(features.np_dtype).is_numeric:
        raise ValueError(
            f"TFDS dataset {builder.name!r}: feature {keys[0]!r} is not a fixed-shape numeric "
            f"tensor (shape {shape}, dtype {features.np_dtype}); the tfds pipeline reads images "
            "and other fixed-shape features."
        )
    if not isinstance(label, tfds.features.ClassLabel):
        raise ValueError(
            f"TFDS dataset {builder.name!r}: label {keys[1]!r} is a "
            f"{type(label).__name__}, not a ClassLabel."
        )
    return DatasetSources(
        name=f"tfds:{builder.name}",
        train=dataset_fn(builder, train_split, training=True, seed=seed),
        eval=dataset_fn(builder, eval_split, training=False, seed=seed),
        input_shape=shape,
        num_classes=int(label.num_classes),
        train_examples=_num_examples(builder, train_split),
        eval_examples=_num_examples(builder, eval_split),
        map_fn=_to_float,
    )

