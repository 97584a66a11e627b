"""Image-classification data as `tf.data` pipelines ready for `fit`.

    data = keras_kd.datasets.load("cifar10", batch_size=128, augment=True)
    distiller.fit(data.train, validation_data=data.test, epochs=30)
    x_test, y_test = data.numpy("test")

`load` returns a `Data`: `train` and `test` pipelines of `(float32 images
(B, H, W, C) in [0, 1], int32 labels (B,))` batches, `input_shape`,
`num_classes`, `class_names`, `pixel_scale` and `numpy(split)` for whole
splits as arrays. It looks for `name` in this order: "digits" (scikit-learn),
then a local folder (`data_dir` or `KERAS_KD_DATA_DIR`) holding `<name>.npz`
or `<name>_jpeg.npz`, then tensorflow-datasets (the extra
`keras-kd[datasets]`). `write_tfrecords` and `from_tfrecords` stream data
larger than memory. Sources, layouts, memory and sharding: docs/data.md.
"""

import os
from pathlib import Path

from keras_kd import extras
from keras_kd.datasets import digits, local, tfds
from keras_kd.datasets.data import BUILTIN, ENV_VAR, Data, DataUnavailableError, check_args
from keras_kd.datasets.data import MEMORY_BUDGET as MEMORY_BUDGET  # the documented defaults, readable here
from keras_kd.datasets.tfrecord import SHARD_BYTES as SHARD_BYTES
from keras_kd.datasets.tfrecord import SHUFFLE_RECORDS as SHUFFLE_RECORDS
from keras_kd.datasets.tfrecord import from_tfrecords, write_tfrecords
from keras_kd.sample_index import with_index

__all__ = [
    "BUILTIN",
    "ENV_VAR",
    "Data",
    "DataUnavailableError",
    "from_tfrecords",
    "load",
    "names",
    "with_index",
    "write_tfrecords",
]


def names():
    """The built-in dataset names. Any tensorflow-datasets image-classification
    name (e.g. "svhn_cropped") is accepted by `load` as well."""
    return list(BUILTIN)


def load(
    name, batch_size=64, data_dir=None, augment=False, seed=0, limit=None, download=True, stream=False, index=False
):
    """Loads `name` as a `Data`: "digits", then a local folder, then tensorflow-datasets
    (docs/data.md describes the sources and the pipelines).

    Args:
        name: "digits", a local `<name>.npz` / `<name>_jpeg.npz`, or a
            tensorflow-datasets image-classification name.
        batch_size: examples per batch.
        data_dir: folder holding `<name>.npz` or `<name>_jpeg.npz` (or a
            prepared tensorflow-datasets folder); defaults to the environment
            variable `KERAS_KD_DATA_DIR`, then to tensorflow-datasets.
        augment: random shifts (and flips for natural images) on `train`.
        seed: seeds the digits split, the shuffling and the augmentation.
        limit: keep only the first `limit` examples of each split.
        download: let tensorflow-datasets download a dataset not prepared yet.
        stream: tensorflow-datasets only: never cache a split in memory, read
            it from the prepared files every epoch (with a bounded shuffle
            buffer) whatever its size. "digits" and `.npz` files are arrays in
            memory already, so it changes nothing for them.
        index: the `train` batches carry each example's position in the
            training split inside `x` (`{"inputs": images, "sample_index":
            positions}`, see `with_index`), for methods that keep a memory
            row per example (CRD). `test` is unchanged.

    Raises:
        ValueError: bad arguments, an unknown name, or a dataset that is not
            image classification.
        FileNotFoundError: an explicit `data_dir` without the dataset.
        DataUnavailableError: the data is not local and cannot be downloaded.
        keras_kd.extras.MissingExtraError: the data must come from
            tensorflow-datasets, which is not installed.
        ImportError: tensorflow-datasets lacks `importlib_resources` to download.
    """
    check_args(name, batch_size, seed, limit)
    options = {
        "batch_size": int(batch_size),
        "augment": bool(augment),
        "seed": int(seed),
        "limit": None if limit is None else int(limit),
        "index": bool(index),
    }
    if name == "digits":
        return digits.from_sklearn(**options)

    explicit = data_dir is not None
    location = data_dir if explicit else os.environ.get(ENV_VAR) or None
    folder = Path(os.path.expanduser(os.fspath(location))) if location is not None else None
    if folder is not None:
        path = local.find(folder, name)
        if path is not None:
            return local.from_file(name, path, **options)
    if explicit:
        try:
            builder = tfds.find_builder(name, folder, must_exist=False)
        except extras.MissingExtraError as error:  # no .npz, and no tensorflow-datasets to read a prepared folder
            raise FileNotFoundError(f"{local.missing_message(folder, name)} {error}") from None
        if builder is None or not builder.is_prepared():
            raise FileNotFoundError(local.missing_message(folder, name))
        return tfds.from_builder(name, builder, folder, download=False, stream=bool(stream), **options)
    builder = tfds.find_builder(name, None)
    return tfds.from_builder(name, builder, None, download=download, env_folder=folder, stream=bool(stream), **options)
