import re

import numpy as np
import pytest

from keras_kd.losses.nst import NSTLoss
from tests import loss_checks
from tests.losses.feature_reference import pool_larger, to_nchw

rng = np.random.default_rng(4)
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 3)).astype("float32")


def per_example_reference(teacher, student):
    """RepDistiller's NSTLoss.nst_loss (full_loss=True) on NCHW arrays,
    kept per example, with its broadcast (not matmul) poly kernel."""
    teacher, student = pool_larger(teacher, student)

    def samples(f):
        f = to_nchw(f).reshape(len(f), f.shape[-1], -1)
        return f / np.maximum(np.linalg.norm(f, axis=2, keepdims=True), 1e-12)

    def poly_kernel(a, b):
        return ((a[:, None] * b[:, :, None]).sum(-1) ** 2).mean(axis=(1, 2))

    t, s = samples(teacher), samples(student)
    return poly_kernel(t, t) + poly_kernel(s, s) - 2 * poly_kernel(s, t)


def reference(teacher, student):
    return per_example_reference(teacher, student).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(NSTLoss(), TEACHER)


def test_zero_when_channels_are_rescaled_and_duplicated():
    # Normalization removes each channel's scale; MMD ignores multiplicities.
    student = np.concatenate([3 * TEACHER, 0.5 * TEACHER], axis=-1)
    np.testing.assert_allclose(loss_checks.value(NSTLoss(), TEACHER, student), 0.0, atol=1e-6)


def test_hand_computed_case():
    # One channel each: t = [1, 0], s = normalize([1, 1]); k(t,t) = k(s,s) = 1,
    # k(s,t) = (1/sqrt 2)^2 = 1/2: loss = 1 + 1 - 2 * 1/2 = 1.
    teacher = np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1)
    student = np.array([3.0, 3.0], "float32").reshape(1, 1, 2, 1)
    np.testing.assert_allclose(loss_checks.value(NSTLoss(), teacher, student), 1.0, rtol=1e-6)


def test_matches_reference_formula_with_different_channels():
    got = loss_checks.value(NSTLoss(), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT), rtol=1e-5)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((3, 4, 4, 2), (3, 2, 2, 3)), ((3, 3, 3, 2), (3, 5, 5, 4)), ((3, 8, 8, 5), (3, 4, 4, 2))],
)
def test_pools_larger_map_to_smaller(teacher_shape, student_shape):
    teacher = rng.normal(size=teacher_shape).astype("float32")
    student = rng.normal(size=student_shape).astype("float32")
    got = loss_checks.value(NSTLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_dead_student_channel_has_finite_gradient():
    # F.normalize's eps keeps an all-zero channel finite.
    student = STUDENT.copy()
    student[..., 0] = 0.0
    result, grad = loss_checks.student_value_and_gradient(NSTLoss(), TEACHER, student)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(result), reference(TEACHER, student), rtol=1e-5)


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(NSTLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(NSTLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(NSTLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(NSTLoss(name="nst"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(NSTLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize(
    "teacher_shape, student_shape", [((3, 32), (3, 32)), ((3, 4, 4, 2), (3, 16, 2))]
)
def test_rejects_non_maps(teacher_shape, student_shape):
    pattern = re.escape(str(teacher_shape)) + ".*" + re.escape(str(student_shape))
    with pytest.raises(ValueError, match=pattern):
        NSTLoss()(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))


def test_default_name_is_keras_style():
    assert NSTLoss().name == "nst_loss"
