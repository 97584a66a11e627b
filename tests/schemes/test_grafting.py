import math

import keras
import numpy as np
import pytest

from keras_kd.schemes.grafting import FilterGrafting, GraftingTrainer, grafting_coefficient, weight_entropy
from tests.conftest import cnn, mlp, sparse_ce


def numpy_entropy(values, bins=10):
    counts, _ = np.histogram(np.asarray(values, dtype="float64").reshape(-1), bins=bins)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def numpy_alpha(h_self, h_other, a=0.4, c=500.0, rounding=2):
    alpha = a / np.pi * np.arctan(c * (h_self - h_other)) + 0.5
    return alpha if rounding is None else round(alpha, rounding)


def seeded(make, seed):
    keras.utils.set_random_seed(seed)
    return make()


def peers(count=2, channels=2):
    return [seeded(lambda: cnn(channels, f"peer{k}"), 10 * k) for k in range(1, count + 1)]


def images(digits, n):
    x, y = digits
    return x[:n].reshape(-1, 8, 8, 1), y[:n]


def kernels(model):
    return [layer.kernel.numpy() for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


@pytest.mark.parametrize(
    "values, bins",
    [
        (np.random.default_rng(0).normal(size=(3, 3, 2, 4)), 10),
        (np.random.default_rng(1).normal(size=500), 10),
        (np.random.default_rng(2).uniform(-1, 1, size=(7, 11)), 4),
        (np.random.default_rng(3).exponential(size=300), 25),
    ],
)
def test_entropy_matches_a_float64_histogram(values, bins):
    got = weight_entropy(keras.ops.convert_to_tensor(values, "float32"), bins=bins)
    assert keras.backend.standardize_dtype(got.dtype) == "float32" and tuple(got.shape) == ()
    np.testing.assert_allclose(float(got), numpy_entropy(values.astype("float32"), bins), rtol=1e-5)


def test_entropy_extremes():
    assert float(weight_entropy(np.full((3, 3, 4), 0.7, "float32"))) == 0.0
    np.testing.assert_allclose(float(weight_entropy(np.arange(20.0))), math.log(10), rtol=1e-6)  # 2 per bin
    np.testing.assert_allclose(float(weight_entropy(np.arange(7.0), bins=7)), math.log(7), rtol=1e-6)
    # Half the values at the minimum, half at the maximum (which falls in the last bin).
    np.testing.assert_allclose(float(weight_entropy(np.array([-1.0, -1.0, 3.0, 3.0]))), math.log(2), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one value"):
        weight_entropy(np.zeros((3, 0)))
    variable = keras.Variable(np.random.default_rng(4).normal(size=(5, 5)).astype("float32"))
    np.testing.assert_allclose(float(weight_entropy(variable)), numpy_entropy(variable.numpy()), rtol=1e-5)


def test_coefficient_follows_the_arctan_formula():
    assert float(grafting_coefficient(1.3, 1.3)) == 0.5
    differences = np.array([-1.0, -0.01, -1e-3, -1e-5, 1e-5, 1e-3, 0.01, 1.0], "float32")
    for a, c in [(0.4, 500.0), (0.8, 20.0)]:
        alpha = keras.ops.convert_to_numpy(grafting_coefficient(differences, np.zeros_like(differences), a=a, c=c))
        assert alpha.dtype == np.float32
        np.testing.assert_allclose(alpha, numpy_alpha(differences.astype("float64"), 0.0, a, c, None), rtol=1e-6)
        assert np.all((alpha > 0.5 - a / 2) & (alpha < 0.5 + a / 2))
        assert np.all(alpha[differences > 0] > 0.5) and np.all(alpha[differences < 0] < 0.5)
        swapped = keras.ops.convert_to_numpy(grafting_coefficient(np.zeros_like(differences), differences, a=a, c=c))
        np.testing.assert_allclose(alpha + swapped, 1.0, rtol=1e-6)
    rounded = grafting_coefficient(2.0, 1.999, rounding=2)  # 0.4/pi * arctan(0.5) + 0.5 = 0.559...
    np.testing.assert_allclose(float(rounded), 0.56, rtol=1e-6)


def test_one_round_equals_the_formula_by_hand_for_a_ring_of_three():
    models = peers(3)
    before = [kernels(model) for model in models]
    callback = FilterGrafting(models)
    logs = {}
    callback.on_epoch_end(0, logs)
    for k in range(3):
        source = (k - 1) % 3  # peer 1 receives from peer 3, peer 2 from peer 1 (before its update), ...
        alphas = []
        for u, v, got in zip(before[k], before[source], kernels(models[k])):
            alpha = numpy_alpha(numpy_entropy(u), numpy_entropy(v))
            alphas.append(alpha)
            np.testing.assert_allclose(got, alpha * u + (1 - alpha) * v, rtol=1e-5, atol=1e-7)
        assert len(alphas) == 2 and all(0.3 <= alpha <= 0.7 for alpha in alphas)
        np.testing.assert_allclose(logs[f"graft_coef_peer{k + 1}"], np.mean(alphas), rtol=1e-5)
    assert not np.allclose(kernels(models[0])[0], before[0][0])


def test_identical_peers_are_left_unchanged():
    first = cnn(2, "first")
    second = keras.models.clone_model(first)
    second.set_weights(first.get_weights())
    expected = first.get_weights()
    alphas = FilterGrafting([first, second]).graft()
    assert alphas == [[0.5, 0.5], [0.5, 0.5]]
    for model in (first, second):
        for got, value in zip(model.get_weights(), expected):
            np.testing.assert_array_equal(got, value)


def mixed(name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.SeparableConv2D(4, 2, name="separable")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


@pytest.mark.parametrize("include_dense", [False, True])
def test_only_convolution_kernels_are_grafted_by_default(include_dense):
    models = [seeded(lambda: mixed("a"), 1), seeded(lambda: mixed("b"), 2)]
    for model in models:  # non-trivial BatchNorm statistics and biases, different in each peer
        for weight in model.weights:
            if "kernel" not in weight.path:
                weight.assign(np.random.default_rng(len(weight.path)).uniform(0.5, 2, weight.shape))
    before = {w.path: w.numpy() for w in models[0].weights}
    alphas = FilterGrafting(models, include_dense=include_dense).graft()
    grafted = {"conv/kernel", "depthwise/kernel", "separable/depthwise_kernel", "separable/pointwise_kernel"}
    if include_dense:
        grafted.add("logits/kernel")
    assert len(alphas[0]) == len(grafted)
    for weight in models[0].weights:
        name = "/".join(weight.path.split("/")[-2:])
        if name in grafted:
            assert not np.allclose(weight.numpy(), before[weight.path]), name
        else:
            np.testing.assert_array_equal(weight.numpy(), before[weight.path], err_msg=name)


def test_trainer_trains_grafts_every_epoch_and_logs(digits):
    x, y = images(digits, 256)
    trainer = GraftingTrainer(peers(2, channels=4))
    trainer.compile(keras.optimizers.Adam(1e-2), sparse_ce(), metrics=["accuracy"], jit_compile=False)
    history = trainer.fit(x, y, epochs=3, batch_size=64, verbose=0, validation_data=(x[:64], y[:64])).history
    keys = {"loss", "accuracy"} | {f"peer{k}_{kind}" for k in (1, 2) for kind in ("loss", "accuracy")}
    assert keys | {f"val_{key}" for key in keys} | {"graft_coef_peer1", "graft_coef_peer2"} == set(history)
    for k in (1, 2):
        assert history[f"peer{k}_loss"][-1] < history[f"peer{k}_loss"][0]
        assert len(history[f"graft_coef_peer{k}"]) == 3
        assert all(0.3 <= alpha <= 0.7 for alpha in history[f"graft_coef_peer{k}"])
    np.testing.assert_allclose(history["loss"], np.add(history["peer1_loss"], history["peer2_loss"]), rtol=1e-5)
    logs = trainer.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(trainer.evaluate_peers(x, y), [logs["peer1_accuracy"], logs["peer2_accuracy"]])
    np.testing.assert_allclose(logs["peer1_accuracy"], logs["accuracy"])
    # The same network, compiled inside two models (XLA may fuse differently).
    np.testing.assert_allclose(
        trainer.predict(x[:8], verbose=0), trainer.peers[0].predict(x[:8], verbose=0), rtol=1e-6, atol=1e-7
    )


def test_grafting_runs_only_every_n_epochs():
    models = peers(2)
    callback = FilterGrafting(models, every=2)
    before = kernels(models[0])
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {} and all(np.array_equal(a, b) for a, b in zip(kernels(models[0]), before))
    callback.on_epoch_end(1, logs)
    assert set(logs) == {"graft_coef_peer1", "graft_coef_peer2"}
    assert not np.allclose(kernels(models[0])[0], before[0])


def test_without_grafting_each_peer_takes_its_own_step(digits):
    x, y = images(digits, 64)
    models = peers(2)
    alone = []
    for model in models:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.compile(keras.optimizers.SGD(0.5), sparse_ce())
        clone.train_on_batch(x, y)
        alone.append(clone)
    trainer = GraftingTrainer(models, graft=False)
    trainer.compile(keras.optimizers.SGD(0.5), sparse_ce())
    logs = trainer.fit(x, y, epochs=1, batch_size=64, verbose=0).history
    assert not any(key.startswith("graft_coef") for key in logs)
    for model, clone in zip(trainer.peers, alone):
        for got, expected in zip(model.get_weights(), clone.get_weights()):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


class SecondPeerMuted(GraftingTrainer):
    def compute_losses(self, y, sample_weight, logits):
        values, _ = super().compute_losses(y, sample_weight, logits)
        return values, values["peer1_loss"] + 0.0 * values["peer2_loss"]


def test_a_peer_gets_no_gradient_from_the_others_loss(digits):
    x, y = images(digits, 64)
    trainer = SecondPeerMuted(peers(2), graft=False)
    trainer.compile(keras.optimizers.SGD(0.5), sparse_ce())
    before = [[w.numpy() for w in peer.trainable_weights] for peer in trainer.peers]
    trainer.train_on_batch(x, y)
    for weight, value in zip(trainer.peers[0].trainable_weights, before[0]):
        if "conv" in weight.path and weight.path.endswith("/bias"):  # before BatchNorm: zero gradient but rounding
            continue
        assert not np.allclose(weight.numpy(), value), weight.path
    for weight, value in zip(trainer.peers[1].trainable_weights, before[1]):
        np.testing.assert_array_equal(weight.numpy(), value, err_msg=weight.path)


def test_a_callback_passed_to_fit_replaces_the_default(digits):
    x, y = images(digits, 64)
    trainer = GraftingTrainer(peers(2))
    trainer.compile(keras.optimizers.SGD(0.1), sparse_ce())
    history = trainer.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[FilterGrafting(every=2)]).history
    assert "graft_coef_peer1" not in history  # the user's callback (every 2 epochs) ran instead of the default
    history = trainer.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[FilterGrafting(c=5.0)]).history
    assert 0.3 < history["graft_coef_peer1"][0] < 0.7
    with pytest.raises(ValueError, match="needs the peer models"):
        FilterGrafting().graft()


def test_round_trips_through_keras_saving(digits, tmp_path):
    x, y = images(digits, 128)
    trainer = GraftingTrainer(peers(2), every=2, bins=8, a=0.3, c=100.0, rounding=None)
    trainer.compile("adam", sparse_ce(), metrics=["accuracy"], jit_compile=False)
    trainer.fit(x, y, epochs=1, batch_size=64, verbose=0)
    expected = trainer.evaluate(x, y, verbose=0, return_dict=True)
    trainer.save(tmp_path / "grafting.keras")
    restored = keras.saving.load_model(tmp_path / "grafting.keras")
    assert isinstance(restored, GraftingTrainer)
    assert restored.grafting.get_config() == trainer.grafting.get_config()
    assert [peer.name for peer in restored.peers] == ["peer1", "peer2"]
    got = restored.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
    callback = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(FilterGrafting(every=3)))
    assert isinstance(callback, FilterGrafting)
    assert callback.get_config() == FilterGrafting(every=3).get_config()


def _mismatched():
    return [cnn(2, "a"), cnn(3, "b")]


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda: [cnn(2, "a")], {}, "Filter grafting needs at least 2 peers"),
        (lambda: [cnn(2, "a")] * 2, {}, "Peers 1 and 2 are the same model"),
        (_mismatched, {}, r"Peer 2 \('b'\) differs from peer 1 \('a'\) at weight 0: '.*conv1/kernel' of shape"),
        (lambda: [mlp(8, "a"), mlp(8, "b")], {}, "no convolution .*include_dense=True"),
        (lambda: peers(2), {"a": 0.0}, "a=0.0"),
        (lambda: peers(2), {"a": 1.5}, "a=1.5"),
        (lambda: peers(2), {"c": -1}, "c=-1"),
        (lambda: peers(2), {"bins": 1}, "bins=1"),
        (lambda: peers(2), {"bins": 2.5}, "bins=2.5"),
        (lambda: peers(2), {"every": 0}, "every=0"),
        (lambda: peers(2), {"rounding": -1}, "rounding=-1"),
    ],
)
@pytest.mark.parametrize("cls", [GraftingTrainer, FilterGrafting])
def test_bad_arguments_raise(cls, make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(make(), **kwargs)


def test_fit_needs_labels(digits):
    x, _ = images(digits, 32)
    trainer = GraftingTrainer(peers(2))
    trainer.compile("sgd", sparse_ce())
    with pytest.raises(ValueError, match="the data has none"):
        trainer.fit(x, epochs=1, verbose=0)
