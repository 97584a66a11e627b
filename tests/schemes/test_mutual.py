import keras
import numpy as np
import pytest

from keras_kd.losses import KDLoss
from keras_kd.schemes.mutual import MutualLearning
from tests.conftest import mlp, sparse_ce


def peers(*widths):
    return [mlp(width, f"peer_{width}") for width in widths]


def test_one_step_changes_every_peer_and_logs_each(digits):
    x, y = digits
    mutual = MutualLearning(peers(16, 8, 12), temperature=2.0)
    mutual.compile(keras.optimizers.SGD(0.1), sparse_ce(), metrics=["accuracy"])
    before = [[w.numpy() for w in peer.trainable_weights] for peer in mutual.peers]
    logs = mutual.train_on_batch(x[:64], y[:64], return_dict=True)
    for peer, old in zip(mutual.peers, before):
        for weight, value in zip(peer.trainable_weights, old):
            assert not np.allclose(weight.numpy(), value), f"{peer.name}/{weight.path} did not change"
    expected = {"loss", "accuracy"} | {f"peer{k}_{kind}" for k in (1, 2, 3) for kind in ("loss", "kd_loss", "accuracy")}
    assert set(logs) == expected
    assert all(np.isfinite(value) for value in logs.values())


def test_without_mimicry_each_peer_takes_its_own_cross_entropy_step(digits):
    x, y = digits
    mutual_peers = peers(16, 8)
    alone = []
    for peer in mutual_peers:
        clone = keras.models.clone_model(peer)
        clone.set_weights(peer.get_weights())
        clone.compile(keras.optimizers.SGD(0.5), sparse_ce())
        clone.train_on_batch(x[:64], y[:64])
        alone.append(clone)
    mutual = MutualLearning(mutual_peers, temperature=3.0, kd_weight=0.0)
    mutual.compile(keras.optimizers.SGD(0.5), sparse_ce())
    mutual.train_on_batch(x[:64], y[:64])
    for peer, clone in zip(mutual.peers, alone):
        for got, expected in zip(peer.get_weights(), clone.get_weights()):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_each_peer_follows_the_gradient_of_its_own_loss_only(digits):
    """Peer 1's mimicry target (peer 2) is fixed, and peer 2's mimicry term
    sends nothing into peer 1: one SGD step moves peer 1 as a copy of it
    trained alone on `CE + 3 * KD(peer 2's logits, .)`, the target fixed."""
    x, y = digits
    x, y = x[:64], y[:64]
    mutual = MutualLearning(peers(16, 8), temperature=2.0, kd_weight=3.0)
    mutual.compile(keras.optimizers.SGD(1.0), sparse_ce())
    first, second = mutual.peers
    target = keras.ops.convert_to_numpy(second(x, training=True))  # BatchNorm on the batch, as in the step
    kd, ce = KDLoss(temperature=2.0), sparse_ce()

    def own_loss(packed, z):  # packed: the label, then peer 2's logits
        labels = keras.ops.cast(packed[:, 0], "int32")
        return ce(labels, z) + 3.0 * kd(packed[:, 1:], z)

    alone = keras.models.clone_model(first)
    alone.set_weights(first.get_weights())
    alone.compile(keras.optimizers.SGD(1.0), own_loss)
    alone.train_on_batch(x, np.concatenate([y[:, None].astype("float32"), target], axis=1))
    mutual.train_on_batch(x, y)
    for weight, expected in zip(first.trainable_weights, alone.trainable_weights):
        np.testing.assert_allclose(weight.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_logged_terms_match_a_hand_computation(digits):
    x, y = digits
    x, y = x[:50], y[:50]
    mutual = MutualLearning(peers(16, 8, 12), temperature=4.0, kd_weight=0.7)
    mutual.compile("sgd", sparse_ce())
    logs = mutual.evaluate(x, y, batch_size=50, verbose=0, return_dict=True)
    logits = [keras.ops.convert_to_numpy(peer(x, training=False)) for peer in mutual.peers]
    kd, ce = KDLoss(temperature=4.0), sparse_ce()
    total = 0.0
    for k, z_k in enumerate(logits, start=1):
        mimicry = np.mean([float(kd(z_j, z_k)) for j, z_j in enumerate(logits, start=1) if j != k])
        supervised = float(ce(y, z_k))
        np.testing.assert_allclose(logs[f"peer{k}_kd_loss"], mimicry, rtol=1e-5)
        np.testing.assert_allclose(logs[f"peer{k}_loss"], supervised, rtol=1e-5)
        total += supervised + 0.7 * mimicry
    np.testing.assert_allclose(logs["loss"], total, rtol=1e-5)
    accuracies = mutual.evaluate_peers(x, y)
    np.testing.assert_allclose([logs[f"peer{k}_accuracy"] for k in (1, 2, 3)], accuracies, rtol=1e-6)
    np.testing.assert_allclose(mutual.evaluate_peers(x, np.eye(10)[y]), accuracies)


def _unbuilt():
    return [keras.Sequential([keras.layers.Dense(10)]), mlp(8, "b")]


def _shared():
    shared = keras.layers.Dense(10, name="shared")
    models = []
    for name in ("a", "b"):
        inputs = keras.Input((64,))
        models.append(keras.Model(inputs, shared(inputs), name=name))
    return models


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda: [mlp(8, "a")], {}, "at least 2 peers"),
        (lambda: mlp(8, "a"), {}, "must be a list"),
        (lambda: [mlp(8, "a"), "b"], {}, "Peer 2 must be a keras.Model"),
        (lambda: [mlp(8, "a")] * 2, {}, "Peers 1 and 2 are the same model"),
        (_unbuilt, {}, "Peer 1 .* is not built"),
        (_shared, {}, "share the weight"),
        (lambda: [mlp(8, "a"), mlp(8, "b", classes=5)], {}, r"Peer 2 \('b'\) outputs shape \(5,\)"),
        (lambda: peers(8, 4), {"temperature": 0.0}, "temperature"),
        (lambda: peers(8, 4), {"kd_weight": -1.0}, "kd_weight"),
    ],
)
def test_bad_arguments_raise(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MutualLearning(make(), **kwargs)


def test_fit_needs_labels_and_a_loss(digits):
    x, y = digits
    mutual = MutualLearning(peers(8, 4))
    mutual.compile("sgd", sparse_ce())
    with pytest.raises(ValueError, match="the data has none"):
        mutual.fit(x[:32], epochs=1, verbose=0)
    mutual = MutualLearning(peers(8, 4))
    mutual.compile("sgd")
    with pytest.raises(ValueError, match="pass `loss=` to compile"):
        mutual.fit(x[:32], y[:32], epochs=1, verbose=0)


def test_round_trips_through_keras_saving(digits, tmp_path):
    x, y = digits
    mutual = MutualLearning(peers(16, 8), temperature=2.5, kd_weight=0.5)
    mutual.compile("adam", sparse_ce(), metrics=["accuracy"])
    mutual.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    expected = mutual.evaluate(x[:128], y[:128], verbose=0, return_dict=True)
    mutual.save(tmp_path / "mutual.keras")
    restored = keras.saving.load_model(tmp_path / "mutual.keras")
    assert isinstance(restored, MutualLearning)
    assert (restored.temperature, restored.kd_weight) == (2.5, 0.5)
    assert [peer.name for peer in restored.peers] == ["peer_16", "peer_8"]
    got = restored.evaluate(x[:128], y[:128], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
    np.testing.assert_allclose(restored.predict(x[:8], verbose=0), mutual.peers[0].predict(x[:8], verbose=0), rtol=1e-5)
