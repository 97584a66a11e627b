import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402


def pytest_report_header(config):
    return f"Keras backend: {keras.backend.backend()} (KERAS_BACKEND selects it)"


@pytest.fixture(scope="session")
def digits():
    """The 1797 8x8 digits shipped with scikit-learn, flattened to [0, 1]."""
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int32")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


def mlp(hidden, name, inputs=64, classes=10, batch_norm=True, dropout=0.0):
    """A tiny MLP with named layers `hidden`, `bn` and `logits`."""
    x = inputs_ = keras.Input((inputs,), name="pixels")
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs_, outputs, name=name)


def cnn(channels, name, classes=10):
    """A tiny channels-last CNN on 8x8x1 images with named blocks."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="block1")(x)
    x = keras.layers.Conv2D(2 * channels, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="block2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="session")
def trained_teacher(digits):
    """An MLP teacher trained on digits (BatchNorm and Dropout inside)."""
    x, y = digits
    keras.utils.set_random_seed(1)
    teacher = mlp(64, "teacher", dropout=0.2)
    teacher.compile("adam", sparse_ce())
    teacher.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return teacher


@pytest.fixture
def assert_all_close():
    def check(actual, expected, **kwargs):
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, **kwargs)

    return check
