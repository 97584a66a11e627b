import re

import numpy as np
import pytest

from keras_kd.losses.attention import AttentionTransferLoss
from tests import loss_checks
from tests.losses.feature_reference import pool_larger, to_nchw

rng = np.random.default_rng(2)
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 3)).astype("float32")


def per_example_reference(teacher, student, p=2):
    """RepDistiller's Attention.at_loss on NCHW arrays, kept per example."""
    teacher, student = pool_larger(teacher, student)

    def at(f):
        f = to_nchw(f)
        a = (f**p).mean(1).reshape(len(f), -1)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    return ((at(student) - at(teacher)) ** 2).mean(-1)


def reference(teacher, student, p=2):
    return per_example_reference(teacher, student, p).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(AttentionTransferLoss(), TEACHER)


def test_zero_when_attention_maps_match_despite_other_channels():
    # Same spatial energy profile up to scale: student = 3 copies of 2 * teacher channel 0.
    teacher = TEACHER[..., :1]
    student = np.concatenate([2 * teacher] * 3, axis=-1)
    np.testing.assert_allclose(
        loss_checks.value(AttentionTransferLoss(), teacher, student), 0.0, atol=1e-7
    )


def test_hand_computed_case():
    # at(t) = normalize([1, 0]) = [1, 0]; at(s) = normalize([0, 4]) = [0, 1];
    # mean([1, -1]^2) = 1.
    teacher = np.array([1.0, 0.0], "float32").reshape(1, 1, 2, 1)
    student = np.array([0.0, 2.0], "float32").reshape(1, 1, 2, 1)
    np.testing.assert_allclose(
        loss_checks.value(AttentionTransferLoss(), teacher, student), 1.0, rtol=1e-6
    )


def test_matches_reference_formula_with_different_channels():
    got = loss_checks.value(AttentionTransferLoss(), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT), rtol=1e-5)


@pytest.mark.parametrize("p", [1.0, 3.0, 4.0])
def test_other_exponents_on_non_negative_features(p):
    teacher, student = np.abs(TEACHER), np.abs(STUDENT)
    got = loss_checks.value(AttentionTransferLoss(p=p), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student, p), rtol=1e-5)


def test_odd_exponent_uses_absolute_values():
    # The paper's |f|^p: finite, and equal to the value on |f|.
    got = loss_checks.value(AttentionTransferLoss(p=3), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(np.abs(TEACHER), np.abs(STUDENT), 3), rtol=1e-5)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((3, 4, 4, 2), (3, 2, 2, 3)), ((3, 3, 3, 2), (3, 5, 5, 4)), ((3, 8, 8, 2), (3, 4, 4, 2))],
)
def test_pools_larger_map_to_smaller(teacher_shape, student_shape):
    teacher = rng.normal(size=teacher_shape).astype("float32")
    student = rng.normal(size=student_shape).astype("float32")
    got = loss_checks.value(AttentionTransferLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_all_zero_student_map_has_finite_gradient():
    # F.normalize's eps keeps a dead (all-zero) map finite.
    student = np.zeros((3, 4, 4, 3), "float32")
    result, grad = loss_checks.student_value_and_gradient(AttentionTransferLoss(), TEACHER, student)
    assert np.isfinite(float(result))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(result), reference(TEACHER, np.zeros((3, 4, 4, 3))), rtol=1e-5)


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(AttentionTransferLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(AttentionTransferLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(AttentionTransferLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss = AttentionTransferLoss(p=3.0, name="at")
    assert loss.get_config()["p"] == 3.0
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(AttentionTransferLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("p", [0, -2.0, "2", None, True])
def test_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"`p` must"):
        AttentionTransferLoss(p=p)


@pytest.mark.parametrize(
    "teacher_shape, student_shape", [((3, 32), (3, 32)), ((3, 4, 4, 2), (3, 4, 2))]
)
def test_rejects_non_maps(teacher_shape, student_shape):
    pattern = re.escape(str(teacher_shape)) + ".*" + re.escape(str(student_shape))
    with pytest.raises(ValueError, match=pattern):
        AttentionTransferLoss()(
            np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32")
        )


def test_default_name_is_keras_style():
    assert AttentionTransferLoss().name == "attention_transfer_loss"
