"""The "digits" source: scikit-learn's 1797 8x8 digits, shipped with
scikit-learn, so always available offline."""

import dataclasses

from keras_kd.datasets.data import CLASS_NAMES
from keras_kd.datasets.pipeline import from_arrays


def from_sklearn(batch_size, augment, seed, limit, index=False):
    """The "digits" `Data`, split 50/50 with `train_test_split(test_size=0.5,
    stratify=y, random_state=seed)`; `pixel_scale` 1/16 (the pixels are 0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.5, stratify=y, random_state=seed)
    splits = {"train": (x_train, y_train), "test": (x_test, y_test)}
    data = from_arrays("digits", splits, CLASS_NAMES["digits"], "scikit-learn", batch_size, augment, seed, limit, index)
    return dataclasses.replace(data, pixel_scale=1 / 16)  # the arrays are divided by 16 already
