import re

import numpy as np
import pytest

from keras_kd.losses.fsp import FSPLoss
from tests import loss_checks
from tests.losses.feature_reference import pool_larger, to_nchw

rng = np.random.default_rng(3)


def maps(*shapes):
    return tuple(rng.normal(size=shape).astype("float32") for shape in shapes)


# Teacher and student differ in spatial size; within each network the two
# maps differ too (the first is pooled to the second).
TEACHER = maps((3, 8, 8, 2), (3, 4, 4, 3))
STUDENT = maps((3, 4, 4, 2), (3, 2, 2, 3))


def fsp_matrix(bottom, top):
    """RepDistiller's FSP.compute_fsp for one pair, on NCHW arrays."""
    bottom, top = pool_larger(bottom, top)
    bottom, top = to_nchw(bottom), to_nchw(top)
    bottom = bottom.reshape(len(bottom), 1, bottom.shape[1], -1)
    top = top.reshape(len(top), top.shape[1], 1, -1)
    return (bottom * top).mean(-1)


def per_example_reference(teacher, student):
    return ((fsp_matrix(*student) - fsp_matrix(*teacher)) ** 2).mean(axis=(1, 2))


def reference(teacher, student):
    return per_example_reference(teacher, student).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(FSPLoss(), TEACHER)


def test_hand_computed_case():
    # Teacher: G = (1*2 + 3*0) / 2 = 1 (one channel each, two positions);
    # student: G = (1*1 + 1*1) / 2 = 1 for the second example, 0 for the first.
    teacher = (np.array([1.0, 3.0] * 2, "float32").reshape(2, 1, 2, 1),
               np.array([2.0, 0.0] * 2, "float32").reshape(2, 1, 2, 1))
    student = (np.array([0.0, 0.0, 1.0, 1.0], "float32").reshape(2, 1, 2, 1),
               np.array([5.0, 5.0, 1.0, 1.0], "float32").reshape(2, 1, 2, 1))
    # Per example: (0 - 1)^2 = 1 and (1 - 1)^2 = 0.
    np.testing.assert_allclose(loss_checks.value(FSPLoss(), teacher, student), 0.5, rtol=1e-6)


def test_matches_reference_formula_with_pooling():
    got = loss_checks.value(FSPLoss(), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT), rtol=1e-5)


@pytest.mark.parametrize(
    "teacher_shapes, student_shapes",
    [
        (((3, 4, 4, 2), (3, 4, 4, 3)), ((3, 4, 4, 2), (3, 4, 4, 3))),
        (((3, 2, 2, 2), (3, 5, 5, 3)), ((3, 3, 3, 2), (3, 6, 6, 3))),
        (((3, 4, 4, 1), (3, 4, 4, 4)), ((3, 2, 2, 1), (3, 2, 2, 4))),
    ],
)
def test_matches_reference_formula(teacher_shapes, student_shapes):
    teacher, student = maps(*teacher_shapes), maps(*student_shapes)
    got = loss_checks.value(FSPLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(FSPLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(FSPLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(FSPLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(FSPLoss(name="fsp"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(FSPLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("which", [0, 1])
def test_rejects_different_channels_naming_shapes(which):
    student = list(STUDENT)
    student[which] = np.zeros(STUDENT[which].shape[:-1] + (7,), "float32")
    pattern = re.escape(str(TEACHER[which].shape)) + ".*" + re.escape(str(student[which].shape))
    with pytest.raises(ValueError, match=pattern):
        FSPLoss()(TEACHER, tuple(student))


def test_rejects_maps_of_wrong_rank_naming_shapes():
    teacher_shapes = ((3, 16), (3, 4, 4, 3))
    student_shapes = ((3, 4, 4, 2), (3, 2, 2, 3))
    with pytest.raises(ValueError, match=re.escape(str(teacher_shapes))):
        FSPLoss().check_shapes(teacher_shapes, student_shapes)


def test_rejects_single_map():
    with pytest.raises(ValueError, match="2 feature maps"):
        FSPLoss()(TEACHER[0], STUDENT[0])


def test_default_name_is_keras_style():
    assert FSPLoss().name == "fsp_loss"
    assert FSPLoss.num_maps == 2
