import keras
import numpy as np
import pytest
from keras import ops

import keras_kd
from keras_kd.features import OUTPUT
from keras_kd.losses import KDLoss
from keras_kd.schemes.boundary import BoundarySupportingDistiller, bss_schedulers, input_gradient
from tests.conftest import cnn, mlp, sparse_ce


def kd_terms():
    return [keras_kd.Term(KDLoss(temperature=3.0), weight=0.9)]


def bss(teacher, student, **kwargs):
    return BoundarySupportingDistiller(teacher, student, kd_terms(), student_loss_weight=0.1, **kwargs)


def margins(logits, base, target):
    rows = np.arange(len(base))
    return logits[rows, base] - logits[rows, target]


def test_attack_moves_the_teacher_margin_toward_the_boundary(digits, trained_teacher):
    x, y = digits
    distiller = bss(trained_teacher, mlp(16, "student"), target="second")
    logits = trained_teacher.predict(x[:256], verbose=0)
    base = logits.argmax(-1).astype("int32")
    keep = base == y[:256]  # base samples: the teacher is right
    x_base, base, logits = x[:256][keep], base[keep], logits[keep]
    target = ops.convert_to_numpy(distiller.target_classes(logits))
    assert np.all(target == np.argsort(logits, -1)[:, -2])
    samples = ops.convert_to_numpy(distiller.attack(x_base, ops.convert_to_tensor(base), ops.convert_to_tensor(target)))
    assert samples.shape == x_base.shape
    before = np.abs(margins(logits, base, target))
    after = np.abs(margins(trained_teacher.predict(samples, verbose=0), base, target))
    assert np.mean(after < before) > 0.95
    assert np.median(after) < 0.05 * np.median(before)


def test_samples_keep_the_input_shape_and_pad_with_zero_weight():
    teacher, student = cnn(4, "teacher"), cnn(2, "student")
    distiller = bss(teacher, student, bss_fraction=0.5, num_steps=2)
    images = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    teacher_logits = np.zeros((8, 10), "float32")
    teacher_logits[:, 1] = 1.0
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 0], "int32")  # the teacher is right on two samples only
    samples, weights = distiller.boundary_supporting_samples(
        images, labels, teacher_logits, np.zeros((8, 10), "float32")
    )
    assert tuple(samples.shape) == (4, 8, 8, 1)
    np.testing.assert_array_equal(np.sort(ops.convert_to_numpy(weights))[::-1], [1.0, 1.0, 0.0, 0.0])


def test_sampled_targets_skip_the_top_class_and_follow_the_seed():
    logits = np.random.default_rng(1).normal(size=(64, 10)).astype("float32")
    draws = [
        ops.convert_to_numpy(bss(mlp(8, "teacher"), mlp(4, "student"), seed=3).target_classes(logits)) for _ in range(2)
    ]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.any(draws[0] == logits.argmax(-1))
    assert len(set(draws[0])) > 2


def test_fit_logs_bss_kd_loss_and_leaves_the_teacher_unchanged(digits, trained_teacher, tmp_path):
    x, y = digits
    distiller = bss(trained_teacher, mlp(16, "student"), input_range=(0.0, 1.0), seed=0)
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    before = [np.array(v) for v in trained_teacher.weights]
    history = distiller.fit(x[:512], y[:512], epochs=1, batch_size=128, verbose=0).history
    assert {"loss", "student_loss", "kd_loss", "bss_kd_loss", "accuracy"} <= set(history)
    assert np.isfinite(history["bss_kd_loss"][0]) and history["bss_kd_loss"][0] > 0
    for b, a in zip(before, trained_teacher.weights):
        np.testing.assert_array_equal(np.array(a), b)
    expected = distiller.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    distiller.save(tmp_path / "bss.keras")
    restored = keras.saving.load_model(tmp_path / "bss.keras")
    assert isinstance(restored, BoundarySupportingDistiller) and restored.input_range == (0.0, 1.0)
    got = restored.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)


def test_clean_losses_see_the_clean_batch_only(digits, trained_teacher):
    # With the BSS term weighted 0, the trainable weights follow the plain
    # Distiller's SGD step exactly: the supervised loss and the terms never
    # see the generated samples, and nothing leaks through the attack.
    x, y = digits
    plain_student = mlp(16, "student")
    bss_student = keras.models.clone_model(plain_student)
    bss_student.set_weights(plain_student.get_weights())
    plain = keras_kd.Distiller(trained_teacher, plain_student, kd_terms(), student_loss_weight=0.1)
    plain.compile(keras.optimizers.SGD(0.5), sparse_ce())
    distiller = bss(trained_teacher, bss_student, bss_weight=0.0, num_steps=3)
    distiller.compile(keras.optimizers.SGD(0.5), sparse_ce())
    expected = plain.train_on_batch(x[:64], y[:64], return_dict=True)
    got = distiller.train_on_batch(x[:64], y[:64], return_dict=True)
    for a, b in zip(bss_student.trainable_weights, plain_student.trainable_weights):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["student_loss"], expected["student_loss"], rtol=1e-6)
    assert got["bss_kd_loss"] > 0


def test_config_round_trip_and_schedulers(trained_teacher):
    distiller = bss(
        trained_teacher,
        mlp(16, "student"),
        num_steps=4,
        step_size=0.1,
        bss_weight=1.5,
        bss_fraction=0.5,
        temperature=2.0,
        target="second",
        input_range=(0, 1),
        seed=7,
    )
    config = distiller.get_config()
    clone = BoundarySupportingDistiller.from_config(config)
    for key in ("num_steps", "step_size", "bss_weight", "bss_fraction", "temperature", "target", "seed"):
        assert clone.get_config()[key] == config[key]
    assert clone.input_range == (0.0, 1.0) and float(clone.term_weights["bss_kd_loss"]) == 1.5

    bss_weight, kd_weight = bss_schedulers(4, kd_term="kd_loss", kd_temperature=3.0)
    np.testing.assert_allclose([bss_weight.value_at(e) for e in range(4)], [4 / 3, 2 / 3, 0, 0], atol=1e-12)
    np.testing.assert_allclose([kd_weight.value_at(e) for e in range(4)], np.array([3.25, 2.5, 1.75, 1.0]) / 9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"step_size": 0.0}, "step_size"),
        ({"bss_weight": -1.0}, "bss_weight"),
        ({"bss_fraction": 0.0}, "bss_fraction"),
        ({"bss_fraction": 1.5}, "bss_fraction"),
        ({"temperature": -3.0}, "temperature"),
        ({"target": "third"}, "target"),
        ({"input_range": (1.0, 0.0)}, "input_range"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_rejects_bad_arguments(trained_teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        bss(trained_teacher, mlp(16, "student"), **kwargs)


def test_needs_labels(digits):
    # A teacher of its own: on JAX, Keras' fit leaves the variables it had
    # taken into its state unset when the first step raises.
    x, _ = digits
    distiller = bss(mlp(16, "teacher"), mlp(16, "student"))
    distiller.compile("adam")
    with pytest.raises(ValueError, match="labels"):
        distiller.fit(x[:128], epochs=1, batch_size=128, verbose=0)


def test_input_gradient_of_the_backend():
    x = np.array([[1.0, -2.0], [0.5, 3.0]], "float32")

    def objective(v):
        cubes = ops.power(v, 3)
        return ops.sum(cubes), cubes

    gradient, aux = input_gradient(objective, ops.convert_to_tensor(x))
    np.testing.assert_allclose(ops.convert_to_numpy(gradient), 3 * x**2, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(aux), x**3, rtol=1e-6)


def test_training_call_returns_the_augmented_batch_it_ran_on(digits, trained_teacher):
    x, _ = digits
    student = mlp(16, "student")
    distiller = BoundarySupportingDistiller(trained_teacher, student, kd_terms(), augmentation=lambda v: 1.0 - v)
    outputs = distiller(ops.convert_to_tensor(x[:32]), training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(outputs["inputs"]), 1.0 - x[:32], atol=1e-6)
    expected = trained_teacher.predict(1.0 - x[:32], verbose=0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(outputs["teacher"]["teacher"][OUTPUT]), expected, rtol=1e-4, atol=1e-5
    )
    assert "inputs" not in distiller(ops.convert_to_tensor(x[:32]), training=False)
