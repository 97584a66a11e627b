"""The reference model zoo: published sizes, feature-layer convention,
serialization, input validation, and use inside a Distiller."""

import math

import keras
import numpy as np
import pytest

from keras_kd import models, recipes
from keras_kd.models._layers import ChannelShuffle, ChannelSplit, StochasticDepth
from tests.conftest import sparse_ce

CIFAR = ((32, 32, 3), 100)
MNIST = ((28, 28, 1), 10)
DIGITS = ((8, 8, 1), 10)
TEXT = ((16,), 2)

# Trainable parameters (PyTorch counts BN moving statistics as buffers) on
# CIFAR-100, as published in Tian et al., "Contrastive Representation
# Distillation", ICLR 2020 (millions).
PUBLISHED_CIFAR100 = {
    "resnet8": 0.08,
    "resnet20": 0.28,
    "resnet32": 0.47,
    "resnet56": 0.86,
    "resnet110": 1.73,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "wrn_40_2": 2.26,
    "mobilenetv2": 0.81,
    "shufflenetv1": 0.95,
    "shufflenetv2": 1.35,
}


def natural_input(name):
    if name == "bilstm":
        return TEXT
    if name.startswith(("hinton", "mlp", "mimic")):
        return MNIST
    if name.startswith("cnn"):
        return DIGITS
    return CIFAR


_BUILT = {}


def built(name):
    """The zoo model on its natural input, built once per test session."""
    if name not in _BUILT:
        _BUILT[name] = models.get(name, *natural_input(name))
    return _BUILT[name]


def random_batch(model, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch, *model.input_shape[1:])
    if model.inputs[0].dtype.startswith("int"):
        return rng.integers(0, 100, size=shape).astype("int32")
    return rng.random(shape, dtype="float32")


def trainable_count(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def test_names_and_descriptions():
    names = models.names()
    assert names == sorted(names)
    assert set(PUBLISHED_CIFAR100) | {"hinton_teacher", "hinton_student", "bilstm"} <= set(names)
    for name in names:
        line = models.describe(name)
        assert line.startswith(f"{name}: ") and "\n" not in line
    assert "0.47M" in models.describe("resnet32")
    assert set(models.__all__) == {"describe", "feature_layers", "get", "names", "with_input_normalization"}


@pytest.mark.parametrize("name", sorted(PUBLISHED_CIFAR100))
def test_cifar100_parameter_counts_match_the_published_ones(name):
    measured = trainable_count(built(name)) / 1e6
    assert measured == pytest.approx(PUBLISHED_CIFAR100[name], rel=0.05)


@pytest.mark.parametrize("name, count", [("hinton_teacher", 2_395_210), ("hinton_student", 1_276_810)])
def test_hinton_mlps_have_the_papers_exact_sizes(name, count):
    model = built(name)
    assert model.count_params() == trainable_count(model) == count


def test_mimic_student_shape_and_parameter_count_follow_the_formula():
    d, k, hidden, classes = 8 * 8 * 1, 12, 96, 10
    model = models.get("mimic", (8, 8, 1), classes, hidden_units=hidden, bottleneck=k)
    assert tuple(model(random_batch(model, batch=3)).shape) == (3, classes)
    assert (
        model.count_params() == trainable_count(model) == d * k + (k * hidden + hidden) + (hidden * classes + classes)
    )
    wide = models.get("mimic", (8, 8, 1), classes, hidden_units=hidden, bottleneck=None)
    assert "bottleneck" not in [layer.name for layer in wide.layers]
    assert wide.count_params() == (d * hidden + hidden) + (hidden * classes + classes)
    # The zoo entry's defaults (k=250, H=2000) on MNIST, as its description says.
    assert built("mimic").count_params() == 784 * 250 + (250 * 2000 + 2000) + (2000 * 10 + 10) == 718_010
    assert "718,010" in models.describe("mimic") and "Ba & Caruana 2014" in models.describe("mimic")


def test_mimic_bottleneck_is_linear_and_the_factored_weight_is_low_rank():
    k = 5
    model = models.get("mimic", (8, 8, 1), 10, hidden_units=40, bottleneck=k)
    bottleneck, wide = model.get_layer("bottleneck"), model.get_layer("stage1_preact")
    assert bottleneck.get_config()["activation"] == "linear" and not bottleneck.use_bias
    assert wide.get_config()["activation"] == "linear"  # the ReLU is the separate `stage1` layer
    assert isinstance(model.get_layer("stage1"), keras.layers.ReLU)
    u, v = np.asarray(bottleneck.kernel), np.asarray(wide.kernel)
    assert u.shape == (64, k) and v.shape == (k, 40)
    assert np.linalg.matrix_rank(u @ v) <= k < min(64, 40)
    # The two linear layers compute exactly the factored layer x @ (U V) + b.
    x = random_batch(model, batch=4)
    flat = x.reshape(4, -1)
    probe = keras.Model(model.input, wide.output)
    np.testing.assert_allclose(probe(x), flat @ (u @ v) + np.asarray(wide.bias), rtol=1e-4, atol=1e-5)
    assert models.feature_layers(model) == {"stages": ["stage1"], "preact": ["stage1_preact"], "embedding": "stage1"}


def test_bilstm_parameter_count_follows_the_formula():
    vocab, dim, units, hidden, classes = 1000, 32, 24, 40, 3
    model = models.get("bilstm", (20,), classes, vocab_size=vocab, embedding_dim=dim, units=units, hidden=hidden)
    lstm = 4 * (units * (dim + units) + units)  # one direction, one bias per gate
    expected = vocab * dim + 2 * lstm + (2 * units * hidden + hidden) + (hidden * classes + classes)
    assert model.count_params() == expected
    assert trainable_count(built("bilstm")) == 30000 * 300 + 2 * 4 * (300 * 600 + 300) + (600 * 400 + 400) + 802


@pytest.mark.parametrize("name", models.names())
def test_every_model_gives_logits_and_conventional_feature_layers(name):
    model = built(name)
    input_shape, classes = natural_input(name)
    assert isinstance(model, keras.Model) and model.built and model.name == name
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].get_config().get("activation") == "linear"
    logits = model(random_batch(model), training=False)
    assert tuple(logits.shape) == (2, classes)
    assert np.all(np.isfinite(np.asarray(logits)))

    features = models.feature_layers(model)
    stages, preact = features["stages"], features["preact"]
    assert stages == [f"stage{i}" for i in range(1, len(stages) + 1)] and stages
    assert features["embedding"] in {"embedding", stages[-1]}
    order = [layer.name for layer in model.layers]
    positions = [order.index(stage) for stage in stages]
    assert positions == sorted(positions)  # increasing depth
    shapes = [tuple(model.get_layer(stage).output.shape) for stage in stages]
    if len(input_shape) == 3 and len(shapes[0]) == 4:
        sizes = [shape[1] * shape[2] for shape in shapes]
        assert sizes == sorted(sizes, reverse=True)  # non-increasing spatial size
    if preact:
        assert preact == [f"{stage}_preact" for stage in stages]
        for stage, pre in zip(stages, preact):
            assert model.get_layer(pre).output.shape == model.get_layer(stage).output.shape


@pytest.mark.parametrize("input_shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize("name", ["cnn_large", "cnn_small", "cnn_tiny", "mlp_tiny"])
def test_small_models_build_on_digits_mnist_and_cifar(name, input_shape):
    model = models.get(name, input_shape, 10)
    assert tuple(model(random_batch(model)).shape) == (2, 10)
    stages = models.feature_layers(model)["stages"]
    assert min(math.prod(model.get_layer(s).output.shape[1:-1]) for s in stages) >= 1


def test_feature_layers_reads_names_of_user_models():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="stage2")(inputs)
    x = keras.layers.Dense(4, name="stage10")(x)
    x = keras.layers.Dense(4, name="stage1")(x)  # numbered order, not position
    x = keras.layers.Dense(4, name="stage1_preact")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs)
    assert models.feature_layers(model) == {
        "stages": ["stage1", "stage2", "stage10"],
        "preact": [],  # not every stage has one: nothing to pair
        "embedding": "stage10",
    }
    bare = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert models.feature_layers(bare) == {"stages": [], "preact": [], "embedding": None}


def test_kwargs_override_the_entry():
    model = models.get("hinton_teacher", (784,), 10, dropout=0.5, name="teacher")
    assert model.name == "teacher" and model.count_params() == 2_395_210
    assert model.get_layer("stage1_dropout").rate == 0.5
    assert "stage1_dropout" not in [layer.name for layer in built("hinton_student").layers]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("shufflenetv2", {}),
        ("shufflenetv1", {"blocks": (2, 2, 2)}),  # same layers, fewer of them
        ("bilstm", {"vocab_size": 1000}),  # masking
    ],
)
def test_round_trip_through_keras_files(name, kwargs, tmp_path):
    model = built(name) if not kwargs else models.get(name, *natural_input(name), **kwargs)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = random_batch(model, batch=3)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), rtol=1e-5, atol=1e-5)
    assert models.feature_layers(loaded) == models.feature_layers(model)


def test_channel_shuffle_matches_the_reference_permutation():
    # PyTorch: x.view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4) for C=6, g=2.
    x = np.broadcast_to(np.arange(6, dtype="float32"), (1, 2, 2, 6))
    out = np.asarray(ChannelShuffle(2)(x))
    np.testing.assert_array_equal(out[0, 0, 0], [0, 3, 1, 4, 2, 5])
    head, tail = ChannelSplit(0.5)(x)
    assert head.shape[-1] == tail.shape[-1] == 3
    with pytest.raises(ValueError, match="divisible"):
        ChannelShuffle(4)(x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: models.get("resnet9000", (32, 32, 3), 10), r"Unknown model 'resnet9000'. Available models: \["),
        (lambda: models.describe("vgg"), "Unknown model 'vgg'"),
        (lambda: models.get("resnet8", (32, 32), 10), r"input_shape=\(32, 32\)"),
        (lambda: models.get("resnet8", (32, 0, 3), 10), r"\(H, W, C\).*input_shape=\(32, 0, 3\)"),
        (lambda: models.get("cnn_tiny", (8.0, 8, 1), 10), r"positive int.*input_shape=\(8.0, 8, 1\)"),
        (lambda: models.get("cnn_tiny", 8, 10), "input_shape=8"),
        (lambda: models.get("bilstm", (8, 8, 1), 2), r"\(length,\).*input_shape=\(8, 8, 1\)"),
        (lambda: models.get("mlp_tiny", (8, 8), 2), r"\(length,\) or \(H, W, C\).*input_shape=\(8, 8\)"),
        (lambda: models.get("mlp_tiny", (8, 8, 1), 1), r"int >= 2.*num_classes=1"),
        (lambda: models.get("mlp_tiny", (8, 8, 1), 2.5), "num_classes=2.5"),
        (lambda: models.get("mlp_tiny", (8, 8, 1), True), "num_classes=True"),
        (lambda: models.get("resnet8", (32, 32, 3), 10, depth=9), "depth=9"),
        (lambda: models.get("wrn_16_1", (32, 32, 3), 10, depth=15), "depth=15"),
        (lambda: models.get("resnet8", (8, 8, 1), 10, dropout=1.0), r"\[0, 1\).*dropout=1.0"),
        (lambda: models.get("resnet8", (8, 8, 1), 10, stochastic_depth=-0.1), "stochastic_depth=-0.1"),
        (lambda: StochasticDepth(1.0), "rate=1.0"),
        (lambda: models.get("mimic", (8, 8, 1), 10), r"bottleneck=250, hidden_units=2000, input size 64"),
        (lambda: models.get("mimic", (784,), 10, hidden_units=100, bottleneck=100), "bottleneck=100"),
        (lambda: models.get("mimic", (784,), 10, bottleneck=0), r"`bottleneck` must be a positive.*bottleneck=0"),
        (lambda: models.get("mimic", (784,), 10, bottleneck=2.5), "bottleneck=2.5"),
        (lambda: models.get("mimic", (784,), 10, hidden_units=True), "hidden_units=True"),
        (lambda: models.get("mimic", (784,), 10, hidden_units=-3), "hidden_units=-3"),
        (lambda: models.get("mimic", (8, 8), 10), r"\(length,\) or \(H, W, C\)"),
    ],
)
def test_bad_requests_name_the_bad_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "method, teacher_name, student_name, key",
    [
        ("at", "cnn_small", "cnn_tiny", "stages"),  # attention maps need (B, H, W, C) features
        ("fitnet", "mlp_small", "mlp_tiny", "stages"),
        ("sp", "cnn_small", "mlp_tiny", "embedding"),
    ],
)
def test_zoo_models_train_in_a_recipe_distiller(method, teacher_name, student_name, key, digits):
    x, y = digits
    images, labels = x.reshape(-1, 8, 8, 1)[:64], y[:64]
    teacher = models.get(teacher_name, (8, 8, 1), 10, name="teacher")
    student = models.get(student_name, (8, 8, 1), 10, name="student")
    teacher_layers = models.feature_layers(teacher)[key]
    student_layers = models.feature_layers(student)[key]
    assert teacher_layers and student_layers
    distiller = recipes.distiller(method, teacher, student, teacher_layers, student_layers)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    before = [np.array(w) for w in student.trainable_weights]
    history = distiller.fit(images, labels, epochs=1, batch_size=32, verbose=0)
    assert all(math.isfinite(values[-1]) for values in history.history.values())
    assert any(not np.array_equal(b, np.array(w)) for b, w in zip(before, student.trainable_weights))


def test_stochastic_depth_drops_whole_examples_at_the_rate_and_keeps_the_expectation():
    rate, batch = 0.3, 4000
    layer = StochasticDepth(rate, seed=1)
    x = np.random.default_rng(0).random((batch, 2, 2, 3), dtype="float32") + 0.5
    np.testing.assert_array_equal(np.asarray(layer(x)), x)  # inference: the identity
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    kept = np.all(np.isclose(out, x / (1 - rate)), axis=(1, 2, 3))
    dropped = np.all(out == 0, axis=(1, 2, 3))
    assert np.all(kept | dropped)  # per example: all features kept (rescaled) or all zeroed
    assert abs(dropped.mean() - rate) < 0.03  # 4000 draws: 3 standard deviations is 0.022
    np.testing.assert_allclose(out.mean(0), x.mean(0), rtol=0.1)  # E[out] = x
    restored = StochasticDepth.from_config(layer.get_config())
    assert restored.rate == rate and restored.seed == 1
    assert np.array_equal(np.asarray(StochasticDepth(0.0)(x, training=True)), x)


def test_resnet_noise_options_default_off_and_add_linear_stochastic_depth(tmp_path):
    plain, noisy = models.get("resnet14", *DIGITS), models.get("resnet14", *DIGITS, dropout=0.5, stochastic_depth=0.2)
    names = [layer.name for layer in plain.layers]
    assert "dropout" not in names and not any("drop_path" in name for name in names)
    assert noisy.count_params() == plain.count_params() and trainable_count(noisy) == trainable_count(plain)
    noisy_names = {layer.name for layer in noisy.layers}
    assert set(names) <= noisy_names
    assert noisy_names - set(names) == {"dropout"} | {layer.name for layer in noisy.layers if "drop_path" in layer.name}
    assert noisy.get_layer("dropout").rate == 0.5
    assert noisy.layers[-2].name == "dropout" and noisy.layers[-3].name == "embedding"
    # 6 blocks (resnet14: 2 per stage): block i drops its residual branch with rate 0.2 * i / 6.
    drop = [layer for layer in noisy.layers if isinstance(layer, StochasticDepth)]
    assert [layer.name for layer in drop] == [f"stage{s}_block{b}_drop_path" for s in (1, 2, 3) for b in (1, 2)]
    np.testing.assert_allclose([layer.rate for layer in drop], [0.2 * i / 6 for i in range(1, 7)])
    assert models.feature_layers(noisy) == models.feature_layers(plain)
    for layer in plain.layers:  # the same weights, layer by layer (the extra layers change the layer order)
        noisy.get_layer(layer.name).set_weights(layer.get_weights())
    x = random_batch(plain, batch=8)
    np.testing.assert_allclose(noisy(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-6)
    path = tmp_path / "noisy.keras"
    noisy.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.rate for layer in loaded.layers if isinstance(layer, StochasticDepth)] == [
        layer.rate for layer in drop
    ]
    np.testing.assert_allclose(loaded(x, training=False), noisy(x, training=False), rtol=1e-5, atol=1e-6)


def test_input_normalization_in_front_of_a_zoo_model(tmp_path):
    """The fixed per-channel standardisation keeps the model's weights and layer names (feature layers and
    recipes work), adds nothing trainable, and saves; the model still takes [0, 1] images."""
    mean, std = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
    keras.utils.set_random_seed(0)
    model = models.get("resnet8", (32, 32, 3), 10, name="student")
    normalized = models.with_input_normalization(model, mean, std)
    assert normalized.name == "student" and normalized.layers[1].name == "input_normalization"
    assert models.feature_layers(normalized) == models.feature_layers(model)
    assert len(normalized.trainable_weights) == len(model.trainable_weights)
    assert normalized.count_params() == model.count_params()
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    standardized = ((x - np.array(mean)) / np.array(std)).astype("float32")
    want = model.predict(standardized, verbose=0)
    np.testing.assert_allclose(normalized.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5)
    recipes.distiller("at", normalized, models.with_input_normalization(models.get("resnet8", *CIFAR), mean, std))
    normalized.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="std finite and > 0"):
        models.with_input_normalization(model, mean, (0.2, 0.0, 0.3))
