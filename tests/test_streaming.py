"""Data larger than memory: `write_tfrecords` / `from_tfrecords`, and tensorflow-datasets
pipelines without a cache. Tiny data (scikit-learn's digits as uint8) so every test is fast.

The "no full copy" checks read the tf.data graph itself (`DatasetToGraphV2`): no
CacheDataset op anywhere, every ShuffleDataset buffer bounded."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

import keras_kd
from keras_kd import datasets
from keras_kd.datasets import tfds as tfds_source
from keras_kd.datasets import tfrecord
from keras_kd.losses import KDLoss

N_TRAIN = 900  # digits 0..899 train (3 files), 900..1796 test (2 files)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: True)  # tfds mocks make the download a no-op


@pytest.fixture(scope="module")
def digits_uint8():
    digits = load_digits()
    return np.round(digits.images * 255 / 16).astype(np.uint8), digits.target


@pytest.fixture(scope="module")
def written(digits_uint8, tmp_path_factory):
    """fn(image_format) -> the digits as TFRecords (train paths, test paths, x uint8 (N, 8, 8), y), written once."""
    x, y = digits_uint8
    cache = {}

    def write(image_format):
        if image_format not in cache:
            folder = tmp_path_factory.mktemp(f"digits_{image_format}")
            train = datasets.write_tfrecords(x[:N_TRAIN], y[:N_TRAIN], folder / "train", 3, image_format)
            test = datasets.write_tfrecords(x[N_TRAIN:], y[N_TRAIN:], folder / "test", 2, image_format)
            cache[image_format] = train, test, x, y
        return cache[image_format]

    return write


@pytest.fixture
def shards(written):
    return written("png")


def epoch(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def rows(x, y):
    """Each example as one sortable row: the multiset of (image, label) pairs."""
    table = np.concatenate([x.reshape(len(x), -1), y.reshape(-1, 1).astype(x.dtype)], axis=1)
    return table[np.lexsort(table.T[::-1])]


def graph_nodes(ds):
    """Every node of the dataset's graph, the functions (map, interleave, ...) included."""
    # external_state_policy=1: IGNORE the stateful seed generators instead of warning
    serialized = tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor, external_state_policy=1)
    graph = tf.compat.v1.GraphDef.FromString(serialized.numpy())
    return list(graph.node) + [node for function in graph.library.function for node in function.node_def], graph


def caches_and_shuffle_buffers(ds):
    nodes, graph = graph_nodes(ds)
    consts = {node.name: node for node in graph.node if node.op == "Const"}
    caches = [node.op for node in nodes if node.op.startswith("CacheDataset")]
    buffers = []
    for node in nodes:
        if node.op.startswith("ShuffleDataset"):
            const = consts[node.input[1].split(":")[0]]  # input 1: buffer_size
            buffers.append(int(tf.make_ndarray(const.attr["value"].tensor)))
    return caches, buffers


# --------------------------------------------------------------------------- round trip


def test_write_names_the_shards(written):
    train, test, _, _ = written("raw")
    assert [p.rsplit("/", 1)[1] for p in train] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert len(test) == 2 and all(p.endswith(".tfrecord") for p in test)


@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_round_trip_every_example_once(written, image_format):
    train, test, x, y = written(image_format)
    data = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=128, count=True)
    assert (data.source, data.name, data.input_shape, data.num_classes) == ("tfrecord", "tfrecord", (8, 8, 1), 10)
    assert (data.num_train, data.num_test) == (N_TRAIN, len(y) - N_TRAIN)
    assert data.class_names == [str(i) for i in range(10)]
    images, labels = next(iter(data.train))
    assert (images.shape, images.dtype, labels.shape, labels.dtype) == ((128, 8, 8, 1), tf.float32, (128,), tf.int32)

    expected_train = (x[:N_TRAIN, ..., None].astype("float32") * np.float32(1 / 255), y[:N_TRAIN])
    x_train, y_train = epoch(data.train)
    np.testing.assert_array_equal(rows(x_train, y_train), rows(*expected_train))  # each pair exactly once

    x_test, y_test = data.numpy("test")  # file order, = the test pipeline
    assert x_test.dtype == np.float32 and y_test.dtype == np.int32
    np.testing.assert_allclose(x_test[..., 0], x[N_TRAIN:] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_test, y[N_TRAIN:])
    np.testing.assert_array_equal(epoch(data.test)[0], x_test)
    assert x_test.min() == 0.0 and x_test.max() == 1.0
    np.testing.assert_array_equal(data.numpy("train")[1], y[:N_TRAIN])


def test_normalized_exactly_like_a_local_npz(shards, tmp_path):
    train, test, x, y = shards
    np.savez(tmp_path / "digits8.npz", x_train=x[:N_TRAIN], y_train=y[:N_TRAIN], x_test=x[N_TRAIN:], y_test=y[N_TRAIN:])
    arrays = datasets.load("digits8", batch_size=128, data_dir=tmp_path)
    streamed = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=128)
    for split in ("train", "test"):
        np.testing.assert_array_equal(streamed.numpy(split)[0], arrays.numpy(split)[0])
        np.testing.assert_array_equal(streamed.numpy(split)[1], arrays.numpy(split)[1])
    np.testing.assert_array_equal(rows(*epoch(streamed.train)), rows(*epoch(arrays.train)))


def test_other_feature_names_and_records_without_format(tmp_path):
    def example(image, label):
        feature = {
            "img": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])),
            "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    path = str(tmp_path / "other.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for i, image in enumerate(images):
            writer.write(example(image, i % 2))
    with pytest.raises(ValueError, match="image_key='image'") as error:
        datasets.from_tfrecords(path, path, (4, 4, 3), 2)
    assert "'img': 'bytes_list'" in str(error.value)  # says which features the records have
    data = datasets.from_tfrecords(path, path, (4, 4, 3), 2, image_key="img", label_key="y", batch_size=4)
    x, y = data.numpy("test")  # no `format` feature: "auto" decodes the bytes as an image file
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, np.arange(6) % 2)

    with tf.io.TFRecordWriter(path) as writer:  # the first image fits, a later one is larger
        writer.write(example(images[0], 0))
        writer.write(example(np.zeros((5, 4, 3), np.uint8), 1))
    data = datasets.from_tfrecords(path, path, (4, 4, 3), 2, image_key="img", label_key="y")
    with pytest.raises(tf.errors.InvalidArgumentError, match="height and width differ from input_shape"):
        data.numpy("test")


def test_colour_non_square_images_and_chunked_memmap(tmp_path):
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(23, 5, 7, 3))
    x[:] = rng.integers(0, 256, x.shape, dtype=np.uint8)
    y = (np.arange(23) % 4).reshape(-1, 1)
    for image_format in ("png", "raw"):
        paths = datasets.write_tfrecords(
            x, y, tmp_path / image_format / "all", num_shards=2, image_format=image_format, chunk_size=4
        )
        data = datasets.from_tfrecords(paths, paths[:1], (5, 7, 3), 4, batch_size=5, name="toy")
        x_all, y_all = data.numpy("train")
        np.testing.assert_allclose(x_all, x / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y_all, y[:, 0])
        assert (data.num_train, data.num_test) == (-1, -1)  # not counted unless count=True
        assert len(epoch(data.train)[1]) == 23
    assert datasets.write_tfrecords(x[:3], y[:3], tmp_path / "one")[0].endswith("one-00000-of-00001.tfrecord")


def test_augment_shifts_the_streamed_images(shards):
    train, test, _, _ = shards
    plain = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=300, seed=4)
    augmented = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=300, seed=4, augment=True)
    (x_plain, y_plain), (x_aug, y_aug) = epoch(plain.train), epoch(augmented.train)
    np.testing.assert_array_equal(y_aug, y_plain)  # same order: augmentation only moves pixels
    assert not np.array_equal(x_aug, x_plain)
    moved = [not np.array_equal(a, p) for a, p in zip(x_aug, x_plain)]
    assert 0.3 < np.mean(moved) < 1.0  # most images shifted, those drawn (0, 0) left alone
    np.testing.assert_array_equal(epoch(augmented.test)[0], epoch(plain.test)[0])  # test never augmented


# --------------------------------------------------------------------------- memory: no cache, bounded buffer


def test_tfrecord_pipelines_have_no_cache_and_a_bounded_shuffle_buffer(shards, monkeypatch):
    train, test, _, _ = shards
    data = datasets.from_tfrecords(train, test, (8, 8, 1), 10, shuffle_buffer=64)
    caches, buffers = caches_and_shuffle_buffers(data.train)
    assert caches == []
    assert sorted(buffers) == [3, 64]  # the 3 file names, then 64 records (of 900)
    assert caches_and_shuffle_buffers(data.test) == ([], [])

    monkeypatch.setattr(tfrecord, "MEMORY_BUDGET", 100 * 64)  # 100 images of 8x8x1 bytes
    default = datasets.from_tfrecords(train, test, (8, 8, 1), 10)
    assert max(caches_and_shuffle_buffers(default.train)[1]) == 100


def test_tfds_split_over_the_budget_is_streamed(monkeypatch):
    with tfds.testing.mock_data(num_examples=1100):
        cached = datasets.load("mnist", batch_size=256)
        monkeypatch.setattr(tfds_source, "MEMORY_BUDGET", 1)
        streamed = datasets.load("mnist", batch_size=256)
        labels = epoch(streamed.train)[1]
    assert caches_and_shuffle_buffers(cached.train)[0], "the check must see the cache of a small split"
    assert caches_and_shuffle_buffers(cached.train)[1] == [1100]  # the whole split fits the default budget
    caches, buffers = caches_and_shuffle_buffers(streamed.train)
    assert caches == [] and caches_and_shuffle_buffers(streamed.test)[0] == []
    assert buffers == [1024]  # max(1024, budget // image bytes), below the 1100 examples
    assert len(labels) == 1100


def test_tfds_stream_true_never_caches():
    with tfds.testing.mock_data(num_examples=12):
        data = datasets.load("mnist", batch_size=5, stream=True)
        x, _ = next(iter(data.train))
    assert caches_and_shuffle_buffers(data.train)[0] == [] and caches_and_shuffle_buffers(data.test)[0] == []
    assert x.shape == (5, 28, 28, 1) and data.num_train == 12


# --------------------------------------------------------------------------- order


def test_reshuffled_epochs_differ_but_are_reproducible(shards):
    train, test, _, _ = shards
    first, second = (
        datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=100, seed=7, augment=True, shuffle_buffer=200)
        for _ in range(2)
    )
    x_1, y_1 = epoch(first.train)
    x_again, y_again = epoch(second.train)
    np.testing.assert_array_equal(y_again, y_1)  # same seed: same order and augmentation
    np.testing.assert_array_equal(x_again, x_1)
    assert not np.array_equal(epoch(first.train)[1], y_1)  # the next epoch: another order
    other = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=100, seed=8, shuffle_buffer=200)
    assert not np.array_equal(epoch(other.train)[1], y_1)


# --------------------------------------------------------------------------- multi-worker sharding


def test_train_and_test_are_sharded_by_file(shards):
    distribute = pytest.importorskip("tensorflow.python.data.experimental.ops.distribute")
    auto_shard = getattr(distribute, "_AutoShardDataset", None)
    assert auto_shard is not None, "TensorFlow 2.21 has _AutoShardDataset, the rewrite strategies apply"
    train, test, x, y = shards
    data = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=50)
    file_policy = tf.data.experimental.AutoShardPolicy.FILE
    assert data.train.options().experimental_distribute.auto_shard_policy == file_policy
    scaled = x[:N_TRAIN, ..., None].astype("float32") * np.float32(1 / 255)
    per_file = [rows(scaled[start : start + 300], y[start : start + 300]) for start in (0, 300, 600)]
    got = [rows(*epoch(auto_shard(data.train, 3, worker))) for worker in range(3)]
    matches = [[i for i, expected in enumerate(per_file) if np.array_equal(table, expected)] for table in got]
    # each worker reads exactly one whole file, and each file is read by one worker
    assert sorted(i for found in matches for i in found) == [0, 1, 2], matches
    halves = [epoch(auto_shard(data.test, 2, worker))[1] for worker in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), y[N_TRAIN:])  # one test file each, in order

    single = datasets.from_tfrecords(train[:1], test[:1], (8, 8, 1), 10)
    assert single.train.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA


# --------------------------------------------------------------------------- errors


def test_pattern_that_matches_nothing(shards, tmp_path):
    train, _, _, _ = shards
    with pytest.raises(FileNotFoundError) as error:
        datasets.from_tfrecords(train, str(tmp_path / "test-*.tfrecord"), (8, 8, 1), 10)
    assert "test_files" in str(error.value) and "test-*.tfrecord" in str(error.value) and "empty" in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.from_tfrecords(str(tmp_path / "nowhere" / "*"), train, (8, 8, 1), 10)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((28, 28, 1), r"input_shape=\(28, 28, 1\)"),
        ((8, 8, 3), r"input_shape=\(8, 8, 3\)"),
        ((8, 8), "three positive integers"),
    ],
)
def test_wrong_shape_is_reported_before_training(shards, shape, match):
    train, test, _, _ = shards
    with pytest.raises(ValueError, match=match):
        datasets.from_tfrecords(train, test, shape, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "`batch_size` must be a positive integer. Received: batch_size=0"),
        ({"seed": -1}, "seed"),
        ({"num_classes": 0}, "`num_classes` must be a positive integer. Received: num_classes=0"),
        ({"class_names": ["a", "b"]}, "`class_names` must list num_classes = 10 names"),
        ({"shuffle_buffer": 0}, "`shuffle_buffer` must be a positive integer or None. Received: shuffle_buffer=0"),
        ({"image_format": "gif"}, "`image_format` must be 'auto', 'encoded' or 'raw'. Received: image_format='gif'"),
        ({"image_key": "pixels"}, "image_key='pixels'"),
        ({"train_files": []}, "`train_files` must name at least one file. Received: train_files="),
        ({"train_files": 3}, "`train_files` must be a path, a glob pattern or a list of them. Received: train_files=3"),
    ],
)
def test_bad_arguments(shards, kwargs, match):
    train, test, _, _ = shards
    arguments = {"train_files": train, "test_files": test, "input_shape": (8, 8, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        datasets.from_tfrecords(**arguments)


def test_wrong_format_and_labels_out_of_range(tmp_path, digits_uint8):
    x, y = digits_uint8
    raw = datasets.write_tfrecords(x[:20], y[:20], tmp_path / "raw", image_format="raw")
    with pytest.raises(ValueError, match="not a PNG, JPEG, GIF or BMP file"):
        datasets.from_tfrecords(raw, raw, (8, 8, 1), 10, image_format="encoded")
    data = datasets.from_tfrecords(raw, raw, (8, 8, 1), 5)  # labels go up to 9
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=5"):
        epoch(data.test)
    (tmp_path / "bad.tfrecord").write_bytes(b"not a record file")
    with pytest.raises(ValueError, match="not a readable TFRecord file"):
        datasets.from_tfrecords(str(tmp_path / "bad.tfrecord"), raw, (8, 8, 1), 10)


@pytest.mark.parametrize(
    "images, labels, kwargs, match",
    [
        (np.zeros((4, 8, 8), np.float32), np.zeros(4, int), {}, "`images` must be uint8.*images.dtype='float32'"),
        (np.zeros((4, 8), np.uint8), np.zeros(4, int), {}, r"\(N, H, W\) or \(N, H, W, C\)"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(3, int), {}, r"N = 4 images. Received: labels.shape=\(3,\)"),
        (np.zeros((4, 8, 8), np.uint8), np.full(4, 0.5), {}, "`labels` must be integers. Received: labels.dtype="),
        (np.zeros((4, 8, 8), np.uint8), np.full(4, -1), {}, "`labels` must be >= 0. Received: min"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), {"num_shards": 5}, "from 1 to the number of images"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros(4, int), {"image_format": "webp"}, "`image_format` must be one of"),
        (np.zeros((4, 8, 8, 2), np.uint8), np.zeros(4, int), {}, "use image_format='raw'"),
    ],
)
def test_write_rejects_bad_input(tmp_path, images, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.write_tfrecords(images, labels, tmp_path / "x", **kwargs)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- distillation on the stream


def test_distiller_fits_on_the_streamed_pipeline(shards):
    train, test, _, _ = shards
    data = datasets.from_tfrecords(train, test, (8, 8, 1), 10, batch_size=128, augment=True)

    def model(hidden, name):
        inputs = keras.Input(data.input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
        return keras.Model(inputs, keras.layers.Dense(data.num_classes, name="logits")(x), name=name)

    distiller = keras_kd.Distiller(
        model(32, "teacher"), model(8, "student"), [keras_kd.Term(KDLoss(), weight=0.9)], student_loss_weight=0.1
    )
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(data.train, validation_data=data.test, epochs=1, verbose=0)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert "val_loss" in history.history
