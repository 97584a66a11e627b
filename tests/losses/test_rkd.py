import numpy as np
import pytest

from keras_kd.losses.rkd import RKDLoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(5, 4)).astype("float32")
STUDENT = rng.normal(size=(5, 6)).astype("float32")
# Rows orthonormal: x -> x @ EMBED keeps every distance and angle (4 -> 6 dims).
EMBED = np.linalg.qr(rng.normal(size=(6, 6)))[0][:4]


def huber_mean(a, b):
    z = np.abs(a - b)
    return np.where(z < 1, 0.5 * z**2, z - 0.5).mean()


def distance_potential(x):
    """Park et al.'s psi_D, pair by pair, in float64."""
    x = x.reshape(len(x), -1).astype("float64")
    n = len(x)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                d[i, j] = max(np.linalg.norm(x[i] - x[j]), 1e-6)
    return d / d[~np.eye(n, dtype=bool)].mean()


def angle_potential(x):
    """Park et al.'s psi_A: cosine of the angle j-i-k of every triplet."""
    x = x.reshape(len(x), -1).astype("float64")
    n = len(x)
    a = np.zeros((n, n, n))
    for i in range(n):
        for j in range(n):
            for k in range(n):
                u, v = x[j] - x[i], x[k] - x[i]
                nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                if nu > 0 and nv > 0:
                    a[i, j, k] = u @ v / (nu * nv)
    return a


def reference(teacher, student, distance_weight=25.0, angle_weight=50.0):
    return distance_weight * huber_mean(
        distance_potential(student), distance_potential(teacher)
    ) + angle_weight * huber_mean(angle_potential(student), angle_potential(teacher))


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(RKDLoss(), TEACHER, atol=1e-5)


def test_zero_for_scaled_rotated_translated_student_of_other_width():
    student = (0.3 * TEACHER @ EMBED + rng.normal(size=6)).astype("float32")
    np.testing.assert_allclose(loss_checks.value(RKDLoss(), TEACHER, student), 0.0, atol=1e-5)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_reference_formula(seed):
    r = np.random.default_rng(seed)
    teacher = r.normal(size=(5, 4)).astype("float32")
    student = (3.0 * r.normal(size=(5, 7))).astype("float32")
    got = loss_checks.value(RKDLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


@pytest.mark.parametrize("distance_weight, angle_weight", [(1.0, 0.0), (0.0, 1.0), (2.0, 0.5)])
def test_term_weights(distance_weight, angle_weight):
    loss = RKDLoss(distance_weight=distance_weight, angle_weight=angle_weight)
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT),
        reference(TEACHER, STUDENT, distance_weight, angle_weight),
        rtol=1e-5,
    )


def test_large_distance_gaps_use_the_linear_branch():
    # An outlier gives normalised distance gaps beyond 1 (|z| - 1/2 branch).
    student = STUDENT.copy()
    student[0] += 40.0
    gap = np.abs(distance_potential(student) - distance_potential(TEACHER)).max()
    assert gap > 1.0
    got = loss_checks.value(RKDLoss(angle_weight=0.0), TEACHER, student)
    np.testing.assert_allclose(got, reference(TEACHER, student, 25.0, 0.0), rtol=1e-5)


def test_feature_maps_are_flattened():
    teacher = rng.normal(size=(4, 2, 2, 3)).astype("float32")
    student = rng.normal(size=(4, 3, 3, 1)).astype("float32")
    got = loss_checks.value(RKDLoss(), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_returns_one_scalar_per_batch():
    assert RKDLoss()(TEACHER, STUDENT).shape == ()


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(RKDLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_gradient_finite_when_two_examples_are_identical(jit_compile):
    student = STUDENT.copy()
    student[1] = student[0]
    teacher = TEACHER.copy()
    teacher[3] = teacher[2]
    value, grad = loss_checks.student_value_and_gradient(RKDLoss(), teacher, student, jit_compile)
    assert np.all(np.isfinite(grad))
    assert np.abs(grad).max() > 0
    np.testing.assert_allclose(float(value), reference(teacher, student), rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_batch_of_one_gives_zero_not_nan(jit_compile):
    value, grad = loss_checks.student_value_and_gradient(RKDLoss(), TEACHER[:1], STUDENT[:1], jit_compile)
    assert float(value) == 0.0
    assert np.all(np.isfinite(grad))


def test_serialization_round_trip():
    loss = RKDLoss(distance_weight=1.0, angle_weight=2.0, name="rkd")
    config = loss.get_config()
    assert config["distance_weight"] == 1.0 and config["angle_weight"] == 2.0
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(RKDLoss(), TEACHER, STUDENT)


def test_same_value_under_xla():
    loss_checks.assert_same_under_xla(RKDLoss(), TEACHER, STUDENT)


def test_unknown_batch_size_in_graph():
    loss = RKDLoss()
    traced = backend_utils.compiled(lambda t, s: loss(t, s), jit_compile=False, unknown_batch=True)
    for batch in (5, 3):
        np.testing.assert_allclose(
            float(traced(TEACHER[:batch], STUDENT[:batch])),
            reference(TEACHER[:batch], STUDENT[:batch]),
            rtol=1e-5,
        )


@pytest.mark.parametrize("argument", ["distance_weight", "angle_weight"])
@pytest.mark.parametrize("value", [-1.0, "25", None, True])
def test_rejects_bad_weights(argument, value):
    with pytest.raises(ValueError, match=argument):
        RKDLoss(**{argument: value})


def test_rejects_different_batch_sizes():
    with pytest.raises(ValueError, match=r"\(5, 4\).*\(3, 6\)"):
        RKDLoss()(TEACHER, STUDENT[:3])


def test_rejects_sample_weight():
    with pytest.raises(ValueError, match="sample_weight"):
        RKDLoss()(TEACHER, STUDENT, sample_weight=np.ones(5, "float32"))


def test_default_name_is_keras_style():
    assert RKDLoss().name == "rkd_loss"
