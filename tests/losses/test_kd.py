import keras
import numpy as np
import pytest

from keras_kd.losses import KDLoss
from tests import loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(6, 5)).astype("float32")
STUDENT = rng.normal(size=(6, 5)).astype("float32")


def reference(teacher, student, temperature):
    def softmax(z):
        z = z / temperature
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(teacher.astype("float64")), softmax(student.astype("float64"))
    return (p * np.log(p / q)).sum(-1).mean() * temperature**2


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(KDLoss(), TEACHER)


# At T = 20 the KL is a small difference of float32 log-probabilities:
# XLA's CPU log_softmax on JAX lands 1.5e-5 off (TensorFlow and PyTorch 4e-6).
@pytest.mark.parametrize("temperature, rtol", [(1.0, 1e-5), (4.0, 1e-5), (20.0, 3e-5)])
def test_matches_reference_formula(temperature, rtol):
    got = loss_checks.value(KDLoss(temperature=temperature), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, temperature), rtol=rtol)


def test_hand_computed_case():
    # p = softmax([0, log 3]) = [1/4, 3/4]; q = [1/2, 1/2]; T = 1.
    expected = 0.25 * np.log(0.5) + 0.75 * np.log(1.5)
    got = loss_checks.value(KDLoss(temperature=1.0), [[0.0, np.log(3.0)]], [[0.0, 0.0]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_probabilities_input():
    probs = lambda z: np.exp(z) / np.exp(z).sum(-1, keepdims=True)  # noqa: E731
    got = loss_checks.value(KDLoss(from_logits=False), probs(TEACHER), probs(STUDENT))
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, 4.0), rtol=1e-4)


def test_sample_weight_weights_examples():
    weights = np.array([1, 0, 0, 0, 0, 0], "float32")
    got = loss_checks.value(KDLoss(), TEACHER, STUDENT, sample_weight=weights)
    np.testing.assert_allclose(got, reference(TEACHER[:1], STUDENT[:1], 4.0) / 6, rtol=1e-5)


def test_temperature_variable_changes_value_without_new_loss():
    temperature = keras.Variable(1.0, trainable=False)
    loss = KDLoss(temperature=temperature)
    first = loss_checks.value(loss, TEACHER, STUDENT)
    temperature.assign(4.0)
    np.testing.assert_allclose(first, reference(TEACHER, STUDENT, 1.0), rtol=1e-5)
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT), reference(TEACHER, STUDENT, 4.0), rtol=1e-5
    )


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(KDLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(KDLoss(temperature=2.5, name="soft"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(KDLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("temperature", [0, -1.0, "4", None])
def test_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(temperature=temperature)


def test_rejects_mismatched_classes():
    with pytest.raises(ValueError, match="10 classes"):
        KDLoss()(np.zeros((2, 10), "float32"), np.zeros((2, 5), "float32"))


def test_default_name_is_keras_style():
    assert KDLoss().name == "kd_loss"
