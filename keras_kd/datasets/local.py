"""The local-folder source: `<name>.npz` (the `keras.datasets` / `mnist.npz`
layout) or `<name>_jpeg.npz` (concatenated JPEG files plus offsets), read
into memory whole and cached per file and process."""

import contextlib
import functools
import zipfile
import zlib

import numpy as np
import tensorflow as tf

from keras_kd.datasets.data import SPLITS
from keras_kd.datasets.pipeline import from_arrays
from keras_kd.validation import received


def find(folder, name):
    """`folder/<name>.npz` or else `folder/<name>_jpeg.npz`, whichever is a file; None if neither."""
    for candidate in (folder / f"{name}.npz", folder / f"{name}_jpeg.npz"):
        if candidate.is_file():
            return candidate
    return None


def from_file(name, path, batch_size, augment, seed, limit, index=False):
    """A `Data` over the arrays of `path`, a file `find` returned."""
    arrays = _read_npz(path) if path.name == f"{name}.npz" else _read_jpeg_npz(path)
    return from_arrays(name, *arrays, f"local:{path}", batch_size, augment, seed, limit, index)


def missing_message(folder, name):
    """What `load` looked for in an explicit `data_dir` and what the folder holds."""
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
        splits = {split: (_images(npz[f"x_{split}"], path, split), npz[f"y_{split}"]) for split in SPLITS}
        return _checked(splits, path), _names_in(npz)


@functools.lru_cache(maxsize=4)
def _read_jpeg_npz_cached(path, _mtime, _size):
    with np.load(path) as npz:
        _require(
            npz, path, [f"{split}_{key}" for split in SPLITS for key in ("jpeg", "offsets")] + ["y_train", "y_test"]
        )
        splits = {
            split: (_decode_jpegs(npz[f"{split}_jpeg"], npz[f"{split}_offsets"], path, split), npz[f"y_{split}"])
            for split in SPLITS
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
        raise ValueError(
            f"`x_{split}` in {path} must be (N, H, W) or (N, H, W, C) images. {received('shape', x.shape)}"
        )
    return x


def _checked(splits, path):
    out = {}
    for split, (x, y) in splits.items():
        y = np.asarray(y).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{path}: the {split} split has {len(x)} images but {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: `y_{split}` must hold integer labels. {received('dtype', str(y.dtype))}")
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
