import re

import numpy as np
import pytest

from keras_kd.losses.fitnet import FitNetLoss
from tests import loss_checks
from tests.losses.feature_reference import pool_larger

rng = np.random.default_rng(1)
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 2)).astype("float32")


def per_example_reference(teacher, student):
    teacher, student = pool_larger(teacher, student) if teacher.ndim == 4 else (teacher, student)
    diff = np.asarray(student, "float64") - np.asarray(teacher, "float64")
    return (diff**2).reshape(len(diff), -1).mean(-1)


def reference(teacher, student):
    """HintLoss: nn.MSELoss() over every element of the batch."""
    return per_example_reference(teacher, student).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(FitNetLoss(), TEACHER)


def test_hand_computed_case():
    # ((1 - 0)^2 + (2 - 0)^2) / 2 = 2.5 for the first example, 0 for the second.
    teacher = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    student = np.array([[0.0, 0.0], [3.0, 4.0]], "float32")
    np.testing.assert_allclose(loss_checks.value(FitNetLoss(), teacher, student), 1.25, rtol=1e-6)


def test_matches_reference_formula():
    got = loss_checks.value(FitNetLoss(), TEACHER, STUDENT)
    expected = np.mean((STUDENT.astype("float64") - TEACHER) ** 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((3, 4, 4, 2), (3, 2, 2, 2)), ((3, 3, 3, 2), (3, 5, 5, 2)), ((3, 6, 6, 2), (3, 4, 4, 2))],
)
def test_pools_larger_map_to_smaller(teacher_shape, student_shape):
    teacher = rng.normal(size=teacher_shape).astype("float32")
    student = rng.normal(size=student_shape).astype("float32")
    got = loss_checks.value(FitNetLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_pooled_teacher_equal_to_student_gives_zero():
    # 2x2 block means of the teacher reproduce the student exactly.
    student = rng.normal(size=(2, 2, 2, 3)).astype("float32")
    teacher = np.repeat(np.repeat(student, 2, axis=1), 2, axis=2)
    loss_checks.assert_zero_when_equal(FitNetLoss(), student)
    np.testing.assert_allclose(loss_checks.value(FitNetLoss(), teacher, student), 0.0, atol=1e-7)


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(FitNetLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(FitNetLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(FitNetLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(FitNetLoss(name="hint"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(FitNetLoss(), TEACHER, STUDENT)


def test_rejects_different_channels_and_suggests_connector():
    with pytest.raises(ValueError, match=r"\(3, 4, 4, 2\).*\(3, 4, 4, 5\).*conv1x1"):
        FitNetLoss()(TEACHER, np.zeros((3, 4, 4, 5), "float32"))


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [
        ((3, 4, 4, 2), (3, 32)),
        ((3, 5, 2), (3, 4, 2)),
        ((3,), (3,)),
        ((3, 1, 4, 4, 2), (3, 1, 4, 4, 2)),
    ],
)
def test_rejects_incomparable_shapes(teacher_shape, student_shape):
    pattern = re.escape(str(teacher_shape)) + ".*" + re.escape(str(student_shape))
    with pytest.raises(ValueError, match=pattern):
        FitNetLoss().check_shapes(teacher_shape, student_shape)


def test_default_name_is_keras_style():
    assert FitNetLoss().name == "fitnet_loss"
