"""What every source returns (`Data`), its error, and what the sources share:
names, constants, class names and the argument checks."""

import dataclasses

import tensorflow as tf

from keras_kd.validation import received, validate_positive_int, validate_seed

BUILTIN = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100")
ENV_VAR = "KERAS_KD_DATA_DIR"
MEMORY_BUDGET = 1 << 30  # bytes of uint8 images a tfds split may cache / shuffle, and a TFRecord shuffle buffer's cap
SPLITS = ("train", "test")

CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "digits": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
}  # fmt: skip


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

    def numpy(self, split="test", count=None):
        """The split as `(x float32 (N, H, W, C), y int32 (N,))`, normalized
        like the pipeline, in file order, never augmented: all of it, or its
        first `count` examples.

        The whole split is a full copy in memory (for a streamed source it
        reads the split once): meant for evaluation, not for the training
        split of data larger than memory. `count` reads only what it returns
        (e.g. a few hundred TFLite representative images)."""
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {list(SPLITS)}. {received('split', split)}")
        validate_positive_int("count", count, allow_none=True)
        if self._arrays is None:
            raise ValueError("numpy() needs a Data made by keras_kd.datasets.load or from_tfrecords")
        return self._arrays[split](count)


def check_args(name, batch_size, seed, limit):
    """`ValueError` unless the arguments every loader takes are valid."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string. {received('name', name)}")
    validate_positive_int("batch_size", batch_size)
    validate_seed("seed", seed)
    validate_positive_int("limit", limit, allow_none=True)
