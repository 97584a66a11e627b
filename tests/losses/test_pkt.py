import numpy as np
import pytest

from keras_kd.losses.pkt import PKTLoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(5, 4)).astype("float32")
STUDENT = rng.normal(size=(5, 6)).astype("float32")
# Rows orthonormal: x -> x @ EMBED keeps every cosine (4 -> 6 dims).
EMBED = np.linalg.qr(rng.normal(size=(6, 6)))[0][:4]


def reference(teacher, student, eps=1e-7):
    """Passalis & Tefas's loss in float64, example by example."""

    def conditional(f):
        f = f.reshape(len(f), -1).astype("float64")
        n = len(f)
        p = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                ui = f[i] / (np.linalg.norm(f[i]) + eps)
                uj = f[j] / (np.linalg.norm(f[j]) + eps)
                p[i, j] = (ui @ uj + 1) / 2
        return p / p.sum(axis=1, keepdims=True)

    p_t, p_s = conditional(teacher), conditional(student)
    return (p_t * np.log((p_t + eps) / (p_s + eps))).mean()


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(PKTLoss(), TEACHER)


def test_zero_for_rescaled_rotated_student_of_other_width():
    # Cosine similarities ignore per-example scales and rotations.
    scales = np.array([[0.3], [2.0], [1.0], [5.0], [0.7]])
    student = (scales * TEACHER @ EMBED).astype("float32")
    np.testing.assert_allclose(loss_checks.value(PKTLoss(), TEACHER, student), 0.0, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_formula(seed):
    r = np.random.default_rng(seed)
    teacher = r.normal(size=(5, 4)).astype("float32")
    student = r.normal(size=(5, 7)).astype("float32")
    got = loss_checks.value(PKTLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_eps_enters_the_formula():
    eps = 0.05
    got = loss_checks.value(PKTLoss(eps=eps), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, eps), rtol=1e-5)
    assert abs(got - reference(TEACHER, STUDENT)) > 1e-4


def test_feature_maps_are_flattened():
    teacher = rng.normal(size=(4, 2, 2, 3)).astype("float32")
    student = rng.normal(size=(4, 3, 3, 1)).astype("float32")
    got = loss_checks.value(PKTLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_returns_one_scalar_per_batch():
    assert PKTLoss()(TEACHER, STUDENT).shape == ()


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(PKTLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradient_finite_for_identical_and_zero_examples(jit_compile):
    student = STUDENT.copy()
    student[1] = student[0]
    student[3] = 0.0
    value, grad = loss_checks.student_value_and_gradient(PKTLoss(), TEACHER, student, jit_compile)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(value), reference(TEACHER, student), rtol=1e-5)


def test_nan_example_counts_as_zero_like_the_reference():
    student = STUDENT.copy()
    student[2] = np.nan
    zeroed = STUDENT.copy()
    zeroed[2] = 0.0
    got = loss_checks.value(PKTLoss(), TEACHER, student)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, reference(TEACHER, zeroed), rtol=1e-5)


def test_serialization_round_trip():
    loss = PKTLoss(eps=1e-5, name="pkt")
    assert loss.get_config()["eps"] == 1e-5
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(PKTLoss(), TEACHER, STUDENT)


def test_same_value_under_xla():
    loss_checks.assert_same_under_xla(PKTLoss(), TEACHER, STUDENT)


def test_unknown_batch_size_in_graph():
    loss = PKTLoss()
    traced = backend_utils.compiled(lambda t, s: loss(t, s), jit_compile=False, unknown_batch=True)
    for batch in (5, 3):
        np.testing.assert_allclose(
            float(traced(TEACHER[:batch], STUDENT[:batch])),
            reference(TEACHER[:batch], STUDENT[:batch]),
            rtol=1e-5,
        )


@pytest.mark.parametrize("eps", [0, -1e-7, "1e-7", None, True])
def test_rejects_bad_eps(eps):
    with pytest.raises(ValueError, match="eps"):
        PKTLoss(eps=eps)


def test_rejects_different_batch_sizes():
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3, 6\)"):
        PKTLoss()(TEACHER, STUDENT[:3])


def test_rejects_sample_weight():
    with pytest.raises(ValueError, match="sample_weight"):
        PKTLoss()(TEACHER, STUDENT, sample_weight=np.ones(5, "float32"))


def test_default_name_is_keras_style():
    assert PKTLoss().name == "pkt_loss"
