"""keras_kd.sample_index (`with_index`, `split_index`) and `datasets.load(..., index=True)`:
each training example carries its position in the training set through `fit`."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import keras_kd
from keras_kd import datasets
from keras_kd.datasets import tfds as tfds_source
from keras_kd.sample_index import INDEX_KEY, INPUTS_KEY, split_index, with_index

X = np.arange(5 * 3, dtype="float32").reshape(5, 3)
Y = np.arange(5, dtype="int32") % 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: True)  # only the tfds mock "downloads"


def test_reexported_from_datasets():
    assert keras_kd.datasets.with_index is with_index
    assert "with_index" in datasets.__all__


def test_with_index_on_arrays():
    x, y = with_index(X, Y)
    assert set(x) == {INPUTS_KEY, INDEX_KEY}
    np.testing.assert_array_equal(x[INPUTS_KEY], X)
    np.testing.assert_array_equal(x[INDEX_KEY], np.arange(5))
    assert x[INDEX_KEY].dtype == np.int64
    np.testing.assert_array_equal(y, Y)
    weights = np.ones(5, "float32")
    x, y, w = with_index(X, Y, weights)
    assert w is weights
    (x,) = with_index(X)
    np.testing.assert_array_equal(x[INDEX_KEY], np.arange(5))


def test_with_index_on_dict_arrays():
    (x,) = with_index({"a": X, "b": Y})
    assert set(x) == {"a", "b", INDEX_KEY}
    np.testing.assert_array_equal(x[INDEX_KEY], np.arange(5))
    with pytest.raises(ValueError, match=INDEX_KEY):
        with_index({"a": X, INDEX_KEY: Y})


@pytest.mark.parametrize("element", ["x", "xy", "xyw"])
def test_with_index_on_a_tensor_dataset(element):
    parts = {"x": (X,), "xy": (X, Y), "xyw": (X, Y, np.ones(5, "float32"))}[element]
    ds = tf.data.Dataset.from_tensor_slices(parts[0] if element == "x" else parts)
    indexed = list(with_index(ds).shuffle(5, seed=0).batch(5))
    assert len(indexed) == 1
    batch = indexed[0]
    x = batch if element == "x" else batch[0]
    if element != "x":
        assert len(batch) == len(parts)
        np.testing.assert_array_equal(batch[1].numpy(), Y[x[INDEX_KEY].numpy()])
    index = x[INDEX_KEY].numpy()
    assert sorted(index) == list(range(5))
    np.testing.assert_array_equal(x[INPUTS_KEY].numpy(), X[index])  # each row kept its position


def test_with_index_on_a_dict_dataset():
    ds = tf.data.Dataset.from_tensor_slices(({"a": X, "b": Y}, Y))
    x, y = next(iter(with_index(ds).batch(5)))
    assert set(x) == {"a", "b", INDEX_KEY}
    np.testing.assert_array_equal(x[INDEX_KEY].numpy(), np.arange(5))
    np.testing.assert_array_equal(x["a"].numpy(), X)


def test_with_index_dataset_takes_no_arrays():
    with pytest.raises(ValueError, match="inside the dataset"):
        with_index(tf.data.Dataset.from_tensor_slices(X), Y)


def test_split_index_round_trip():
    (x,) = with_index(X)
    inputs, index = split_index(x)
    assert inputs is X
    np.testing.assert_array_equal(index, np.arange(5))
    (x,) = with_index({"a": X, "b": Y})
    inputs, index = split_index(x)
    assert set(inputs) == {"a", "b"} and inputs["a"] is X
    assert INDEX_KEY in x  # the caller's dict is not changed
    # Data without an index passes through.
    assert split_index(X) == (X, None)
    plain = {"a": X}
    assert split_index(plain) == (plain, None)


def test_digits_train_batches_carry_each_position_once_per_epoch():
    data = datasets.load("digits", batch_size=32, limit=100, index=True)
    plain = datasets.load("digits", batch_size=32, limit=100)
    x_train, y_train = data.numpy("train")
    assert data.num_train == 100
    # The same first batch as without the index (same seed).
    x_first = next(iter(data.train))[0][INPUTS_KEY].numpy()
    np.testing.assert_array_equal(x_first, next(iter(plain.train))[0].numpy())
    for _ in range(2):
        seen = []
        for x, y in data.train:
            assert set(x) == {INPUTS_KEY, INDEX_KEY}
            index = x[INDEX_KEY].numpy()
            seen.append(index)
            # The index is the example's row in the training split.
            np.testing.assert_array_equal(x[INPUTS_KEY].numpy(), x_train[index])
            np.testing.assert_array_equal(y.numpy(), y_train[index])
        seen = np.concatenate(seen)
        np.testing.assert_array_equal(np.sort(seen), np.arange(100))
    assert not np.array_equal(seen, np.arange(100))  # shuffled
    # No index in test.
    x_test, _ = next(iter(data.test))
    assert isinstance(x_test, tf.Tensor) and x_test.shape[1:] == (8, 8, 1)


def test_digits_index_survives_augmentation():
    data = datasets.load("digits", batch_size=50, limit=100, index=True, augment=True)
    index = np.concatenate([x[INDEX_KEY].numpy() for x, _ in data.train])
    np.testing.assert_array_equal(np.sort(index), np.arange(100))
    x, _ = next(iter(data.train))
    assert x[INPUTS_KEY].shape == (50, 8, 8, 1)


def test_tfds_train_batches_carry_the_index():
    with tfds.testing.mock_data(num_examples=12):
        data = datasets.load("mnist", batch_size=5, index=True, augment=True)
        batches = list(data.train)
        x_train, _ = data.numpy("train")
        x_test, _ = next(iter(data.test))
    index = np.concatenate([x[INDEX_KEY].numpy() for x, _ in batches])
    np.testing.assert_array_equal(np.sort(index), np.arange(12))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    assert isinstance(x_test, tf.Tensor)
    assert x_train.shape == (12, 28, 28, 1)
