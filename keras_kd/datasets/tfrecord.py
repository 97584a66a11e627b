"""Data larger than memory as TFRecord files of `tf.train.Example`s:
`write_tfrecords` writes them, `from_tfrecords` streams them as a `Data`
(no cache, a bounded shuffle buffer, files read in parallel, sharded by file
under a multi-worker strategy)."""

import functools
import os

import numpy as np
import tensorflow as tf

from keras_kd.datasets.data import MEMORY_BUDGET, SPLITS, Data, check_args
from keras_kd.datasets.pipeline import DATA, FILE, collect, shard_by, transform
from keras_kd.validation import is_int, received, validate_positive_int

SHARD_BYTES = 128 << 20  # write_tfrecords' default: about this many bytes of uint8 pixels per file
SHUFFLE_RECORDS = 10_000  # from_tfrecords' default shuffle buffer, at most (records)
TFRECORD_FORMATS = ("png", "jpeg", "raw")
_MAX_OPEN_FILES = 16  # train files read at once (interleave cycle length)


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
        raise ValueError(
            f"`image_format` must be one of {list(TFRECORD_FORMATS)}. {received('image_format', image_format)}"
        )
    if not (hasattr(images, "shape") and hasattr(images, "dtype")):
        images = np.asarray(images)
    shape = tuple(int(d) for d in images.shape)
    if np.dtype(images.dtype) != np.uint8:
        raise ValueError(
            "`images` must be uint8; convert [0, 1] floats with np.round(x * 255).astype('uint8'). "
            f"{received('images.dtype', str(images.dtype))}"
        )
    if len(shape) not in (3, 4) or shape[0] < 1 or 0 in shape:
        raise ValueError(
            f"`images` must be a non-empty (N, H, W) or (N, H, W, C) array. {received('images.shape', shape)}"
        )
    count, image_shape = shape[0], shape[1:] if len(shape) == 4 else (*shape[1:], 1)
    allowed = {"png": (1, 3, 4), "jpeg": (1, 3)}.get(image_format)
    if allowed and image_shape[-1] not in allowed:
        raise ValueError(
            f"`image_format={image_format!r}` takes images with {' or '.join(map(str, allowed))} channels; use "
            f"image_format='raw' for other channel counts. {received('images.shape', shape)}"
        )
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (count,):
        raise ValueError(
            f"`labels` must be (N,) or (N, 1) with N = {count} images. {received('labels.shape', labels.shape)}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be integers. {received('labels.dtype', str(labels.dtype))}")
    if labels.min() < 0:
        raise ValueError(f"`labels` must be >= 0. {received('min(labels)', int(labels.min()))}")
    if num_shards is None:
        num_shards = min(count, max(1, -(-count * int(np.prod(image_shape)) // SHARD_BYTES)))
    if not is_int(num_shards) or not 1 <= num_shards <= count:
        raise ValueError(
            f"`num_shards` must be an integer from 1 to the number of images ({count}). "
            f"{received('num_shards', num_shards)}"
        )
    validate_positive_int("chunk_size", chunk_size)

    prefix = os.fspath(path_prefix)
    folder, base = os.path.split(prefix)
    if not base:
        raise ValueError(f"`path_prefix` must end with a file name prefix. {received('path_prefix', prefix)}")
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
    check_args(name, batch_size, seed, None)
    batch_size, seed = int(batch_size), int(seed)
    input_shape = _check_input_shape(input_shape)
    num_classes = validate_positive_int("num_classes", num_classes)
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    elif isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must list num_classes = {num_classes} names. {received('class_names', class_names)}"
        )
    shuffle_buffer = validate_positive_int("shuffle_buffer", shuffle_buffer, allow_none=True)
    if shuffle_buffer is None:
        shuffle_buffer = max(1, min(SHUFFLE_RECORDS, MEMORY_BUDGET // int(np.prod(input_shape))))
    for arg, key in (("image_key", image_key), ("label_key", label_key)):
        if not isinstance(key, str) or not key:
            raise ValueError(f"`{arg}` must be a non-empty string. {received(arg, key)}")
    if image_format not in ("auto", "encoded", "raw"):
        raise ValueError(f"`image_format` must be 'auto', 'encoded' or 'raw'. {received('image_format', image_format)}")
    files = {
        split: _resolve_files(f"{split}_files", pattern) for split, pattern in zip(SPLITS, (train_files, test_files))
    }
    raw = {
        split: _check_first_record(f"{split}_files", files[split], input_shape, image_key, label_key, image_format)
        for split in SPLITS
    }
    counts = {split: _count_records(files[split]) if count else -1 for split in SPLITS}

    parse = {
        split: _record_parser(name, input_shape, num_classes, image_key, label_key, raw[split]) for split in SPLITS
    }
    scale = 1.0 / 255

    def policy(split):
        # Two or more files: FILE (AUTO would pick it too; explicit, so a pipeline change that hid the reader
        # from the rewrite would fail loudly instead of silently reading everything on every worker). One
        # file cannot be split by file: DATA, which is correct as the order is the same on every worker.
        return FILE if len(files[split]) > 1 else DATA

    # train: the per-epoch random key of each file and the record's index in it seed the augmentation of
    # the batch the record starts. They are zipped to the file names *before* the interleave: a seed
    # dataset zipped in after the reader (as `pipeline.finish` does) makes FILE sharding fail.
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
    augmented = transform(name, input_shape, scale, augment)
    train = records.batch(batch_size).map(
        lambda serialized, keys: augmented(*parse["train"](serialized), keys[0]), num_parallel_calls=tf.data.AUTOTUNE
    )
    train = shard_by(train.prefetch(tf.data.AUTOTUNE), policy("train"))

    plain = transform(name, input_shape, scale, False)
    no_seed = tf.zeros([2], tf.int64)

    def ordered(split):
        records = tf.data.Dataset.from_tensor_slices(files[split]).flat_map(tf.data.TFRecordDataset)
        batches = records.batch(batch_size).map(
            lambda serialized: plain(*parse[split](serialized), no_seed), num_parallel_calls=tf.data.AUTOTUNE
        )
        return shard_by(batches.prefetch(tf.data.AUTOTUNE), policy(split))

    def as_numpy(split, count=None):
        return collect(ordered(split), input_shape, count)

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
        _arrays={split: functools.partial(as_numpy, split) for split in SPLITS},
        pixel_scale=float(scale),
    )


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(is_int(d) and d >= 1 for d in shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels), three positive integers. "
            f"{received('input_shape', input_shape)}"
        )
    return tuple(int(d) for d in shape)


def _resolve_files(arg, files):
    """The files `files` (a path, a glob pattern or a list of them) names, each once."""
    patterns = [files] if isinstance(files, (str, os.PathLike)) else files
    try:
        patterns = [os.fspath(pattern) for pattern in patterns]
    except TypeError:
        raise ValueError(f"`{arg}` must be a path, a glob pattern or a list of them. {received(arg, files)}") from None
    if not patterns:
        raise ValueError(f"`{arg}` must name at least one file. {received(arg, files)}")
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
