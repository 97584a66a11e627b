import keras
import numpy as np
import pytest
from keras import ops

import keras_kd
from keras_kd.losses import KDLoss
from keras_kd.schemes.adversarial import AdversarialDistiller, default_discriminator
from tests.conftest import mlp, sparse_ce

ON_JAX = keras.backend.backend() == "jax"
# The scheme's train_step (a second optimizer for D) is written for TensorFlow and PyTorch;
# on JAX the constructor raises (test_refused_on_jax_at_construction).
tf_or_torch = pytest.mark.skipif(
    ON_JAX, reason="AdversarialDistiller needs a stateful train_step (TensorFlow or PyTorch); it raises on JAX"
)


def kd_terms():
    return [keras_kd.Term(KDLoss(), weight=0.9)]


def snapshot(variables):
    return [ops.convert_to_numpy(v) for v in variables]


def changed(before, variables):
    return [not np.array_equal(b, ops.convert_to_numpy(v)) for b, v in zip(before, variables)]


def adversarial(teacher, student, optimizer="sgd", discriminator_optimizer=None, **kwargs):
    distiller = AdversarialDistiller(teacher, student, kd_terms(), student_loss_weight=0.1, **kwargs)
    distiller.compile(optimizer, sparse_ce(), discriminator_optimizer=discriminator_optimizer)
    return distiller


@tf_or_torch
def test_one_step_updates_student_and_discriminator_never_the_teacher(digits, trained_teacher):
    x, y = digits
    distiller = adversarial(trained_teacher, mlp(16, "student"))
    teacher, student, discriminator = (
        snapshot(trained_teacher.weights),
        snapshot(distiller.student.trainable_weights),
        snapshot(distiller.discriminator.trainable_weights),
    )
    logs = distiller.train_on_batch(x[:64], y[:64], return_dict=True)
    assert {"loss", "student_loss", "kd_loss", "adversarial_loss", "discriminator_loss"} <= set(logs)
    assert all(np.isfinite(value) for value in logs.values())
    # The step logs the student's total of `compute_loss` (adversarial_weight = 1).
    expected = 0.1 * logs["student_loss"] + 0.9 * logs["kd_loss"] + logs["adversarial_loss"]
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)
    assert all(changed(student, distiller.student.trainable_weights))
    assert all(changed(discriminator, distiller.discriminator.trainable_weights))
    for b, a in zip(teacher, trained_teacher.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), b)  # bit for bit, BatchNorm statistics included


@tf_or_torch
def test_discriminator_stays_out_of_the_student_and_its_optimizer(digits, trained_teacher):
    x, y = digits
    distiller = adversarial(trained_teacher, mlp(16, "student"), keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.0))
    discriminator_ids = {id(v) for v in distiller.discriminator.weights}
    assert not discriminator_ids & {id(v) for v in distiller.student.weights}
    assert not discriminator_ids & {id(v) for v in distiller.student_side_variables}
    before, student = snapshot(distiller.discriminator.weights), snapshot(distiller.student.trainable_weights)
    distiller.train_on_batch(x[:64], y[:64])
    assert not any(changed(before, distiller.discriminator.weights))  # the student's optimizer left it alone
    assert all(changed(student, distiller.student.trainable_weights))


@tf_or_torch
def test_discriminator_optimizer_never_updates_the_student(digits, trained_teacher):
    x, y = digits
    distiller = adversarial(trained_teacher, mlp(16, "student"), keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1))
    before, discriminator = snapshot(distiller.student.trainable_weights), snapshot(distiller.discriminator.weights)
    distiller.train_on_batch(x[:64], y[:64])
    assert not any(changed(before, distiller.student.trainable_weights))
    assert all(changed(discriminator, distiller.discriminator.weights))


@tf_or_torch
def test_zero_adversarial_weight_gives_the_plain_distiller_step(digits, trained_teacher):
    # Same initial student, SGD: with the adversarial term weighted 0 the
    # student's update is exactly the Distiller's, so nothing from the
    # discriminator (or its update) leaks into the student's gradient.
    x, y = digits
    plain_student = mlp(16, "student")
    adversarial_student = keras.models.clone_model(plain_student)
    adversarial_student.set_weights(plain_student.get_weights())
    plain = keras_kd.Distiller(trained_teacher, plain_student, kd_terms(), student_loss_weight=0.1)
    plain.compile(keras.optimizers.SGD(0.5), sparse_ce())
    distiller = adversarial(
        trained_teacher,
        adversarial_student,
        keras.optimizers.SGD(0.5),
        keras.optimizers.SGD(0.5),
        adversarial_weight=0.0,
    )
    for _ in range(2):
        expected = plain.train_on_batch(x[:64], y[:64], return_dict=True)
        got = distiller.train_on_batch(x[:64], y[:64], return_dict=True)
    for a, b in zip(adversarial_student.weights, plain_student.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["kd_loss"], expected["kd_loss"], rtol=1e-6)
    assert got["adversarial_loss"] > 0


@tf_or_torch
def test_discriminator_learns_against_a_frozen_student(digits, trained_teacher):
    x, y = digits
    student = mlp(16, "student")
    student.trainable = False
    distiller = adversarial(trained_teacher, student, "sgd", keras.optimizers.Adam(3e-3))
    before = snapshot(student.weights)
    losses = [distiller.train_on_batch(x[:128], y[:128], return_dict=True)["discriminator_loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses
    assert not any(changed(before, student.weights))


@tf_or_torch
def test_unconditional_discriminator_needs_no_labels(digits, trained_teacher):
    x, _ = digits
    distiller = AdversarialDistiller(trained_teacher, mlp(16, "student"), kd_terms(), conditional=False)
    assert distiller.discriminator.input_shape == (None, 10)
    distiller.compile("adam")
    history = distiller.fit(x[:256], epochs=1, batch_size=128, verbose=0).history
    assert np.isfinite(history["discriminator_loss"][0])
    conditional = adversarial(trained_teacher, mlp(16, "student_2"))
    assert conditional.discriminator.input_shape == (None, 20)
    with pytest.raises(ValueError, match="labels"):
        conditional.fit(x[:256], epochs=1, batch_size=128, verbose=0)


@tf_or_torch
def test_round_trips_through_keras_saving(digits, trained_teacher, tmp_path):
    x, y = digits
    distiller = adversarial(
        trained_teacher, mlp(16, "student"), "adam", keras.optimizers.Adam(2e-4), adversarial_weight=0.3
    )
    distiller.fit(x[:256], y[:256], epochs=1, batch_size=128, verbose=0)
    config = distiller.get_config()
    assert config["discriminator"]["class_name"] == "Functional" and config["adversarial_weight"] == 0.3
    expected = distiller.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    distiller.save(tmp_path / "adversarial.keras")
    restored = keras.saving.load_model(tmp_path / "adversarial.keras")
    assert isinstance(restored, AdversarialDistiller) and restored.conditional
    assert float(ops.convert_to_numpy(restored.discriminator_optimizer.learning_rate)) == pytest.approx(2e-4)
    for a, b in zip(restored.discriminator.weights, distiller.discriminator.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    got = restored.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)


@tf_or_torch
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"adversarial_weight": "1"}, "adversarial_weight"),
        ({"conditional": 1}, "conditional"),
        ({"discriminator": default_discriminator(7)}, r"\(batch, 20\)"),
        ({"discriminator": keras.Sequential([keras.Input((20,)), keras.layers.Dense(2)])}, "one logit"),
        ({"discriminator": "mlp"}, "built keras.Model"),
    ],
)
def test_rejects_bad_arguments(trained_teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdversarialDistiller(trained_teacher, mlp(16, "student"), kd_terms(), **kwargs)


@tf_or_torch
def test_rejects_mismatched_classes_and_several_teachers(trained_teacher):
    with pytest.raises(ValueError, match="classes"):
        AdversarialDistiller(trained_teacher, mlp(16, "student", classes=5))
    with pytest.raises(ValueError, match="one teacher"):
        AdversarialDistiller([trained_teacher], mlp(16, "student"))


@pytest.mark.skipif(not ON_JAX, reason="checks the JAX backend's error; TensorFlow and PyTorch train the scheme")
def test_refused_on_jax_at_construction(trained_teacher):
    with pytest.raises(RuntimeError, match="TensorFlow and PyTorch.*'jax'"):
        AdversarialDistiller(trained_teacher, mlp(16, "student"), kd_terms())
