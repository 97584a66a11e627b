import numpy as np
import pytest

from keras_kd.losses.logit_mse import LogitMSELoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(6, 5)).astype("float32")
STUDENT = rng.normal(size=(6, 5)).astype("float32")


def reference(teacher, student):
    diff = student.astype("float64") - teacher.astype("float64")
    return (diff**2).mean(-1).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(LogitMSELoss(), TEACHER)


def test_matches_reference_formula():
    got = loss_checks.value(LogitMSELoss(), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT), rtol=1e-6)


def test_hand_computed_case():
    # Example 1: diffs (1, -2) -> mean 2.5; example 2: diffs (0, 3) -> 4.5.
    got = loss_checks.value(LogitMSELoss(), [[0.0, 0.0], [1.0, 1.0]], [[1.0, -2.0], [1.0, 4.0]])
    np.testing.assert_allclose(got, 3.5, rtol=1e-7)


def test_equals_keras_mse_on_logits():
    import keras

    expected = float(keras.losses.MeanSquaredError()(TEACHER, STUDENT))
    np.testing.assert_allclose(loss_checks.value(LogitMSELoss(), TEACHER, STUDENT), expected, rtol=1e-6)


def test_sample_weight_weights_examples():
    weights = np.array([1, 0, 0, 0, 0, 0], "float32")
    got = loss_checks.value(LogitMSELoss(), TEACHER, STUDENT, sample_weight=weights)
    np.testing.assert_allclose(got, reference(TEACHER[:1], STUDENT[:1]) / 6, rtol=1e-6)


def test_per_token_logits():
    teacher = rng.normal(size=(2, 3, 4)).astype("float32")
    student = rng.normal(size=(2, 3, 4)).astype("float32")
    got = loss_checks.value(LogitMSELoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-6)


def test_same_value_under_xla():
    loss = LogitMSELoss()
    compiled = backend_utils.compiled(lambda t, s: loss(t, s))
    np.testing.assert_allclose(
        float(compiled(TEACHER, STUDENT)), reference(TEACHER, STUDENT), rtol=1e-6
    )


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(LogitMSELoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(LogitMSELoss(name="mimic"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(LogitMSELoss(), TEACHER, STUDENT)


def test_rejects_bad_constructor_argument():
    with pytest.raises(ValueError, match="reduction"):
        LogitMSELoss(reduction="median")


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((2, 10), (2, 5)), ((2, 3, 4), (2, 4)), ((2, 3, 4), (2, 2, 4))],
)
def test_rejects_mismatched_shapes(teacher_shape, student_shape):
    with pytest.raises(ValueError) as info:
        LogitMSELoss()(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))
    assert str(teacher_shape) in str(info.value) and str(student_shape) in str(info.value)


def test_default_name_is_keras_style():
    assert LogitMSELoss().name == "logit_mse_loss"
