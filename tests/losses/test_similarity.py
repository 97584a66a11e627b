import numpy as np
import pytest

from keras_kd.losses.similarity import SimilarityPreservingLoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(5, 4)).astype("float32")
STUDENT = rng.normal(size=(5, 6)).astype("float32")
# Rows orthonormal: x -> x @ EMBED keeps every inner product (4 -> 6 dims).
EMBED = np.linalg.qr(rng.normal(size=(6, 6)))[0][:4]


def reference(teacher, student):
    """Tung & Mori's loss in float64: row-normalised Gram matrices."""

    def gram(f):
        f = f.reshape(len(f), -1).astype("float64")
        g = f @ f.T
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)

    batch = len(teacher)
    return ((gram(teacher) - gram(student)) ** 2).sum() / batch**2


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(SimilarityPreservingLoss(), TEACHER)
    maps = rng.normal(size=(5, 3, 3, 2)).astype("float32")
    loss_checks.assert_zero_when_equal(SimilarityPreservingLoss(), maps)


def test_zero_for_scaled_rotated_student_of_other_width():
    student = (2.5 * TEACHER @ EMBED).astype("float32")
    np.testing.assert_allclose(
        loss_checks.value(SimilarityPreservingLoss(), TEACHER, student), 0.0, atol=1e-6
    )


def test_per_example_scales_change_the_loss():
    # Rows of G (not of the features) are normalised: scaling example j
    # rescales column j of every other row, so this is no invariance.
    scales = np.array([[0.2], [1.0], [3.0], [1.0], [0.5]], "float32")
    got = loss_checks.value(SimilarityPreservingLoss(), TEACHER, scales * TEACHER)
    assert got > 1e-2
    np.testing.assert_allclose(got, reference(TEACHER, scales * TEACHER), rtol=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_formula(seed):
    r = np.random.default_rng(seed)
    teacher = r.normal(size=(5, 4)).astype("float32")
    student = r.normal(size=(5, 7)).astype("float32")
    got = loss_checks.value(SimilarityPreservingLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_feature_maps_are_flattened():
    teacher = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    student = rng.normal(size=(4, 2, 2, 5)).astype("float32")
    got = loss_checks.value(SimilarityPreservingLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_hand_computed_case():
    # Teacher: orthogonal examples, G_t = I. Student: identical examples,
    # G_s rows [1, 1] / sqrt(2). Squared differences: (1 - 1/sqrt 2)^2 on
    # the diagonal, 1/2 off it; summed and divided by B^2 = 4.
    expected = (2 * (1 - 2**-0.5) ** 2 + 2 * 0.5) / 4
    got = loss_checks.value(SimilarityPreservingLoss(), [[1.0, 0.0], [0.0, 1.0]], [[1.0], [1.0]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_returns_one_scalar_per_batch():
    assert SimilarityPreservingLoss()(TEACHER, STUDENT).shape == ()


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(SimilarityPreservingLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradient_finite_for_identical_and_zero_examples(jit_compile):
    student = STUDENT.copy()
    student[1] = student[0]
    student[3] = 0.0
    value, grad = loss_checks.student_value_and_gradient(SimilarityPreservingLoss(), TEACHER, student, jit_compile)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), reference(TEACHER, student), rtol=1e-5)


def test_serialization_round_trip():
    loss_checks.assert_serializable(SimilarityPreservingLoss(name="sp"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(SimilarityPreservingLoss(), TEACHER, STUDENT)


def test_same_value_under_xla():
    loss_checks.assert_same_under_xla(SimilarityPreservingLoss(), TEACHER, STUDENT)


def test_unknown_batch_size_in_graph():
    loss = SimilarityPreservingLoss()
    traced = backend_utils.compiled(lambda t, s: loss(t, s), jit_compile=False, unknown_batch=True)
    teacher = TEACHER.reshape(5, 2, 2)
    np.testing.assert_allclose(
        float(traced(teacher, STUDENT)), reference(teacher, STUDENT), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(traced(teacher[:3], STUDENT[:3])), reference(teacher[:3], STUDENT[:3]), rtol=1e-5
    )


def test_rejects_sample_weight():
    with pytest.raises(ValueError, match="sample_weight"):
        SimilarityPreservingLoss()(TEACHER, STUDENT, sample_weight=np.ones(5, "float32"))


def test_rejects_different_batch_sizes():
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3, 6\)"):
        SimilarityPreservingLoss()(TEACHER, STUDENT[:3])


def test_rejects_different_batch_sizes_when_reused():
    loss = SimilarityPreservingLoss()
    loss(TEACHER, STUDENT)
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(5, 6\)"):
        loss(TEACHER[:4], STUDENT)


def test_rejects_features_without_feature_axis():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        SimilarityPreservingLoss()(TEACHER[:, 0], STUDENT)


def test_default_name_is_keras_style():
    assert SimilarityPreservingLoss().name == "similarity_preserving_loss"
