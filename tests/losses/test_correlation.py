import math

import numpy as np
import pytest

from keras_kd.losses.correlation import CorrelationCongruenceLoss, gaussian_correlation
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(5, 4)).astype("float32")
STUDENT = rng.normal(size=(5, 4)).astype("float32")
ROTATION = np.linalg.qr(rng.normal(size=(4, 4)))[0]


def unit_rows(f):
    f = f.reshape(len(f), -1).astype("float64")
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def taylor_kernel(f, gamma, order):
    """Peng et al.'s P-order expansion, term by term, in float64."""
    s = unit_rows(f) @ unit_rows(f).T
    return sum(
        math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * s**p
        for p in range(order + 1)
    )


def exact_kernel(f, gamma):
    """exp(-gamma ||x_i - x_j||^2) of the normalised rows, in float64."""
    u = unit_rows(f)
    return np.exp(-gamma * ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1))


def reference(teacher, student, gamma=0.4, order=2, kernel=None):
    kernel = kernel or (lambda f: taylor_kernel(f, gamma, order))
    return ((kernel(teacher) - kernel(student)) ** 2).sum() / len(teacher) ** 2


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(CorrelationCongruenceLoss(), TEACHER)


def test_zero_for_rescaled_rotated_student():
    # Normalised features: per-example scales and rotations change nothing.
    scales = np.array([[0.3], [2.0], [1.0], [5.0], [0.7]])
    student = (scales * TEACHER @ ROTATION).astype("float32")
    np.testing.assert_allclose(
        loss_checks.value(CorrelationCongruenceLoss(), TEACHER, student), 0.0, atol=1e-7
    )


@pytest.mark.parametrize("gamma, order", [(0.4, 2), (0.4, 1), (1.0, 3), (0.1, 5)])
def test_matches_reference_formula(gamma, order):
    got = loss_checks.value(
        CorrelationCongruenceLoss(gamma=gamma, order=order), TEACHER, STUDENT
    )
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, gamma, order), rtol=1e-5)


def test_feature_maps_are_flattened():
    teacher = rng.normal(size=(4, 2, 2, 3)).astype("float32")
    student = rng.normal(size=(4, 12)).astype("float32")
    got = loss_checks.value(CorrelationCongruenceLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_correlation_matrix_within_taylor_remainder_of_gaussian_kernel():
    gamma = 1.0
    exact = exact_kernel(TEACHER, gamma)
    errors = []
    for order in range(1, 13):
        approx = backend_utils.numpy(gaussian_correlation(TEACHER, gamma, order))
        error = np.abs(approx - exact).max()
        # |exp(-2g) sum_{p>P} (2g s)^p / p!| <= (2g)^(P+1) / (P+1)! for |s| <= 1.
        assert error <= (2 * gamma) ** (order + 1) / math.factorial(order + 1) + 1e-6
        errors.append(error)
    assert all(later < earlier for earlier, later in zip(errors[:5], errors[1:6]))
    assert errors[-1] < 1e-6


def test_loss_approaches_exact_gaussian_kernel_loss_as_order_grows():
    gamma = 1.0
    exact = reference(TEACHER, STUDENT, kernel=lambda f: exact_kernel(f, gamma))
    gaps = [
        abs(loss_checks.value(CorrelationCongruenceLoss(gamma, order), TEACHER, STUDENT) - exact)
        for order in (1, 2, 4, 8, 12)
    ]
    assert gaps[0] > 1e-3 * exact  # the default-like low orders really differ
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:4]))
    np.testing.assert_allclose(gaps[-1], 0.0, atol=1e-5 * exact)


def test_returns_one_scalar_per_batch():
    assert CorrelationCongruenceLoss()(TEACHER, STUDENT).shape == ()


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(
        CorrelationCongruenceLoss(), TEACHER, STUDENT
    )


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradient_finite_for_identical_and_zero_examples(jit_compile):
    student = STUDENT.copy()
    student[1] = student[0]
    student[3] = 0.0
    value, grad = loss_checks.student_value_and_gradient(CorrelationCongruenceLoss(), TEACHER, student, jit_compile)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), reference(TEACHER, student), rtol=1e-5)


def test_serialization_round_trip():
    loss = CorrelationCongruenceLoss(gamma=0.7, order=3, name="cc")
    assert loss.get_config()["gamma"] == 0.7 and loss.get_config()["order"] == 3
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(
        CorrelationCongruenceLoss(), TEACHER, STUDENT
    )


def test_same_value_under_xla():
    loss_checks.assert_same_under_xla(CorrelationCongruenceLoss(order=4), TEACHER, STUDENT)


def test_unknown_batch_size_in_graph():
    loss = CorrelationCongruenceLoss()
    traced = backend_utils.compiled(lambda t, s: loss(t, s), jit_compile=False, unknown_batch=True)
    for batch in (5, 3):
        np.testing.assert_allclose(
            float(traced(TEACHER[:batch], STUDENT[:batch])),
            reference(TEACHER[:batch], STUDENT[:batch]),
            rtol=1e-5,
        )


@pytest.mark.parametrize("gamma", [0, -0.4, "0.4", None])
def test_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        CorrelationCongruenceLoss(gamma=gamma)


@pytest.mark.parametrize("order", [0, -1, 2.0, 2.5, True, "2", None])
def test_rejects_bad_order(order):
    with pytest.raises(ValueError, match="order"):
        CorrelationCongruenceLoss(order=order)


def test_accepts_numpy_integer_order():
    assert CorrelationCongruenceLoss(order=np.int64(3)).get_config()["order"] == 3


def test_rejects_different_feature_sizes_with_connector_hint():
    student = rng.normal(size=(5, 6)).astype("float32")
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(5, 6\).*connector='linear'"):
        CorrelationCongruenceLoss()(TEACHER, student)


def test_rejects_different_feature_sizes_when_reused():
    loss = CorrelationCongruenceLoss()
    loss(TEACHER, STUDENT)
    with pytest.raises(ValueError, match="connector='linear'"):
        loss(TEACHER, rng.normal(size=(5, 6)).astype("float32"))


def test_rejects_different_batch_sizes():
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3, 4\)"):
        CorrelationCongruenceLoss()(TEACHER, STUDENT[:3])


def test_rejects_sample_weight():
    with pytest.raises(ValueError, match="sample_weight"):
        CorrelationCongruenceLoss()(TEACHER, STUDENT, sample_weight=np.ones(5, "float32"))


def test_default_name_is_keras_style():
    assert CorrelationCongruenceLoss().name == "correlation_congruence_loss"
