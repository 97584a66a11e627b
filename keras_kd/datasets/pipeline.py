"""The `tf.data` pipeline every source ends in: scaling to [0, 1], batch
augmentation (random shifts and flips), prefetching, multi-worker sharding.

Augmentation (`augment=True`, train split only) is a random translation
(zero padding by `pad_for(input_shape)` pixels, then a random crop back to
size) and, where `flips(name, channels)`, a random horizontal flip. It runs on
whole batches with stateless random ops seeded from the loader's `seed`, so a
run is reproducible (given the same global TF seed) while each epoch sees
different shifts.
"""

import functools

import numpy as np
import tensorflow as tf

from keras_kd.datasets.data import CLASS_NAMES, SPLITS, Data
from keras_kd.sample_index import _attach

DIGIT_SETS = ("digits", "mnist", "emnist", "kmnist", "svhn")  # never flipped (fashion_mnist is)
DATA = tf.data.experimental.AutoShardPolicy.DATA
FILE = tf.data.experimental.AutoShardPolicy.FILE


def pixel_scale(dtype):
    """What a stored pixel of `dtype` is multiplied by: 1 / max for integers
    (1/255 for uint8), 1.0 for floats (taken as already in [0, 1])."""
    dtype = np.dtype(dtype)
    return 1.0 / np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else 1.0


def pad_for(input_shape):
    """The shift of `augment`, in pixels: 1 for images under 16 pixels (digits), else 4."""
    return 1 if min(input_shape[:2]) < 16 else 4


def flips(name, channels):
    """Whether `augment` mirrors the images of dataset `name`: 3-channel
    natural images and fashion_mnist, never a digit set (digits, MNIST,
    EMNIST, KMNIST, SVHN)."""
    base = name.split("/")[0].split(":")[0].lower()
    if base.startswith("fashion_mnist"):
        return True
    return channels == 3 and not any(digit_set in base for digit_set in DIGIT_SETS)


def augment(x, seed, pad, flip):
    """Shifts each image of the batch by up to `pad` pixels (zero padding) and,
    if `flip`, mirrors about half of them: one gather for the whole batch.

    Args:
        x: a batch of images (B, H, W, C), any dtype.
        seed: a stateless random seed, int (2,).
        pad: the largest shift, in pixels.
        flip: also mirror about half of the images.
    """
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


def transform(name, input_shape, scale, augmented):
    """fn(x batch, y batch, stateless seed) -> (float32 [0, 1] images, int32 labels),
    augmented (`augment`) when `augmented`."""
    pad, flip = pad_for(input_shape), flips(name, input_shape[-1])

    def apply(x, y, seed):
        if augmented:
            x = augment(x, seed, pad, flip)  # on the stored dtype (uint8): less to move
        return tf.cast(x, tf.float32) * scale, tf.cast(y, tf.int32)

    return apply


def finish(batches, fn, seed):
    """Applies `fn` (a `transform`) to whole batches, then prefetches. Batches of
    `(x, y, index)` come out as `({"inputs": x, "sample_index": index}, y)`."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    batches = tf.data.Dataset.zip(batches, seeds)

    def apply(batch, seed):
        x, y = fn(batch[0], batch[1], seed)
        return (x, y) if len(batch) == 2 else (_attach(x, batch[2]), y)

    return batches.map(apply, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def shard_by(dataset, policy):
    """`dataset` with `policy` (`DATA` or `FILE`) as its multi-worker auto-shard policy."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policy
    return dataset.with_options(options)


def collect(batches, input_shape, count=None):
    """A pipeline of (x, y) batches as (float32 (N, *input_shape), int32 (N,))
    arrays: all of it, or its first `count` examples (reading only the
    batches that hold them)."""
    xs, ys = [np.zeros((0, *input_shape), "float32")], [np.zeros((0,), "int32")]
    total = 0
    for x, y in batches:
        if count is not None and total >= count:
            break
        xs.append(x.numpy())
        ys.append(y.numpy())
        total += len(ys[-1])
    return np.concatenate(xs)[:count], np.concatenate(ys)[:count]


def from_arrays(name, splits, class_names, source, batch_size, augment, seed, limit, index=False):
    """A `Data` over in-memory arrays: `splits` maps "train" / "test" to
    `(images (N, H, W, C), int labels (N,))`; `class_names` may be None."""
    splits = {split: (x[:limit], y[:limit]) for split, (x, y) in splits.items()}
    x_train = splits["train"][0]
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    if splits["test"][0].shape[1:] != x_train.shape[1:]:
        raise ValueError(f"{source}: train images {input_shape} and test images {splits['test'][0].shape[1:]} differ")
    largest = max(int(y.max()) if len(y) else -1 for _, y in splits.values())
    class_names = class_names or CLASS_NAMES.get(name) or [str(i) for i in range(largest + 1)]
    if largest >= len(class_names):
        raise ValueError(f"{source}: label {largest} but only {len(class_names)} class names")
    scale = pixel_scale(x_train.dtype)

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
        return finish(batches, transform(name, input_shape, scale, augment and training), seed)

    def as_numpy(split, count=None):
        x, y = splits[split]
        return (x[:count] * np.float32(scale)).astype("float32"), y[:count].copy()

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
        _arrays={split: functools.partial(as_numpy, split) for split in SPLITS},
        pixel_scale=float(scale),
    )
