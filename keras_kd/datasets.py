"""Image-classification data as `tf.data` pipelines ready for `fit`.

    data = keras_kd.datasets.load("cifar10", batch_size=128, augment=True)
    distiller.fit(data.train, validation_data=data.test, epochs=30)
    x_test, y_test = data.numpy("test")

`load(name, batch_size=64, data_dir=None, augment=False, seed=0, limit=None,
download=True, stream=False)` returns a `Data`:

    name, train, test, input_shape (H, W, C), num_classes, class_names,
    num_train, num_test, source, pixel_scale, numpy(split="test") -> (x, y)

`train` and `test` yield `(image float32 (B, H, W, C), label int32 (B,))`
batches, prefetched. `train` is reshuffled every epoch (seeded, with a
buffer covering the split) and augmented when `augment=True`; `test` keeps
the file order and is never augmented. `numpy(split)` returns a whole split
as arrays normalized like the pipeline (for evaluation, or as TFLite
representative data). The pipelines, TFRecord streaming included, are
`tf.data`, which Keras' `fit` takes on every backend: they feed JAX and
PyTorch training too (`tests/test_backends.py`), only the multi-worker
sharding options are `tf.distribute`'s.

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
float arrays from an `.npz` are taken as already scaled); `Data.pixel_scale`
is that factor. There is no mean/std standardization, so a model takes plain
[0, 1] pixels (the job's `student.tflite` puts `pixel_scale` in a Rescaling
layer and takes raw pixels); put a `Normalization` layer in the model if it
wants one.

Augmentation (`augment=True`, train split only): a random translation (zero
padding by 4 pixels, or 1 for images under 16 pixels such as digits, then a
random crop back to size) and, for 3-channel natural images and
fashion_mnist, a random horizontal flip (never for digit sets: digits, MNIST,
EMNIST, KMNIST, SVHN). It runs on whole batches with stateless random ops
seeded from `seed`, so a run is reproducible (given the same global TF seed)
while each epoch sees different shifts.

`limit` keeps the first `limit` examples of each split (for tests and quick
runs). The last batch of an epoch may be smaller than `batch_size`.

Memory: "digits" and the local `.npz` files are held in memory as arrays. A
tensorflow-datasets split is cached in memory only if its uint8 images fit in
`MEMORY_BUDGET` bytes (1 GiB) and `stream=False`; otherwise it is read from
the prepared files every epoch, and the `train` shuffle buffer holds at most
`max(1024, MEMORY_BUDGET // bytes per image)` examples. tensorflow-datasets
pipelines shard by DATA under a multi-worker `tf.distribute` strategy (every
worker reads the whole split and keeps its share of the batches), because a
prepared split may have fewer files than there are workers.

Data larger than memory, as TFRecord files:

    paths = keras_kd.datasets.write_tfrecords(x_train, y_train, "data/train", num_shards=64)
    data = keras_kd.datasets.from_tfrecords("data/train-*", "data/test-*", (32, 32, 3), 10)

`write_tfrecords(images, labels, path_prefix, num_shards=None,
image_format="png", chunk_size=1024)` writes uint8 images and integer labels
as `<path_prefix>-00000-of-0000N.tfrecord` files of `tf.train.Example`s
(features `image`: PNG, JPEG or raw bytes; `label`, `height`, `width`,
`channels`: int64; `format`: b"png", b"jpeg" or b"raw") and returns their
paths. `from_tfrecords(train_files, test_files, input_shape, num_classes,
batch_size=64, augment=False, seed=0, class_names=None, name="tfrecord",
shuffle_buffer=None, image_key="image", label_key="label",
image_format="auto", count=False)` returns a `Data` (source "tfrecord") whose
pipelines stream the files: no cache, a bounded shuffle buffer of serialized
records, files read in parallel, sharded by file under a multi-worker strategy.
See their docstrings and docs/data.md.
"""

import contextlib
import dataclasses
import functools
import os
import socket
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_kd.losses.base import is_int
from keras_kd.sample_index import _attach, with_index

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

BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
ENV_VAR = "KERAS_KD_DATA_DIR"
NETWORK_CHECK = ("storage.googleapis.com", 443, 3.0)  # host, port, timeout in seconds
MEMORY_BUDGET = 1 << 30  # bytes of uint8 images a tfds split may cache / shuffle in memory
SHARD_BYTES = 128 << 20  # write_tfrecords' default: about this many bytes of uint8 pixels per file
SHUFFLE_RECORDS = 10_000  # from_tfrecords' default shuffle buffer, at most (records)
TFRECORD_FORMATS = ("png", "jpeg", "raw")

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
    # What the pipeline multiplies a stored pixel by: 1/255 for uint8 images, 1/16 for digits (0..16), 1.0 for
    # float arrays taken as already scaled. An exported model that takes raw pixels puts it in a Rescaling layer.
    pixel_scale: float = 1.0

    def numpy(self, split="test"):
        """The whole split as `(x float32 (N, H, W, C), y int32 (N,))`, normalized
        like the pipeline, in file order, never augmented.

        This is a full copy of the split in memory (for a streamed source it
        reads the split once): meant for evaluation or TFLite representative
        data, not for the training split of data larger than memory."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {list(_SPLITS)}, got {split!r}")
        if self._arrays is None:
            raise ValueError("numpy() needs a Data made by keras_kd.datasets.load or from_tfrecords")
        return self._arrays[split]()


def names():
    """The built-in dataset names. Any tensorflow-datasets image-classification
    name (e.g. "svhn_cropped") is accepted by `load` as well."""
    return list(BUILTIN)


def load(
    name, batch_size=64, data_dir=None, augment=False, seed=0, limit=None, download=True, stream=False, index=False
):
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
        ImportError: tensorflow-datasets lacks `importlib_resources` to download.
    """
    _check_args(name, batch_size, seed, limit)
    limit = None if limit is None else int(limit)
    options = {
        "batch_size": int(batch_size),
        "augment": bool(augment),
        "seed": int(seed),
        "limit": limit,
        "index": bool(index),
    }
    if name == "digits":
        # scikit-learn's digits are integers 0..16, divided by 16 in `_digits`.
        return dataclasses.replace(_from_arrays(name, *_digits(seed), "scikit-learn", **options), pixel_scale=1 / 16)

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
        return _from_tfds(name, builder, folder, download=False, stream=bool(stream), **options)
    return _from_tfds(
        name, _tfds_builder(name, None), None, download=download, env_folder=folder, stream=bool(stream), **options
    )


# --------------------------------------------------------------------------- arguments


def _check_args(name, batch_size, seed, limit):
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not is_int(seed) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    if limit is not None and (not is_int(limit) or limit < 1):
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
    with _npz_errors(path):
        return _read_npz_cached(*_file_key(path))


def _read_jpeg_npz(path):
    with _npz_errors(path):
        return _read_jpeg_npz_cached(*_file_key(path))


@contextlib.contextmanager
def _npz_errors(path):
    """A truncated or foreign file fails in NumPy's zip reader or pickle guard: name the file instead."""
    try:
        yield
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise ValueError(f"{path} is not a valid .npz file (truncated or corrupt?): {error}") from None


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


def _from_arrays(name, splits, class_names, source, batch_size, augment, seed, limit, index=False):
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
        if index and training:
            batches = indices.batch(batch_size).map(lambda i: (tf.gather(x, i), tf.gather(y, i), i))
        else:
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
        pixel_scale=float(scale),
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
    """Normalizes (and augments) whole batches, then prefetches. Batches of
    `(x, y, index)` come out as `({"inputs": x, "sample_index": index}, y)`."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    batches = tf.data.Dataset.zip(batches, seeds)

    def apply(batch, seed):
        x, y = transform(batch[0], batch[1], seed)
        return (x, y) if len(batch) == 2 else (_attach(x, batch[2]), y)

    return batches.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


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


def _collect(batches, input_shape):
    """A whole pipeline of (x, y) batches as (float32 (N, *input_shape), int32 (N,)) arrays."""
    xs, ys = [np.zeros((0, *input_shape), "float32")], [np.zeros((0,), "int32")]
    for x, y in batches:
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _from_tfds(
    name, builder, data_dir, batch_size, augment, seed, limit, download, stream=False, env_folder=None, index=False
):
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
        if not stream and count * example_bytes <= MEMORY_BUDGET:
            ds = ds.cache()
        bases[split], counts[split] = ds, count
    buffer = min(counts["train"], max(1024, MEMORY_BUDGET // example_bytes))
    train = bases["train"]
    if index:
        train = train.enumerate().map(lambda i, example: (example[0], example[1], i))
    train = train.shuffle(max(buffer, 1), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    train = _finish(train, _transform(name, input_shape, _scale(dtype), augment), seed)
    ordered = {split: _finish(bases[split].batch(batch_size), plain, seed) for split in _SPLITS}
    # Multi-worker: DATA sharding, stated explicitly (every worker reads the split in the same seeded order
    # and keeps every num_workers-th batch). FILE sharding needs at least as many files as workers, which a
    # prepared split may not have (a small dataset is one file), and the FILE rewrite fails on the seed
    # dataset that `_finish` zips in (NotFound: "Did not find a shardable source ... RandomDatasetV2").
    train, ordered = _shard_by(train, _DATA), {split: _shard_by(ds, _DATA) for split, ds in ordered.items()}

    def as_numpy(split):
        return _collect(ordered[split], input_shape)

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
        pixel_scale=float(_scale(dtype)),
    )


# --------------------------------------------------------------------------- TFRecord files

_DATA = tf.data.experimental.AutoShardPolicy.DATA
_FILE = tf.data.experimental.AutoShardPolicy.FILE
_MAX_OPEN_FILES = 16  # train files read at once (interleave cycle length)


def _shard_by(dataset, policy):
    """`dataset` with `policy` as its multi-worker auto-shard policy."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def write_tfrecords(images, labels, path_prefix, num_shards=None, image_format="png", chunk_size=1024):
    """Writes uint8 images and integer labels as sharded TFRecord files of `tf.train.Example`s.

    Shard `i` of `n` holds the examples `[i * N // n, (i + 1) * N // n)` in the
    given order, in `<path_prefix>-0000i-of-0000n.tfrecord`. Each record has the
    features `image` (bytes: a PNG or JPEG file, or the H * W * C uint8 pixels
    in row-major order), `label`, `height`, `width`, `channels` (int64) and
    `format` (b"png", b"jpeg" or b"raw"), which `from_tfrecords` reads back.

    The images are read and encoded `chunk_size` at a time, so `images` may be
    a `np.memmap` (or any array-like with `shape`, `dtype` and slicing, such as
    an h5py dataset) larger than memory; `labels` is read whole. Each file is
    written under a temporary hidden name and renamed once complete; existing
    files of the same names are replaced (other files with the same prefix are
    left alone, so pass the returned list, or a pattern naming the shard
    count, to `from_tfrecords`).

    Args:
        images: uint8 array-like, (N, H, W) or (N, H, W, C).
        labels: integer array-like, (N,) or (N, 1), values >= 0.
        path_prefix: where the file names start (a local path or any
            `tf.io.gfile` file system); a missing folder is created.
        num_shards: number of files, 1 to N. Default: one per `SHARD_BYTES`
            (128 MiB) of uint8 pixels, at least 1. Multi-worker training
            shards by file, so write at least as many files as workers
            (several times more balances them better).
        image_format: "png" (lossless; C is 1, 3 or 4), "jpeg" (lossy,
            quality 95; C is 1 or 3) or "raw" (uncompressed, any C; the
            cheapest to read, the largest on disk).
        chunk_size: images encoded at a time.

    Returns:
        The paths written, in shard order.

    Raises:
        ValueError: images that are not uint8 (N, H, W[, C]), labels that do
            not match them, or a bad `num_shards`, `image_format` or
            `chunk_size`.
    """
    if image_format not in TFRECORD_FORMATS:
        raise ValueError(f"image_format must be one of {list(TFRECORD_FORMATS)}, got {image_format!r}")
    if not (hasattr(images, "shape") and hasattr(images, "dtype")):
        images = np.asarray(images)
    shape = tuple(int(d) for d in images.shape)
    if np.dtype(images.dtype) != np.uint8:
        raise ValueError(
            f"images must be uint8, got dtype {images.dtype}; convert [0, 1] floats with "
            "np.round(x * 255).astype('uint8')"
        )
    if len(shape) not in (3, 4) or shape[0] < 1 or 0 in shape:
        raise ValueError(f"images must be a non-empty (N, H, W) or (N, H, W, C) array, got shape {shape}")
    count, image_shape = shape[0], shape[1:] if len(shape) == 4 else (*shape[1:], 1)
    allowed = {"png": (1, 3, 4), "jpeg": (1, 3)}.get(image_format)
    if allowed and image_shape[-1] not in allowed:
        raise ValueError(
            f"image_format={image_format!r} takes images with {' or '.join(map(str, allowed))} channels, got "
            f"{image_shape[-1]} (shape {shape}); use image_format='raw' for other channel counts"
        )
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (count,):
        raise ValueError(f"labels must be (N,) or (N, 1) with N = {count} images, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    if num_shards is None:
        num_shards = min(count, max(1, -(-count * int(np.prod(image_shape)) // SHARD_BYTES)))
    if not is_int(num_shards) or not 1 <= num_shards <= count:
        raise ValueError(f"num_shards must be an integer from 1 to the number of images ({count}), got {num_shards!r}")
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    prefix = os.fspath(path_prefix)
    folder, base = os.path.split(prefix)
    if not base:
        raise ValueError(f"path_prefix must end with a file name prefix, got {prefix!r}")
    if folder:
        tf.io.gfile.makedirs(folder)
    height, width, channels = image_shape
    fixed = {
        "height": _int64_feature(height),
        "width": _int64_feature(width),
        "channels": _int64_feature(channels),
        "format": _bytes_feature(image_format.encode()),
    }
    paths = []
    for shard in range(int(num_shards)):
        name = f"{base}-{shard:05d}-of-{int(num_shards):05d}.tfrecord"
        path, partial = os.path.join(folder, name), os.path.join(folder, f".{name}.partial")
        start, end = shard * count // num_shards, (shard + 1) * count // num_shards
        with tf.io.TFRecordWriter(partial) as writer:
            for begin in range(start, end, chunk_size):
                stop = min(begin + chunk_size, end)
                chunk = np.ascontiguousarray(images[begin:stop]).reshape(stop - begin, *image_shape)
                for data, label in zip(_encode(chunk, image_format), labels[begin:stop].tolist()):
                    feature = {"image": _bytes_feature(data), "label": _int64_feature(label), **fixed}
                    writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
        tf.io.gfile.rename(partial, path, overwrite=True)
        paths.append(path)
    return paths


def _int64_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _encode(chunk, image_format):
    """The image files (bytes) of a uint8 (n, H, W, C) chunk, encoded in parallel."""
    if image_format == "raw":
        return [image.tobytes() for image in chunk]
    encode = tf.io.encode_png if image_format == "png" else functools.partial(tf.io.encode_jpeg, quality=95)
    encoded = tf.data.Dataset.from_tensor_slices(chunk).map(encode, num_parallel_calls=tf.data.AUTOTUNE)
    return encoded.batch(len(chunk)).get_single_element().numpy().tolist()


def from_tfrecords(
    train_files,
    test_files,
    input_shape,
    num_classes,
    batch_size=64,
    augment=False,
    seed=0,
    class_names=None,
    name="tfrecord",
    shuffle_buffer=None,
    image_key="image",
    label_key="label",
    image_format="auto",
    count=False,
):
    """Streams TFRecord files of `tf.train.Example`s (as `write_tfrecords` writes them) as a `Data`.

    Nothing is cached: every epoch reads the files again, and the memory used
    is the shuffle buffer plus a few batches, whatever the size of the data.
    `train` takes the train files in a seeded order reshuffled every epoch,
    reads up to 16 of them at once (a parallel, deterministic `interleave`),
    shuffles the serialized records in a buffer of `shuffle_buffer` records,
    batches them, parses each batch (`tf.io.parse_example`), decodes it, scales
    it to float32 in [0, 1] (uint8 / 255) and augments it as `load` does.
    `test` reads its files one after the other in the given order, without
    shuffling or augmenting. Both are prefetched and yield `(float32 (B, H, W,
    C), int32 (B,))`. With the same `seed` (and global TensorFlow seed) the
    epochs come in the same orders and with the same augmentation.

    Before returning, the first record of each split is read and checked
    (feature names, image encoding, image shape against `input_shape`). While
    streaming, every batch is checked too: an image of another height or
    width, or a label outside [0, num_classes), stops the epoch with an
    InvalidArgumentError saying so. Encoded images are decoded to `channels`
    channels (an RGB image read with `channels` 1 becomes grayscale).

    Multi-worker training (`tf.distribute.MultiWorkerMirroredStrategy`): a
    split of two or more files is sharded by FILE (each worker reads only its
    own files, so there must be at least as many files as workers; TensorFlow
    raises "Could not apply FILE based sharding" otherwise); a split of a
    single file is sharded by DATA (every worker reads it and keeps every
    num_workers-th batch). To choose otherwise, set
    `options.experimental_distribute.auto_shard_policy` on
    `data.train.with_options(options)`.

    Args:
        train_files, test_files: a path, a glob pattern (`tf.io.gfile.glob`,
            e.g. "data/train-*-of-00064.tfrecord") or a list of them; each
            pattern must match at least one file. Matches are taken in sorted
            order, the patterns in the given order.
        input_shape: (height, width, channels) of every image.
        num_classes: the labels are in [0, num_classes).
        batch_size, augment, seed: as in `load`.
        class_names: `num_classes` names; default "0", "1", ...
        name: `Data.name`; it also decides the flips of `augment` as in `load`
            (3-channel images are flipped unless the name is a digit set such
            as "svhn" or "mnist").
        shuffle_buffer: records in the train shuffle buffer. The buffer holds
            serialized records, so about that many encoded images. Default:
            `min(SHUFFLE_RECORDS, MEMORY_BUDGET // (H * W * C))`, at least 1.
        image_key, label_key: names of the image (bytes) and label (int64)
            features.
        image_format: "auto" (the `format` feature of the first record, as
            `write_tfrecords` writes it; "encoded" without one), "encoded"
            (PNG, JPEG, GIF or BMP files, decoded by `tf.io.decode_image`) or
            "raw" (H * W * C uint8 bytes in row-major order).
        count: count the records of each split now, reading every file once
            (without decoding), for `num_train` / `num_test`. Otherwise they
            are -1, meaning unknown.

    Returns:
        A `Data` with source "tfrecord". Its `numpy(split)` reads the whole
        split into memory: a full copy, for evaluation only.

    Raises:
        ValueError: a bad argument, or a first record without the features,
            encoding or shape expected.
        FileNotFoundError: a pattern that matches no file.
    """
    _check_args(name, batch_size, seed, None)
    batch_size, seed = int(batch_size), int(seed)
    input_shape = _check_input_shape(input_shape)
    if not is_int(num_classes) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    num_classes = int(num_classes)
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(f"class_names must list num_classes = {num_classes} names, got {class_names!r}")
    example_bytes = int(np.prod(input_shape))
    if shuffle_buffer is None:
        shuffle_buffer = max(1, min(SHUFFLE_RECORDS, MEMORY_BUDGET // example_bytes))
    if not is_int(shuffle_buffer) or shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be a positive integer or None, got {shuffle_buffer!r}")
    for arg, key in (("image_key", image_key), ("label_key", label_key)):
        if not isinstance(key, str) or not key:
            raise ValueError(f"{arg} must be a non-empty string, got {key!r}")
    if image_format not in ("auto", "encoded", "raw"):
        raise ValueError(f"image_format must be 'auto', 'encoded' or 'raw', got {image_format!r}")
    files = {
        split: _resolve_files(f"{split}_files", pattern) for split, pattern in zip(_SPLITS, (train_files, test_files))
    }
    raw = {
        split: _check_first_record(f"{split}_files", files[split], input_shape, image_key, label_key, image_format)
        for split in _SPLITS
    }
    counts = {split: _count_records(files[split]) if count else -1 for split in _SPLITS}

    parse = {
        split: _record_parser(name, input_shape, num_classes, image_key, label_key, raw[split]) for split in _SPLITS
    }
    scale = 1.0 / 255

    def policy(split):
        # Two or more files: FILE (AUTO would pick it too; explicit, so a pipeline change that hid the reader
        # from the rewrite would fail loudly instead of silently reading everything on every worker). One
        # file cannot be split by file: DATA, which is correct as the order is the same on every worker.
        return _FILE if len(files[split]) > 1 else _DATA

    # train: the per-epoch random key of each file and the record's index in it seed the augmentation of
    # the batch the record starts. They are zipped to the file names *before* the interleave: a seed
    # dataset zipped in after the reader (as `_finish` does) makes FILE sharding fail.
    names = tf.data.Dataset.from_tensor_slices(files["train"])
    keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    listed = tf.data.Dataset.zip(names, keys).shuffle(len(files["train"]), seed=seed, reshuffle_each_iteration=True)

    def read(path, key):
        return tf.data.TFRecordDataset(path).enumerate().map(lambda index, record: (record, tf.stack([key, index])))

    records = listed.interleave(
        read,
        cycle_length=min(len(files["train"]), _MAX_OPEN_FILES),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    transform = _transform(name, input_shape, scale, augment)
    train = records.batch(batch_size).map(
        lambda serialized, keys: transform(*parse["train"](serialized), keys[0]), num_parallel_calls=tf.data.AUTOTUNE
    )
    train = _shard_by(train.prefetch(tf.data.AUTOTUNE), policy("train"))

    plain = _transform(name, input_shape, scale, False)
    no_seed = tf.zeros([2], tf.int64)

    def ordered(split):
        records = tf.data.Dataset.from_tensor_slices(files[split]).flat_map(tf.data.TFRecordDataset)
        batches = records.batch(batch_size).map(
            lambda serialized: plain(*parse[split](serialized), no_seed), num_parallel_calls=tf.data.AUTOTUNE
        )
        return _shard_by(batches.prefetch(tf.data.AUTOTUNE), policy(split))

    def as_numpy(split):
        return _collect(ordered(split), input_shape)

    return Data(
        name=name,
        train=train,
        test=ordered("test"),
        input_shape=input_shape,
        num_classes=num_classes,
        class_names=[str(n) for n in class_names],
        num_train=counts["train"],
        num_test=counts["test"],
        source="tfrecord",
        _arrays={split: functools.partial(as_numpy, split) for split in _SPLITS},
        pixel_scale=float(scale),
    )


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(is_int(d) and d >= 1 for d in shape):
        raise ValueError(f"input_shape must be (height, width, channels), three positive integers, got {input_shape!r}")
    return tuple(int(d) for d in shape)


def _resolve_files(arg, files):
    """The files `files` (a path, a glob pattern or a list of them) names, each once."""
    patterns = [files] if isinstance(files, (str, os.PathLike)) else files
    try:
        patterns = [os.fspath(pattern) for pattern in patterns]
    except TypeError:
        raise ValueError(f"{arg} must be a path, a glob pattern or a list of them, got {files!r}") from None
    if not patterns:
        raise ValueError(f"{arg} must name at least one file, got {files!r}")
    found = []
    for pattern in patterns:
        matches = [path for path in sorted(tf.io.gfile.glob(pattern)) if not tf.io.gfile.isdir(path)]
        if not matches:
            folder = os.path.dirname(pattern) or "."
            if tf.io.gfile.isdir(folder):
                entries = sorted(tf.io.gfile.listdir(folder))
                there = f"it holds {entries[:10]}{' ...' if len(entries) > 10 else ''}" if entries else "it is empty"
            else:
                there = "it does not exist"
            raise FileNotFoundError(f"{arg}: {pattern!r} matches no file (folder {folder!r}: {there})")
        found.extend(path for path in matches if path not in found)
    return found


def _check_first_record(arg, files, input_shape, image_key, label_key, image_format):
    """Reads the first record of `files` and checks it against the arguments; whether its images are raw."""
    first = path = None
    for path in files:
        try:
            first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
        except tf.errors.OpError as error:
            raise ValueError(f"{arg}: {path} is not a readable TFRecord file: {error.message}") from None
        if first is not None:
            break
    if first is None:
        raise ValueError(f"{arg}: the files {files[:3]}{' ...' if len(files) > 3 else ''} hold no record")
    from google.protobuf.message import DecodeError

    try:
        feature = tf.train.Example.FromString(first.numpy()).features.feature
    except DecodeError as error:
        raise ValueError(f"{arg}: the records of {path} are not tf.train.Example messages ({error})") from None
    kinds = {key: feature[key].WhichOneof("kind") for key in feature}
    if kinds.get(image_key) != "bytes_list" or kinds.get(label_key) != "int64_list":
        raise ValueError(
            f"{arg}: the records of {path} have the features {kinds}; expected image_key={image_key!r} (bytes_list) "
            f"and label_key={label_key!r} (int64_list)"
        )
    data = feature[image_key].bytes_list.value[0]
    if image_format == "auto":
        image_format = (
            "raw"
            if kinds.get("format") == "bytes_list" and feature["format"].bytes_list.value[:1] == [b"raw"]
            else "encoded"
        )
    stored = tuple(
        feature[key].int64_list.value[0] for key in ("height", "width", "channels") if kinds.get(key) == "int64_list"
    )
    if image_format == "raw":
        expected = int(np.prod(input_shape))
        if len(data) != expected or (len(stored) == 3 and stored != input_shape):
            described = f"shape {stored}" if len(stored) == 3 else f"{len(data)} bytes"
            raise ValueError(
                f"{arg}: the first raw image of {path} has {described}, but input_shape={input_shape} needs "
                f"{expected} bytes"
            )
        return True
    if input_shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"input_shape={input_shape}: encoded images decode to 1, 3 or 4 channels; store others with "
            "image_format='raw'"
        )
    try:
        shape = tuple(tf.io.decode_image(data, expand_animations=False).shape)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"{arg}: the first image of {path} is not a PNG, JPEG, GIF or BMP file ({error.message}); for raw "
            "pixels pass image_format='raw'"
        ) from None
    if shape != input_shape:
        raise ValueError(f"{arg}: the first image of {path} has shape {shape}, but input_shape={input_shape}")
    return False


def _count_records(files):
    reader = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), _MAX_OPEN_FILES))
    return int(reader.reduce(np.int64(0), lambda n, _record: n + 1))


def _record_parser(name, input_shape, num_classes, image_key, label_key, raw):
    """fn(serialized records (B,)) -> (uint8 images (B, H, W, C), int64 labels (B,)), checked."""
    features = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
    height, width, channels = input_shape
    size = height * width * channels

    def decode(data):
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        fits = tf.debugging.assert_equal(
            tf.shape(image)[:2],
            tf.constant([height, width]),
            message=f"{name}: an image's height and width differ from input_shape={input_shape}",
        )
        with tf.control_dependencies([fits]):
            return tf.ensure_shape(tf.identity(image), input_shape)

    def parse(serialized):
        example = tf.io.parse_example(serialized, features)
        data, labels = example[image_key], example[label_key]
        checks = [
            tf.debugging.assert_non_negative(labels, message=f"{name}: a label is negative"),
            tf.debugging.assert_less(
                labels, tf.constant(num_classes, tf.int64), message=f"{name}: a label is >= num_classes={num_classes}"
            ),
        ]
        if raw:
            pixels = tf.io.decode_raw(data, tf.uint8)
            fits = tf.debugging.assert_equal(
                tf.shape(pixels)[1],
                size,
                message=f"{name}: a raw image does not have the {size} bytes of {input_shape}",
            )
            with tf.control_dependencies([fits]):
                images = tf.reshape(pixels, [-1, *input_shape])
        else:
            images = tf.map_fn(decode, data, fn_output_signature=tf.TensorSpec(input_shape, tf.uint8))
        with tf.control_dependencies(checks):
            return tf.identity(images), tf.identity(labels)

    return parse
