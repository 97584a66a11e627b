import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data pipelines, which pretraining reads on every backend
from keras import ops

from keras_kd.losses.factor_transfer import (
    FactorTransferHead,
    FactorTransferLoss,
    Paraphraser,
    Translator,
    pretrain_paraphraser,
)
from tests import backend_utils, loss_checks
from tests.losses import _learnable_checks

rng = np.random.default_rng(0)
TEACHER = np.abs(rng.normal(size=(4, 4, 4, 6))).astype("float32")
STUDENT = rng.normal(size=(4, 8, 8, 3)).astype("float32")


def np_conv3x3(x, kernel, bias):
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(padded[:, i : i + h, j : j + w] @ kernel[i, j] for i in range(3) for j in range(3))
    return out + bias


def np_forward(layers, x):
    """Conv2D / BatchNormalization (batch statistics) / LeakyReLU in NumPy."""
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            x = np_conv3x3(x, layer.kernel.numpy().astype("float64"), layer.bias.numpy())
        elif isinstance(layer, keras.layers.BatchNormalization):
            mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
            x = (x - mean) / np.sqrt(var + 1e-5) * layer.gamma.numpy() + layer.beta.numpy()
        else:
            x = np.where(x > 0, x, 0.1 * x)
    return x


def np_factor(x):
    x = x.reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pool(x, size):
    b, h, w, c = x.shape
    return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))


def reference(teacher, student, head, p=1):
    factor_t = np_forward(head.paraphraser.encoder, teacher.astype("float64"))
    factor_s = np_forward(head.translator.encoder, student.astype("float64"))
    if factor_s.shape[1] > factor_t.shape[1]:
        factor_s = pool(factor_s, factor_t.shape[1])
    elif factor_s.shape[1] < factor_t.shape[1]:
        factor_t = pool(factor_t, factor_s.shape[1])
    return (np.abs(np_factor(factor_s) - np_factor(factor_t)) ** p).mean()


def built(teacher=TEACHER, student=STUDENT, **kwargs):
    loss = FactorTransferLoss(**kwargs)
    loss.build((None,) + teacher.shape[1:], (None,) + student.shape[1:])
    return loss


def test_build_creates_all_weights():
    loss = _learnable_checks.assert_builds_weights(
        FactorTransferLoss, (None, 4, 4, 6), (None, 8, 8, 3)
    )
    head = loss.layer
    kernels = [
        tuple(l.kernel.shape)
        for l in head.paraphraser.encoder + head.paraphraser.decoder
        if hasattr(l, "kernel")
    ]
    # Reference: encoder C->C->k->k, decoder k->k->C->C (transposed), k = int(C * 0.5).
    assert kernels == [
        (3, 3, 6, 6),
        (3, 3, 6, 3),
        (3, 3, 3, 3),
        (3, 3, 3, 3),
        (3, 3, 6, 3),
        (3, 3, 6, 6),
    ]
    kernels = [tuple(l.kernel.shape) for l in head.translator.encoder if hasattr(l, "kernel")]
    assert kernels == [(3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)]
    assert sum(isinstance(l, keras.layers.BatchNormalization) for l in head.translator.encoder) == 3
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in head.paraphraser.encoder)


def test_only_the_translator_is_trainable():
    head = built().layer
    trainable = {id(w) for w in head.trainable_weights}
    assert trainable == {id(w) for w in head.translator.trainable_weights}
    assert len(head.paraphraser.weights) == 12
    assert not trainable & {id(w) for w in head.paraphraser.weights}


def test_factor_formula():
    x = rng.normal(size=(3, 2, 2, 5)).astype("float32")
    np.testing.assert_allclose(
        backend_utils.numpy(FactorTransferLoss.factor(x)), np_factor(x), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        backend_utils.numpy(FactorTransferLoss.factor(np.array([[3.0, 4.0]]))), [[0.6, 0.8]], rtol=1e-6
    )
    np.testing.assert_array_equal(backend_utils.numpy(FactorTransferLoss.factor(np.zeros((1, 4), "float32"))), 0)


@pytest.mark.parametrize(
    "teacher, student, p",
    [
        (TEACHER, STUDENT, 1),  # student factor pooled 8x8 -> 4x4
        (TEACHER, STUDENT[:, :4, :4], 1),
        (TEACHER, STUDENT[:, :2, :2], 1),  # teacher factor pooled
        (TEACHER, STUDENT[:, :4, :4], 2),
    ],
)
def test_matches_reference_given_weights(teacher, student, p):
    loss = built(teacher, student, p=p)
    got = loss_checks.value(loss, teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student, loss.layer, p=p), rtol=1e-5)


@pytest.mark.parametrize("p, expected", [(1, 1 / np.sqrt(4 * 4 * 3)), (2, 1 / (4 * 4 * 3))])
def test_known_case(p, expected):
    # Paraphraser factor constant 1 -> F_t = 1/sqrt(D); translator output 0 -> F_s = 0.
    loss = built(TEACHER, STUDENT[:, :4, :4], p=p)
    head = loss.layer
    for layer in head.paraphraser.encoder + head.translator.encoder:
        for weight in layer.weights:
            if weight.trainable or isinstance(layer, keras.layers.Conv2D):
                weight.assign(np.zeros(weight.shape, "float32"))
    head.paraphraser.encoder[-2].bias.assign(np.ones(3, "float32"))
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT[:, :4, :4]), expected, rtol=1e-6
    )


def test_one_value_per_example():
    loss = built()
    per_example = loss.call(ops.convert_to_tensor(TEACHER), ops.convert_to_tensor(STUDENT))
    assert per_example.shape == (4,)


def reconstruction_error(paraphraser, features):
    _, reconstruction = paraphraser(features)
    return float(np.mean((backend_utils.numpy(reconstruction) - features) ** 2))


def test_pretraining_lowers_reconstruction_error():
    keras.utils.set_random_seed(0)
    features = np.abs(rng.normal(size=(32, 4, 4, 6))).astype("float32")
    loss = built(features, STUDENT)
    paraphraser = loss.layer.paraphraser
    before = reconstruction_error(paraphraser, features)
    history = loss.pretrain_paraphraser(features, epochs=8, batch_size=8)  # reference SGD
    after = reconstruction_error(paraphraser, features)
    assert len(history) == 8 and history[-1] < history[0]
    assert after < 0.8 * before, (before, after)
    # Frozen again for distillation.
    assert not paraphraser.trainable and paraphraser.trainable_weights == []
    assert {id(w) for w in loss.layer.trainable_weights} == {
        id(w) for w in loss.layer.translator.trainable_weights
    }


@pytest.mark.parametrize("batched", [True, False])
def test_pretraining_takes_a_dataset(batched):
    features = np.abs(rng.normal(size=(16, 4, 4, 6))).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(features)
    if batched:
        dataset = dataset.batch(4)
    paraphraser = Paraphraser(rate=0.5)
    before = reconstruction_error(paraphraser, features)
    history = pretrain_paraphraser(
        paraphraser, dataset, epochs=5, optimizer=keras.optimizers.Adam(1e-2), batch_size=4
    )
    assert len(history) == 5
    assert reconstruction_error(paraphraser, features) < before
    assert not paraphraser.trainable


def test_pretraining_needs_a_built_loss():
    with pytest.raises(ValueError, match="build"):
        FactorTransferLoss().pretrain_paraphraser(TEACHER)


def test_rebuild_keeps_the_pretrained_paraphraser():
    loss = built()
    loss.pretrain_paraphraser(TEACHER, epochs=1, optimizer=keras.optimizers.Adam(1e-2))
    weights = [w.numpy() for w in loss.layer.paraphraser.weights]
    loss.build((None, 4, 4, 6), (None, 8, 8, 3))  # as the Distiller does
    for before, weight in zip(weights, loss.layer.paraphraser.weights):
        np.testing.assert_array_equal(before, weight.numpy())


def test_distillation_step_leaves_the_paraphraser_alone():
    loss = built()
    head = loss.layer
    student = keras.Variable(STUDENT)
    variables = [student] + head.trainable_weights
    paraphraser_before = [w.numpy() for w in head.paraphraser.weights]
    translator_before = [w.numpy() for w in head.translator.trainable_weights]
    assert not {id(w) for w in head.paraphraser.weights} & {id(w) for w in variables}
    _, _, grads = backend_utils.value_and_grad(
        lambda: loss(TEACHER, student), (), variables + head.paraphraser.weights
    )
    # The teacher's factor is a constant: no gradient reaches the paraphraser.
    assert all(np.abs(g).max() == 0 for g in grads[len(variables) :])
    keras.optimizers.SGD(1.0).apply([ops.convert_to_tensor(g) for g in grads[: len(variables)]], variables)
    for before, weight in zip(paraphraser_before, head.paraphraser.weights):
        np.testing.assert_array_equal(before, weight.numpy())
    changed = [
        not np.array_equal(before, w.numpy())
        for before, w in zip(translator_before, head.translator.trainable_weights)
    ]
    assert all(changed)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(built(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss = built(rate=0.25, p=2, name="ft")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    head = loss.layer
    for layer in (head, head.paraphraser, head.translator):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    assert isinstance(head, FactorTransferHead) and isinstance(head.translator, Translator)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(built(), TEACHER, STUDENT)


def test_works_under_xla():
    loss = built()
    jit = _learnable_checks.assert_jit_compiles(loss, TEACHER, STUDENT)
    np.testing.assert_allclose(jit, loss_checks.value(loss, TEACHER, STUDENT), rtol=1e-5)


def test_weights_save_and_reload(tmp_path):
    def make():
        return FactorTransferLoss()

    # Perturbs every trainable weight, then checks the paraphraser (frozen) too.
    _learnable_checks.assert_weights_round_trip(
        make, TEACHER, STUDENT, tmp_path / "ft.weights.h5", warm_up=False
    )


def test_reload_restores_pretrained_paraphraser(tmp_path):
    loss = built()
    loss.pretrain_paraphraser(TEACHER, epochs=2, optimizer=keras.optimizers.Adam(1e-2))
    path = str(tmp_path / "ft.weights.h5")
    _learnable_checks.Holder(loss.layer).save_weights(path)
    restored = built()
    _learnable_checks.Holder(restored.layer).load_weights(path)
    for a, b in zip(loss.layer.paraphraser.weights, restored.layer.paraphraser.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rate": 0}, "rate"),
        ({"rate": -0.5}, "rate"),
        ({"rate": "0.5"}, "rate"),
        ({"p": 0}, "p"),
        ({"p": 0.5}, "p"),
        ({"p": None}, "p"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactorTransferLoss(**kwargs)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"epochs": 1.5}])
def test_pretraining_rejects_bad_arguments(kwargs):
    loss = built()
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        loss.pretrain_paraphraser(TEACHER, **kwargs)


@pytest.mark.parametrize(
    "teacher_shape, student_shape, kwargs",
    [
        ((2, 6), (2, 3), {}),  # not feature maps
        ((2, 4, 4, 6), (2, 3), {}),
        ((2, 4, 4, 1), (2, 4, 4, 3), {"rate": 0.5}),  # int(1 * 0.5) = 0 factor channels
    ],
)
def test_rejects_bad_shapes(teacher_shape, student_shape, kwargs):
    with pytest.raises(ValueError, match=r"teacher shape \(2, .*student shape \(2,"):
        FactorTransferLoss(**kwargs)(
            np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32")
        )


def test_default_name_is_keras_style():
    assert FactorTransferLoss().name == "factor_transfer_loss"
