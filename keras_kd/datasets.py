"""Image-classification data as `tf.data` pipelines ready for `fit`.

    data = keras_kd.datasets.load("cifar10", batch_size=128, augment=True)
    distiller.fit(data.train, validation_data=data.test, epochs=30)
    x_test, y_test = data.numpy("test")

`load(name, batch_size=64, data_dir=None, augment=False, seed=0, limit=None,
download=True)` returns a `Data`:

    name, train, test, input_shape (H, W, C), num_classes, class_names,
    num_train, num_test, source, numpy(split="test") -> (x, y)

`train` and `test` yield `(image float32 (B, H, W, C), label int32 (B,))`
batches, prefetched. `train` is reshuffled every epoch (seeded, with a
buffer covering the split) and augmented when `augment=True`; `test` keeps
the file order and is never augmented. `numpy(split)` returns a whole split
as arrays normalized like the pipeline (for evaluation, or as TFLite
representative data).

Where the data comes from, first match wins:

1. `"digits"`: scikit-learn's `load_digits()` (1797 8x8 images, shipped with
   scikit-learn, always available offline), split 50/50 with
   `train_test_split(test_size=0.5, stratify=y, random_state=seed)`.
2. A local folder, `data_dir` or else the environment variable
   `KERAS_KD_DATA_DIR`, holding
   - `<name>.npz` with arrays `x_train, y_train, x_test, y_test` (the
     `keras.datasets` / `mnist.npz` layout: uint8 images (N, H, W) or
     (N, H, W, C), integer labels (N,) or (N, 1)), optional `class_names`; or
   - `<name>_jpeg.npz` (the `cifar10_jpeg.npz` layout): `train_jpeg` and
     `test_jpeg` (every JPEG file of the split concatenated, uint8),
     `train_offsets` and `test_offsets` (image i is
     `jpeg[offsets[i]:offsets[i + 1]]`), `y_train`, `y_test`, optional
     `class_names`. The JPEGs are decoded once per file and process (parallel
     `tf.data` map), and the decoded arrays stay in memory.
   An explicit `data_dir` may also be a tensorflow-datasets data folder in
   which the dataset is already prepared. If an explicit `data_dir` holds
   none of these, `load` raises FileNotFoundError; a `KERAS_KD_DATA_DIR`
   without the files falls through to tensorflow-datasets.
3. tensorflow-datasets: any image-classification dataset (an `Image` input
   and a `ClassLabel` label), e.g. "mnist", "fashion_mnist", "cifar10",
   "cifar100", "svhn_cropped", "cifar10_corrupted/brightness_1". The test
   split is "test", else "validation". If the dataset is not prepared locally
   and a download is needed but the network is unreachable (a 3 s connection
   check), or `download=False`, `load` raises `DataUnavailableError` at once,
   saying how to supply the data, instead of hanging in a download.

Normalization: images become float32 in [0, 1] (uint8 / 255, digits / 16;
float arrays from an `.npz` are taken as already scaled). There is no
mean/std standardization, so an exported TFLite model takes plain [0, 1]
pixels; put a `Normalization` layer in the model if it wants one.

Augmentation (`augment=True`, train split only): a random translation (zero
padding by 4 pixels, or 1 for images under 16 pixels such as digits, then a
random crop back to size) and, for 3-channel natural images and
fashion_mnist, a random horizontal flip (never for digit sets: digits, MNIST,
EMNIST, KMNIST, SVHN). It runs on whole batches with stateless random ops
seeded from `seed`, so a run is reproducible (given the same global TF seed)
while each epoch sees different shifts.

`limit` keeps the first `limit` examples of each split (for tests and quick
runs). The last batch of an epoch may be smaller than `batch_size`.
"""

import dataclasses
import functools
import os
import socket
import threading
from pathlib import Path

import numpy as np
import tensorflow as tf

__all__ = ["BUILTIN", "ENV_VAR", "Data", "DataUnavailableError", "load", "names"]

BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
ENV_VAR = "KERAS_KD_DATA_DIR"
NETWORK_CHECK = ("storage.googleapis.com", 443, 3.0)  # host, port, timeout in seconds
MEMORY_BUDGET = 1 << 30  # bytes of uint8 images a tfds split may cache / shuffle in memory

_CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}  # fmt: skip
_DIGIT_SETS = ("digits", "mnist", "emnist", "kmnist", "svhn")  # never flipped (fashion_mnist is)
_SPLITS = ("train", "test")


class DataUnavailableError(RuntimeError):
    """The data is neither available locally nor downloadable now."""


@dataclasses.dataclass
class Data:
    """A loaded dataset: `train` / `test` pipelines and what a model needs to know."""

    name: str
    train: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple
    num_classes: int
    class_names: list
    num_train: int
    num_test: int
    source: str
    _arrays: dict = dataclasses.field(default=None, repr=False, compare=False)

    def numpy(self, split="test"):
        """The whole split as `(x float32 (N, H, W, C), y int32 (N,))`, normalized
        like the pipeline, in file order, never augmented."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        if self._arrays is None:
            raise ValueError("numpy() needs a Data made by keras_kd.datasets.load")
        return self._arrays[split]()


def names():
    """The built-in dataset names. Any tensorflow-datasets image-classification
    name (e.g. "svhn_cropped") is accepted by `load` as well."""
    return list(BUILTIN)


def load(name, batch_size=64, data_dir=None, augment=False, seed=0, limit=None, download=True):
    """Loads `name` as a `Data` (see the module docstring for sources and options).

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

    Raises:
        ValueError: bad arguments, an unknown name, or a dataset that is not
            image classification.
        FileNotFoundError: an explicit `data_dir` without the dataset.
        DataUnavailableError: the data is not local and cannot be downloaded.
        ImportError: tensorflow-datasets lacks `importlib_resources` to download.
    """
    _check_args(name, batch_size, seed, limit)
    limit = None if limit is None else int(limit)
    options = {"batch_size": int(batch_size), "augment": bool(augment), "seed": int(seed), "limit": limit}
    if name == "digits":
        return _from_arrays(name, *_digits(seed), "scikit-learn", **options)

    explicit = data_dir is not None
    location = data_dir if explicit else os.environ.get(ENV_VAR) or None
    folder = Path(os.path.expanduser(os.fspath(location))) if location is not None else None
    if folder is not None:
        local = _find_local(folder, name)
        if local is not None:
            arrays = _read_npz(local) if local.name == f"{name}.npz" else _read_jpeg_npz(local)
            return _from_arrays(name, *arrays, f"local:{local}", **options)
    if explicit:
        builder = _tfds_builder(name, folder, must_exist=False)
        if builder is None or not builder.is_prepared():
            raise FileNotFoundError(_missing_message(folder, name))
        return _from_tfds(name, builder, folder, download=False, **options)
    return _from_tfds(name, _tfds_builder(name, None), None, download=download, env_folder=folder, **options)


# --------------------------------------------------------------------------- arguments


def _check_args(name, batch_size, seed, limit):
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")


# --------------------------------------------------------------------------- sources


def _digits(seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    return {"train": (x_train, y_train), "test": (x_test, y_test)}, _CLASS_NAMES["digits"]


def _find_local(folder, name):
    for candidate in (folder / f"{name}.npz", folder / f"{name}_jpeg.npz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(folder, name):
    if folder.is_dir():
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
        there = f"it holds {entries}" if entries else "it is empty"
    else:
        there = "it does not exist"
    return (
        f"No data for {name!r} in data_dir {str(folder)!r}: looked for {name}.npz (arrays x_train, y_train, "
        f"x_test, y_test), {name}_jpeg.npz (JPEG bytes + offsets) and a prepared tensorflow-datasets "
        f"folder {name}/; {there}."
    )


def _file_key(path):
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _read_npz(path):
    return _read_npz_cached(*_file_key(path))


def _read_jpeg_npz(path):
    return _read_jpeg_npz_cached(*_file_key(path))


@functools.lru_cache(maxsize=4)
def _read_npz_cached(path, _mtime, _size):
    with np.load(path) as npz:
        _require(npz, path, ("x_train", "y_train", "x_test", "y_test"))
        splits = {split: (_images(npz[f"x_{split}"], path, split), npz[f"y_{split}"]) for split in _SPLITS}
        return _checked(splits, path), _names_in(npz)


@functools.lru_cache(maxsize=4)
def _read_jpeg_npz_cached(path, _mtime, _size):
    with np.load(path) as npz:
        _require(
            npz, path, [f"{split}_{key}" for split in _SPLITS for key in ("jpeg", "offsets")] + ["y_train", "y_test"]
        )
        splits = {
            split: (_decode_jpegs(npz[f"{split}_jpeg"], npz[f"{split}_offsets"], path, split), npz[f"y_{split}"])
            for split in _SPLITS
        }
        return _checked(splits, path), _names_in(npz)


def _require(npz, path, keys):
    missing = [key for key in keys if key not in npz.files]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}; it holds {sorted(npz.files)}")


def _names_in(npz):
    return [str(n) for n in npz["class_names"].tolist()] if "class_names" in npz.files else None


def _images(x, path, split):
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"x_{split} in {path} must be (N, H, W) or (N, H, W, C) images, got shape {x.shape}")
    return x


def _checked(splits, path):
    out = {}
    for split, (x, y) in splits.items():
        y = np.asarray(y).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{path}: the {split} split has {len(x)} images but {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y_{split} must hold integer labels, got dtype {y.dtype}")
        x.flags.writeable = False  # shared through the cache
        out[split] = (x, y.astype("int32"))
    return out


def _decode_jpegs(jpeg, offsets, path, split):
    """Decodes the concatenated JPEGs of one split into a uint8 (N, H, W, C) array."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if (
        offsets.ndim != 1
        or len(offsets) < 2
        or offsets[0] != 0
        or offsets[-1] != len(jpeg)
        or np.any(np.diff(offsets) <= 0)
    ):
        raise ValueError(f"{split}_offsets in {path} must rise from 0 to len({split}_jpeg) = {len(jpeg)}")
    data = jpeg.tobytes()
    files = [data[start:end] for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    channels = int(tf.io.decode_jpeg(files[0]).shape[-1])
    decoded = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(lambda f: tf.io.decode_jpeg(f, channels=channels), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(4096)
    )
    try:
        return np.concatenate([batch.numpy() for batch in decoded])
    except tf.errors.InvalidArgumentError as error:  # images of different sizes cannot be batched
        raise ValueError(f"The {split} JPEGs in {path} must all have the same size: {error.message}") from None


# --------------------------------------------------------------------------- pipelines from arrays


def _from_arrays(name, splits, class_names, source, batch_size, augment, seed, limit):
    splits = {split: (x[:limit], y[:limit]) for split, (x, y) in splits.items()}
    x_train = splits["train"][0]
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    if splits["test"][0].shape[1:] != x_train.shape[1:]:
        raise ValueError(f"{source}: train images {input_shape} and test images {splits['test'][0].shape[1:]} differ")
    largest = max(int(y.max()) if len(y) else -1 for _, y in splits.values())
    class_names = class_names or _CLASS_NAMES.get(name) or [str(i) for i in range(largest + 1)]
    if largest >= len(class_names):
        raise ValueError(f"{source}: label {largest} but only {len(class_names)} class names")
    scale = _scale(x_train.dtype)

    def pipeline(split, training):
        x, y = splits[split]
        x, y = tf.constant(x), tf.constant(y)
        indices = tf.data.Dataset.range(len(y))
        if training:
            indices = indices.shuffle(max(len(y), 1), seed=seed, reshuffle_each_iteration=True)
        batches = indices.batch(batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
        return _finish(batches, _transform(name, input_shape, scale, augment and training), seed)

    def as_numpy(split):
        x, y = splits[split]
        return (x * np.float32(scale)).astype("float32"), y.copy()

    return Data(
        name=name,
        train=pipeline("train", training=True),
        test=pipeline("test", training=False),
        input_shape=input_shape,
        num_classes=len(class_names),
        class_names=list(class_names),
        num_train=len(splits["train"][1]),
        num_test=len(splits["test"][1]),
        source=source,
        _arrays={split: functools.partial(as_numpy, split) for split in _SPLITS},
    )


# --------------------------------------------------------------------------- shared pipeline pieces


def _scale(dtype):
    dtype = np.dtype(dtype)
    return 1.0 / np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0


def _pad_for(input_shape):
    return 1 if min(input_shape[:2]) < 16 else 4


def _flips(name, channels):
    base = name.split("/")[0].split(":")[0].lower()
    if base.startswith("fashion_mnist"):
        return True
    return channels == 3 and not any(digit_set in base for digit_set in _DIGIT_SETS)


def _transform(name, input_shape, scale, augment):
    """fn(x batch, y batch, stateless seed) -> (float32 [0, 1] images, int32 labels)."""
    pad, flip = _pad_for(input_shape), _flips(name, input_shape[-1])

    def transform(x, y, seed):
        if augment:
            x = _augment(x, seed, pad, flip)  # on the stored dtype (uint8): less to move
        return tf.cast(x, tf.float32) * scale, tf.cast(y, tf.int32)

    return transform


def _augment(x, seed, pad, flip):
    """Shifts each image of the batch by up to `pad` pixels (zero padding) and,
    if `flip`, mirrors about half of them: one gather for the whole batch."""
    shape = tf.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    padded = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    padded_height, padded_width = height + 2 * pad, width + 2 * pad
    dy = tf.random.stateless_uniform([batch, 1, 1], seeds[0], 0, 2 * pad + 1, dtype=tf.int32)
    dx = tf.random.stateless_uniform([batch, 1, 1], seeds[1], 0, 2 * pad + 1, dtype=tf.int32)
    cols = tf.broadcast_to(tf.range(width)[None, :], [batch, width])
    if flip:
        flipped = tf.random.stateless_uniform([batch, 1], seeds[2]) < 0.5
        cols = tf.where(flipped, tf.reverse(cols, axis=[1]), cols)
    rows = dy + tf.range(height)[None, :, None]  # (batch, height, 1)
    image = tf.range(batch)[:, None, None] * (padded_height * padded_width)
    index = image + rows * padded_width + dx + cols[:, None, :]  # (batch, height, width) into the padded pixels
    return tf.gather(tf.reshape(padded, [-1, channels]), index)


def _finish(batches, transform, seed):
    """Normalizes (and augments) whole batches, then prefetches."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    batches = tf.data.Dataset.zip(batches, seeds)
    return batches.map(lambda xy, s: transform(xy[0], xy[1], s), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


# --------------------------------------------------------------------------- tensorflow-datasets


def _tfds_builder(name, data_dir, must_exist=True):
    import tensorflow_datasets as tfds

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


def _image_and_label(name, builder):
    """The supervised (image, label) feature names, or ValueError for other kinds of data."""
    import tensorflow_datasets as tfds

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


def _from_tfds(name, builder, data_dir, batch_size, augment, seed, limit, download, env_folder=None):
    import tensorflow_datasets as tfds

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
    if class_names == [str(i) for i in range(len(class_names))] and len(_CLASS_NAMES.get(name, ())) == len(class_names):
        class_names = list(_CLASS_NAMES[name])  # tfds reads some names from the download; known ones meanwhile
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
    plain = _transform(name, input_shape, _scale(dtype), False)
    bases, counts = {}, {}
    for split, ds in zip(_SPLITS, datasets):
        if limit is not None:
            ds = ds.take(limit)
        count = int(ds.cardinality())
        if count < 0:  # unknown: count once
            count = int(ds.reduce(np.int64(0), lambda n, _example: n + 1))
        if count * example_bytes <= MEMORY_BUDGET:
            ds = ds.cache()
        bases[split], counts[split] = ds, count
    buffer = min(counts["train"], max(1024, MEMORY_BUDGET // example_bytes))
    train = bases["train"].shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    train = _finish(train, _transform(name, input_shape, _scale(dtype), augment), seed)
    ordered = {split: _finish(bases[split].batch(batch_size), plain, seed) for split in _SPLITS}

    def as_numpy(split):
        xs, ys = [np.zeros((0, *input_shape), "float32")], [np.zeros((0,), "int32")]
        for x, y in ordered[split]:
            xs.append(x.numpy())
            ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)

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
        _arrays={split: functools.partial(as_numpy, split) for split in _SPLITS},
    )
