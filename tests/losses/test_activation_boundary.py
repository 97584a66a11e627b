import re

import numpy as np
import pytest

from keras_kd.losses.activation_boundary import ABLoss
from tests import loss_checks

rng = np.random.default_rng(5)
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 2)).astype("float32")


def per_example_reference(teacher, student, margin=1.0):
    """criterion_alternative_L2 per example, / 1000 (RepDistiller, AB.py)."""
    s, t = np.asarray(student, "float64"), np.asarray(teacher, "float64")
    loss = (s + margin) ** 2 * ((s > -margin) & (t <= 0)) + (s - margin) ** 2 * (
        (s <= margin) & (t > 0)
    )
    return np.abs(loss).reshape(len(loss), -1).sum(-1) / 1000


def reference(teacher, student, margin=1.0):
    return per_example_reference(teacher, student, margin).sum() / len(teacher)


def test_zero_once_student_is_past_the_margin_on_the_teacher_side():
    # The minimum: every student neuron on the teacher's side by >= margin.
    student = np.where(TEACHER > 0, 1.0 + np.abs(STUDENT), -1.0 - np.abs(STUDENT))
    np.testing.assert_allclose(loss_checks.value(ABLoss(), TEACHER, student), 0.0, atol=1e-12)
    assert loss_checks.value(ABLoss(), TEACHER, TEACHER) > 0  # s == t is inside the margin


def test_hand_computed_case():
    # margin 1: (0 - 1)^2 [t > 0, s <= 1] + (0 + 1)^2 [t <= 0, s > -1]
    # + 0 (s = 2 > 1) + 0 (s = -2 <= -1) + (0.5 + 1)^2 [t = 0 counts as off]
    # = 1 + 1 + 2.25 = 4.25, / 1000.
    teacher = np.array([[1.0, -1.0, 1.0, -1.0, 0.0]], "float32")
    student = np.array([[0.0, 0.0, 2.0, -2.0, 0.5]], "float32")
    np.testing.assert_allclose(loss_checks.value(ABLoss(), teacher, student), 4.25e-3, rtol=1e-6)


@pytest.mark.parametrize("margin", [0.0, 0.5, 1.0, 2.0])
def test_matches_reference_formula(margin):
    got = loss_checks.value(ABLoss(margin=margin), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, margin), rtol=1e-5)


def test_vectors():
    teacher, student = TEACHER.reshape(3, -1), STUDENT.reshape(3, -1)
    got = loss_checks.value(ABLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(ABLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(ABLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(ABLoss(), TEACHER, STUDENT)


def test_gradient_matches_hinge():
    # d/ds of (s - m)^2 at s = 0, t > 0 is -2m; 0 past the margin.
    _, grad = loss_checks.student_value_and_gradient(
        ABLoss(margin=1.5), np.array([[1.0, 1.0]], "float32"), np.array([[0.0, 3.0]], "float32")
    )
    np.testing.assert_allclose(grad, [[-3e-3, 0.0]], rtol=1e-6)


def test_serialization_round_trip():
    loss = ABLoss(margin=0.5, name="ab")
    assert loss.get_config()["margin"] == 0.5
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(ABLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("margin", [-0.1, "1", None, False])
def test_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="`margin` must"):
        ABLoss(margin=margin)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((3, 4, 4, 2), (3, 4, 4, 5)), ((3, 4, 4, 2), (3, 2, 2, 2)), ((3, 32), (3, 4, 4, 2))],
)
def test_rejects_different_shapes(teacher_shape, student_shape):
    pattern = re.escape(str(teacher_shape)) + ".*" + re.escape(str(student_shape))
    with pytest.raises(ValueError, match=pattern):
        ABLoss()(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))


def test_default_name_is_keras_style():
    assert ABLoss().name == "ab_loss"
