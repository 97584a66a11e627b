"""keras_kd.datasets: each source (scikit-learn, local .npz, local JPEG .npz,
tensorflow-datasets through its mock), augmentation, and the errors a user can meet.

No test touches the network: `_network_reachable` fails the test unless a test
sets it to a fixed answer."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_kd import datasets, extras
from keras_kd.datasets import tfds as tfds_source

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CHECK = tfds_source._network_reachable


def _unexpected_check():
    raise AssertionError("the connectivity check ran where no download was needed")


def _shared(file):
    path = SHARED / file
    return pytest.mark.skipif(
        not path.is_file(), reason=f"{path} absent: the real data lives in ../shared/data next to the repository"
    )


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No data folder from the environment, and no connectivity check unless a test allows it."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(tfds_source, "_network_reachable", _unexpected_check)


def epoch(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def is_shift(augmented, original, pad, flips=False):
    """Whether `augmented` is `original` moved by up to `pad` pixels (zero fill), maybe mirrored."""
    candidates = [original, original[:, ::-1]] if flips else [original]
    height, width = original.shape[:2]
    for image in candidates:
        padded = np.pad(image, [(pad, pad), (pad, pad), (0, 0)])
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                if np.array_equal(padded[dy : dy + height, dx : dx + width], augmented):
                    return True
    return False


def write_npz(folder, name, n_train=10, n_test=6, shape=(12, 12), label_shape=(), **extra):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 3).astype(np.uint8).reshape(n_train, *label_shape),
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 3).astype(np.uint8).reshape(n_test, *label_shape),
        **extra,
    }
    np.savez(folder / f"{name}.npz", **arrays)
    return arrays


# --------------------------------------------------------------------------- digits


def test_names_are_the_builtins():
    assert datasets.names() == ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100"]


def test_digits_shapes_dtypes_and_range():
    data = datasets.load("digits", batch_size=100)
    assert (data.input_shape, data.num_classes, data.source) == ((8, 8, 1), 10, "scikit-learn")
    assert data.class_names == [str(i) for i in range(10)]
    assert data.num_train + data.num_test == 1797
    x, y = next(iter(data.train))
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((100, 8, 8, 1), tf.float32, (100,), tf.int32)
    x_test, y_test = data.numpy("test")
    x_train, y_train = data.numpy("train")
    assert x_test.shape == (data.num_test, 8, 8, 1) and x_train.shape == (data.num_train, 8, 8, 1)
    assert x_test.dtype == np.float32 and y_test.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0  # pixels / 16
    # test: the whole split in file order; train: every example once per epoch
    np.testing.assert_array_equal(epoch(data.test)[0], x_test)
    np.testing.assert_array_equal(epoch(data.test)[1], y_test)
    assert sorted(epoch(data.train)[1]) == sorted(y_train)


def test_digits_split_is_stratified_and_seeded():
    data = datasets.load("digits")
    train_counts = np.bincount(data.numpy("train")[1], minlength=10)
    test_counts = np.bincount(data.numpy("test")[1], minlength=10)
    assert np.abs(train_counts - test_counts).max() <= 1
    again, other = datasets.load("digits", seed=0), datasets.load("digits", seed=1)
    np.testing.assert_array_equal(again.numpy("train")[0], data.numpy("train")[0])
    assert not np.array_equal(other.numpy("train")[0], data.numpy("train")[0])


def test_train_is_reshuffled_each_epoch_and_reproducible():
    first, second = (datasets.load("digits", batch_size=128, seed=3) for _ in range(2))
    epoch_1 = epoch(first.train)[1]
    np.testing.assert_array_equal(epoch(second.train)[1], epoch_1)  # same seed, same order
    assert not np.array_equal(epoch(first.train)[1], epoch_1)  # a new order next epoch


def test_augment_shifts_digits_without_flipping_or_touching_labels():
    plain = datasets.load("digits", batch_size=256, seed=5)
    augmented = datasets.load("digits", batch_size=256, seed=5, augment=True)
    x_plain, y_plain = epoch(plain.train)
    x_aug, y_aug = epoch(augmented.train)
    assert x_aug.shape == x_plain.shape and x_aug.dtype == np.float32
    np.testing.assert_array_equal(y_aug, y_plain)  # augmentation leaves the order and labels alone
    assert not np.array_equal(x_aug, x_plain)
    assert all(is_shift(a, p, pad=1) for a, p in zip(x_aug, x_plain))  # shifts by <= 1 pixel, no mirror
    np.testing.assert_array_equal(epoch(augmented.test)[0], epoch(plain.test)[0])  # test never augmented


# --------------------------------------------------------------------------- local folder


def test_local_npz(tmp_path):
    arrays = write_npz(tmp_path, "toy", label_shape=(1,), class_names=np.array(["a", "b", "c", "d"]))
    (tmp_path / "notes.txt").write_text("other files are ignored")
    data = datasets.load("toy", batch_size=4, data_dir=tmp_path, limit=8)
    assert (data.input_shape, data.num_train, data.num_test) == ((12, 12, 1), 8, 6)
    assert data.class_names == ["a", "b", "c", "d"] and data.num_classes == 4
    assert data.source == f"local:{tmp_path / 'toy.npz'}"
    x_train, y_train = data.numpy("train")
    np.testing.assert_allclose(x_train[..., 0], arrays["x_train"][:8] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, arrays["y_train"][:8, 0])
    x, y = next(iter(data.test))
    assert (x.shape, y.dtype) == ((4, 12, 12, 1), tf.int32)


def test_local_npz_from_the_environment_variable(tmp_path, monkeypatch):
    write_npz(tmp_path, "toy", shape=(16, 16, 3))
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    data = datasets.load("toy", batch_size=3)
    assert data.input_shape == (16, 16, 3) and data.class_names == ["0", "1", "2"]
    assert data.source.startswith("local:")


def test_augment_flips_and_shifts_colour_images(tmp_path):
    write_npz(tmp_path, "toy", n_train=64, shape=(32, 32, 3))
    plain = datasets.load("toy", batch_size=16, data_dir=tmp_path, seed=2)
    augmented = datasets.load("toy", batch_size=16, data_dir=tmp_path, seed=2, augment=True)
    x_plain, _ = epoch(plain.train)
    x_aug, _ = epoch(augmented.train)
    assert all(is_shift(a, p, pad=4, flips=True) for a, p in zip(x_aug, x_plain))
    assert not all(is_shift(a, p, pad=4) for a, p in zip(x_aug, x_plain))  # some are mirrored


def test_local_jpeg_npz(tmp_path):
    rng = np.random.default_rng(1)
    splits, decoded = {}, {}
    for split, n in (("train", 7), ("test", 5)):
        images = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
        files = [tf.io.encode_jpeg(image, quality=90).numpy() for image in images]
        decoded[split] = np.stack([tf.io.decode_jpeg(f).numpy() for f in files])
        splits[f"{split}_jpeg"] = np.frombuffer(b"".join(files), dtype=np.uint8)
        splits[f"{split}_offsets"] = np.cumsum([0] + [len(f) for f in files]).astype(np.int64)
        splits[f"y_{split}"] = (np.arange(n) % 2).astype(np.uint8)
    np.savez(tmp_path / "toy_jpeg.npz", class_names=np.array(["cat", "dog"]), **splits)
    data = datasets.load("toy", batch_size=4, data_dir=tmp_path)
    assert (data.input_shape, data.num_train, data.num_test) == ((16, 16, 3), 7, 5)
    assert data.class_names == ["cat", "dog"] and data.source.endswith("toy_jpeg.npz")
    for split in ("train", "test"):
        x, y = data.numpy(split)
        np.testing.assert_allclose(x, decoded[split] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, splits[f"y_{split}"])


def test_missing_local_file_names_folder_and_contents(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        datasets.load("toy", data_dir=tmp_path)
    message = str(error.value)
    for part in (str(tmp_path), "toy.npz", "toy_jpeg.npz", "mnist.npz"):
        assert part in message


def test_npz_without_the_arrays_is_rejected(tmp_path):
    np.savez(tmp_path / "toy.npz", x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="x_test"):
        datasets.load("toy", data_dir=tmp_path)


@_shared("mnist.npz")
def test_real_mnist_npz():
    data = datasets.load("mnist", batch_size=50, data_dir=SHARED, limit=500, augment=True)
    assert (data.input_shape, data.num_classes, data.num_train, data.num_test) == ((28, 28, 1), 10, 500, 500)
    x, y = next(iter(data.train))
    assert (x.shape, x.dtype, y.dtype) == ((50, 28, 28, 1), tf.float32, tf.int32)
    x_test, y_test = data.numpy("test")
    assert 0.0 <= x_test.min() and x_test.max() <= 1.0 and set(y_test) == set(range(10))


@_shared("cifar10_jpeg.npz")
def test_real_cifar10_jpeg_npz():
    data = datasets.load("cifar10", batch_size=100, data_dir=SHARED, limit=300, augment=True)
    assert (data.input_shape, data.num_classes, data.num_train, data.num_test) == ((32, 32, 3), 10, 300, 300)
    assert data.class_names[:3] == ["airplane", "automobile", "bird"]
    x, y = next(iter(data.train))
    assert (x.shape, x.dtype, y.dtype) == ((100, 32, 32, 3), tf.float32, tf.int32)
    x_test, _ = data.numpy("test")
    assert 0.3 < x_test.mean() < 0.7
    start = time.perf_counter()
    datasets.load("cifar10", data_dir=SHARED, limit=10)
    assert time.perf_counter() - start < 1.0, "the decoded JPEGs should be cached for the process"


# --------------------------------------------------------------------------- tensorflow-datasets


@pytest.mark.parametrize(
    "name, shape, first_class", [("mnist", (28, 28, 1), "0"), ("cifar10", (32, 32, 3), "airplane")]
)
def test_tfds_mock(name, shape, first_class, monkeypatch):
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: True)  # the mock makes the download a no-op
    with tfds.testing.mock_data(num_examples=12):
        data = datasets.load(name, batch_size=5, augment=True)
        limited = datasets.load(name, batch_size=5, limit=7)
        x, y = next(iter(data.train))
        x_test, y_test = data.numpy("test")
        test_batches = [len(y) for _, y in limited.test]
    assert (data.source, data.input_shape, data.num_classes, data.num_train, data.num_test) == (
        "tfds",
        shape,
        10,
        12,
        12,
    )
    assert len(data.class_names) == 10 and data.class_names[0] == first_class
    assert (x.shape, x.dtype, y.dtype) == ((5, *shape), tf.float32, tf.int32)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert x_test.shape == (12, *shape) and y_test.dtype == np.int32
    assert (limited.num_train, limited.num_test, test_batches) == (7, 7, [5, 2])


class KerasKdToyImages(tfds.core.GeneratorBasedBuilder):
    """A real tfds image-classification builder with train and validation splits, prepared offline."""

    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # no source folder: no checksum file to look up

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(10, 10, 3)),
            "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
        }
        return tfds.core.DatasetInfo(
            builder=self, features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 9), "validation": self._generate_examples(100, 5)}

    def _generate_examples(self, start, count):
        rng = np.random.default_rng(start)
        for i in range(count):
            yield start + i, {"image": rng.integers(0, 256, (10, 10, 3), dtype=np.uint8), "label": i % 3}


def test_prepared_tfds_folder_as_data_dir(tmp_path):
    tfds.disable_progress_bar()
    KerasKdToyImages(data_dir=str(tmp_path)).download_and_prepare()
    data = datasets.load("keras_kd_toy_images", batch_size=4, data_dir=tmp_path, augment=True)
    assert (data.source, data.input_shape, data.class_names) == ("tfds", (10, 10, 3), ["red", "green", "blue"])
    assert (data.num_train, data.num_test) == (9, 5)  # no "test" split: "validation" stands in
    assert [len(y) for _, y in data.test] == [4, 1]
    x_train, y_train = data.numpy("train")
    assert x_train.shape == (9, 10, 10, 3) and sorted(y_train) == sorted(np.arange(9) % 3)
    assert sorted(epoch(data.train)[1]) == sorted(y_train)


def _without_prepared_datasets(monkeypatch, folder):
    """tensorflow-datasets' default folder becomes the empty `folder`, so no
    dataset is prepared whatever this machine holds."""
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(folder))
    assert not tfds.builder("kmnist").is_prepared()


def test_missing_importlib_resources_is_explained(monkeypatch, tmp_path):
    _without_prepared_datasets(monkeypatch, tmp_path / "tfds")

    def download_and_prepare(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'importlib_resources'", name="importlib_resources")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: True)
    with pytest.raises(ImportError, match="pip install importlib_resources"):
        datasets.load("kmnist")


def test_offline_without_a_local_copy_raises_one_clear_error(monkeypatch, tmp_path):
    _without_prepared_datasets(monkeypatch, tmp_path / "tfds")
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: False)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))  # a data folder without kmnist: on to tfds
    start = time.perf_counter()
    with pytest.raises(datasets.DataUnavailableError) as error:
        datasets.load("kmnist")
    assert time.perf_counter() - start < 5.0
    assert isinstance(error.value, RuntimeError)
    for part in ("--data-dir", "KERAS_KD_DATA_DIR", "kmnist.npz", "x_train, y_train, x_test, y_test", "network"):
        assert part in str(error.value)
    assert str(tmp_path) in str(error.value)
    monkeypatch.setattr(tfds_source, "_network_reachable", _unexpected_check)  # download=False: no check at all
    with pytest.raises(datasets.DataUnavailableError, match="download=False"):
        datasets.load("kmnist", download=False)


def test_connectivity_check_answers_quickly(monkeypatch):
    with socket.socket() as probe:  # a local port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(tfds_source, "NETWORK_CHECK", ("127.0.0.1", port, 1.0))
    start = time.perf_counter()
    assert REAL_CHECK() is False
    assert time.perf_counter() - start < 2.0


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_data'") as error:
        datasets.load("no_such_data")
    assert "digits, mnist, fashion_mnist, cifar10, cifar100" in str(error.value)
    assert "image-classification" in str(error.value)


def test_non_image_dataset_is_rejected_from_metadata_alone():
    with pytest.raises(ValueError, match="not an image-classification dataset"):
        datasets.load("imdb_reviews")  # metadata only: no download, no connectivity check


# --------------------------------------------------------------------------- without tensorflow-datasets


def test_without_tensorflow_datasets_only_its_names_need_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # `import tensorflow_datasets` now fails
    with pytest.raises(extras.MissingExtraError) as error:
        datasets.load("cifar10")
    message = str(error.value)
    assert error.value.name == "tensorflow_datasets"
    assert "keras_kd.datasets.load('cifar10')" in message and 'pip install "keras-kd[datasets]"' in message
    assert datasets.load("digits", limit=10).num_train == 10
    write_npz(tmp_path, "toy")
    assert datasets.load("toy", data_dir=tmp_path).source.startswith("local:")
    with pytest.raises(FileNotFoundError, match=r"no_data\.npz.*keras-kd\[datasets\]"):  # could be a tfds folder
        datasets.load("no_data", data_dir=tmp_path)
    x = np.zeros((4, 8, 8), np.uint8)
    files = datasets.write_tfrecords(x, np.arange(4) % 2, tmp_path / "records")
    assert datasets.from_tfrecords(files, files, (8, 8, 1), 2).numpy("test")[0].shape == (4, 8, 8, 1)


def test_importing_the_package_does_not_import_tensorflow_datasets():
    code = (
        "import sys; import keras_kd.datasets as d; d.load('digits', limit=10); "
        "assert 'tensorflow_datasets' not in sys.modules, 'imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "`batch_size` must be a positive integer. Received: batch_size=0"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": "64"}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"limit": 0}, "`limit` must be a positive integer or None. Received: limit=0"),
        ({"limit": -3}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"seed": -1}, "seed"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
    ],
)
def test_bad_arguments(kwargs, match):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(ValueError, match=match):
        datasets.load(**kwargs)


def test_bad_split():
    with pytest.raises(ValueError, match="`split` must be one of.*Received: split='validation'"):
        datasets.load("digits", limit=10).numpy("validation")


def test_numpy_count_returns_the_first_examples_of_every_source(tmp_path):
    digits = datasets.load("digits", batch_size=32)
    x, y = digits.numpy("train")
    x_first, y_first = digits.numpy("train", count=50)
    np.testing.assert_array_equal(x_first, x[:50])
    np.testing.assert_array_equal(y_first, y[:50])
    paths = datasets.write_tfrecords((x[:70] * 16).astype("uint8"), y[:70], str(tmp_path / "d"), num_shards=2)
    streamed = datasets.from_tfrecords(paths, paths, (8, 8, 1), 10, batch_size=16)
    x_all, y_all = streamed.numpy("test")
    x_some, y_some = streamed.numpy("test", count=20)  # a batch and a part of the next
    assert x_some.shape == (20, 8, 8, 1)
    np.testing.assert_array_equal(x_some, x_all[:20])
    np.testing.assert_array_equal(y_some, y_all[:20])
    with pytest.raises(ValueError, match=r"`count` must be a positive integer or None. Received: count=0"):
        digits.numpy("train", count=0)
