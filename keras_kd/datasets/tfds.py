"""The tensorflow-datasets source (the optional extra `keras-kd[datasets]`):
any image-classification dataset with fixed-size images (an `Image` input
and a `ClassLabel` label), e.g. "mnist", "cifar100", "svhn_cropped",
"cifar10_corrupted/brightness_1".

The test split is "test", else "validation". A dataset not prepared yet is
downloaded only after a quick connection check (`NETWORK_CHECK`), so an
offline machine gets `DataUnavailableError` at once instead of a hanging
download. A split is cached in memory only if its images fit in
`MEMORY_BUDGET`; the pipelines shard by DATA under a multi-worker strategy.
"""

import functools
import os
import socket
import threading

import numpy as np

from keras_kd import extras
from keras_kd.datasets.data import BUILTIN, CLASS_NAMES, ENV_VAR, MEMORY_BUDGET, SPLITS, Data, DataUnavailableError
from keras_kd.datasets.pipeline import DATA, collect, finish, pixel_scale, shard_by, transform

NETWORK_CHECK = ("storage.googleapis.com", 443, 3.0)  # host, port, timeout in seconds


def _tensorflow_datasets(name):
    """The `tensorflow_datasets` module, or `MissingExtraError` naming the extra."""
    return extras.require("tensorflow_datasets", f"keras_kd.datasets.load({name!r}) from tensorflow-datasets")


def find_builder(name, data_dir, must_exist=True):
    """The tensorflow-datasets builder of `name` in `data_dir` (None: its default
    folder). An unknown name is a `ValueError`, or None if not `must_exist`."""
    tfds = _tensorflow_datasets(name)
    try:
        return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    except tfds.core.registered.DatasetNotFoundError:
        if not must_exist:
            return None
        raise ValueError(
            f"Unknown dataset {name!r}. Built-in names: {', '.join(BUILTIN)}; any tensorflow-datasets "
            "image-classification name is accepted too (e.g. 'svhn_cropped', 'cifar10_corrupted/brightness_1'; "
            "see https://www.tensorflow.org/datasets/catalog/overview#image_classification)."
        ) from None


def from_builder(
    name, builder, data_dir, batch_size, augment, seed, limit, download, stream=False, env_folder=None, index=False
):
    """A `Data` over the dataset of `builder`, downloaded and prepared first if
    `download` allows it and the network answers."""
    tfds = _tensorflow_datasets(name)
    image_key, label_key = _image_and_label(name, builder)
    if not builder.is_prepared():
        if not download:
            raise _unavailable(name, builder, "download=False", env_folder)
        if not _network_reachable():
            host, port, timeout = NETWORK_CHECK
            reason = f"the network is unreachable (no connection to {host}:{port} within {timeout:g} s)"
            raise _unavailable(name, builder, reason, env_folder)
        try:
            builder.download_and_prepare()
        except ModuleNotFoundError as error:
            if error.name != "importlib_resources":
                raise
            raise ImportError(
                "tensorflow-datasets needs the package importlib_resources to download and prepare "
                f"{name!r} (it does not declare it for Python >= 3.9): pip install importlib_resources"
            ) from error
    info = builder.info
    split_names = list(info.splits.keys()) or ["train", "test"]  # empty when unknown (tfds.testing.mock_data)
    test_split = next((split for split in ("test", "validation") if split in split_names), None)
    if "train" not in split_names or test_split is None:
        raise ValueError(f"{name!r} needs a 'train' and a 'test' or 'validation' split; it has {split_names}")
    image, label = info.features[image_key], info.features[label_key]
    class_names = [str(n) for n in label.names]
    if class_names == [str(i) for i in range(len(class_names))] and len(CLASS_NAMES.get(name, ())) == len(class_names):
        class_names = list(CLASS_NAMES[name])  # tfds reads some names from the download; known ones meanwhile
    input_shape = tuple(int(d) for d in image.shape)
    dtype = np.dtype(image.np_dtype)
    example_bytes = int(np.prod(input_shape)) * dtype.itemsize
    datasets = tfds.load(
        name,
        split=["train", test_split],
        as_supervised=True,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        download=False,
    )
    scale = pixel_scale(dtype)
    plain = transform(name, input_shape, scale, False)
    bases, counts = {}, {}
    for split, ds in zip(SPLITS, datasets):
        if limit is not None:
            ds = ds.take(limit)
        count = int(ds.cardinality())
        if count < 0:  # unknown: count once
            count = int(ds.reduce(np.int64(0), lambda n, _example: n + 1))
        if not stream and count * example_bytes <= MEMORY_BUDGET:
            ds = ds.cache()
        bases[split], counts[split] = ds, count
    buffer = min(counts["train"], max(1024, MEMORY_BUDGET // example_bytes))
    train = bases["train"]
    if index:
        train = train.enumerate().map(lambda i, example: (example[0], example[1], i))
    train = train.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    train = finish(train, transform(name, input_shape, scale, augment), seed)
    ordered = {split: finish(bases[split].batch(batch_size), plain, seed) for split in SPLITS}
    # Multi-worker: DATA sharding, stated explicitly (every worker reads the split in the same seeded order
    # and keeps every num_workers-th batch). FILE sharding needs at least as many files as workers, which a
    # prepared split may not have (a small dataset is one file), and the FILE rewrite fails on the seed
    # dataset that `finish` zips in (NotFound: "Did not find a shardable source ... RandomDatasetV2").
    train, ordered = shard_by(train, DATA), {split: shard_by(ds, DATA) for split, ds in ordered.items()}

    def as_numpy(split, count=None):
        return collect(ordered[split], input_shape, count)

    return Data(
        name=name,
        train=train,
        test=ordered["test"],
        input_shape=input_shape,
        num_classes=int(label.num_classes),
        class_names=class_names,
        num_train=counts["train"],
        num_test=counts["test"],
        source="tfds",
        _arrays={split: functools.partial(as_numpy, split) for split in SPLITS},
        pixel_scale=float(scale),
    )


def _image_and_label(name, builder):
    """The supervised (image, label) feature names, or ValueError for other kinds of data."""
    tfds = _tensorflow_datasets(name)
    info = builder.info
    keys = info.supervised_keys
    features = info.features
    ok = (
        isinstance(keys, tuple)
        and len(keys) == 2
        and all(isinstance(key, str) and key in features for key in keys)
        and isinstance(features[keys[0]], tfds.features.Image)
        and isinstance(features[keys[1]], tfds.features.ClassLabel)
    )
    if not ok:
        raise ValueError(
            f"{name!r} is not an image-classification dataset (supervised keys {keys}, features "
            f"{sorted(features.keys()) if hasattr(features, 'keys') else features}); keras_kd.datasets loads only "
            "tensorflow-datasets with an Image input and a ClassLabel label."
        )
    image = features[keys[0]]
    if any(dim is None for dim in image.shape):
        raise ValueError(f"{name!r} has images of varying size {image.shape}; only fixed-size images are supported.")
    return keys


def _network_reachable():
    """Whether a download could start: a TCP connection to NETWORK_CHECK within its
    timeout (run in a daemon thread so a slow name lookup cannot hang either)."""
    host, port, timeout = NETWORK_CHECK
    result = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result)


def _unavailable(name, builder, reason, env_folder):
    env = f" ({ENV_VAR}={str(env_folder)!r} holds no {name}.npz or {name}_jpeg.npz)" if env_folder else ""
    return DataUnavailableError(
        f"Dataset {name!r} is not available: it is not prepared in the tensorflow-datasets folder "
        f"{builder.data_dir}{env}, and {reason}. Supply it one of these ways:\n"
        f"  - pass data_dir= (command line: --data-dir DIR) or set the environment variable {ENV_VAR}=DIR, where "
        f"DIR holds {name}.npz with arrays x_train, y_train, x_test, y_test (the keras.datasets / mnist.npz "
        f"layout) or {name}_jpeg.npz (JPEG bytes + offsets, like cifar10_jpeg.npz);\n"
        "  - or run once with a network connection (and download=True) so tensorflow-datasets downloads and "
        "prepares it; later runs reuse it offline."
    )
