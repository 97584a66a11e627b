import keras
import numpy as np
import pytest

from keras_kd.losses.dist import DISTLoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(6, 5)).astype("float32") * 2
STUDENT = rng.normal(size=(6, 5)).astype("float32") * 2


def reference(teacher, student, beta, gamma, tau):
    """The authors' dist_kd.py, in float64."""

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def pearson(a, b):  # along axis 1, eps in the denominator
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return (a * b).sum(1) / (norms + 1e-8)

    y_s = softmax(student.astype("float64") / tau)
    y_t = softmax(teacher.astype("float64") / tau)
    inter = 1 - pearson(y_s, y_t).mean()
    intra = 1 - pearson(y_s.T, y_t.T).mean()
    return tau**2 * (beta * inter + gamma * intra)


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(DISTLoss(), TEACHER, atol=1e-5)
    loss_checks.assert_zero_when_equal(DISTLoss(temperature=4.0), TEACHER, atol=1e-4)


def test_invariant_to_logit_shift_but_not_to_permutation():
    # Softmax ignores a per-example constant shift; correlation ignores nothing else.
    shifted = TEACHER + rng.normal(size=(6, 1)).astype("float32")
    np.testing.assert_allclose(loss_checks.value(DISTLoss(), TEACHER, shifted), 0.0, atol=1e-5)
    assert loss_checks.value(DISTLoss(), TEACHER, TEACHER[:, ::-1]) > 0.1


@pytest.mark.parametrize(
    "beta, gamma, temperature", [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0), (1.0, 0.0, 1.0), (0.0, 3.0, 2.0)]
)
def test_matches_reference_formula(beta, gamma, temperature):
    got = loss_checks.value(DISTLoss(beta, gamma, temperature), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, beta, gamma, temperature), rtol=1e-5)


def test_hand_computed_case():
    # Two classes, tau = 1. Rows: teacher softmax [[.8, .2], [.4, .6]], student
    # [[.2, .8], [.6, .4]]. Each centred row pair is anti-parallel (rho = -1),
    # and each class column too: inter = intra = 2, loss = 4 with beta = gamma = 1.
    teacher = np.log(np.array([[0.8, 0.2], [0.4, 0.6]], "float32"))
    student = np.log(np.array([[0.2, 0.8], [0.6, 0.4]], "float32"))
    np.testing.assert_allclose(loss_checks.value(DISTLoss(), teacher, student), 4.0, rtol=1e-5)
    got = loss_checks.value(DISTLoss(beta=0.5, gamma=0.0, temperature=1.0), teacher, student)
    np.testing.assert_allclose(got, 1.0, rtol=1e-5)


def test_batch_of_one_has_constant_intra_term_and_finite_gradient():
    # Centred columns are zero: rho = 0 / (0 + eps) = 0, intra = 1 as in the reference.
    teacher, student = TEACHER[:1], STUDENT[:1]
    got = loss_checks.value(DISTLoss(beta=0.0, gamma=1.0), teacher, student)
    np.testing.assert_allclose(got, 1.0, rtol=1e-6)
    loss_checks.assert_gradient_reaches_student_only(DISTLoss(), teacher, student)


def test_segmentation_maps_are_flattened_to_rows():
    teacher = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    student = rng.normal(size=(2, 3, 3, 4)).astype("float32")
    got = loss_checks.value(DISTLoss(), teacher, student)
    expected = reference(teacher.reshape(-1, 4), student.reshape(-1, 4), 1.0, 1.0, 1.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_rejects_sample_weight():
    with pytest.raises(ValueError, match="sample_weight"):
        DISTLoss()(TEACHER, STUDENT, sample_weight=np.ones(6, "float32"))


def test_returns_a_scalar():
    assert tuple(DISTLoss()(TEACHER, STUDENT).shape) == ()
    assert DISTLoss.per_sample is False


def test_same_value_under_xla():
    loss = DISTLoss(temperature=4.0)
    compiled = backend_utils.compiled(lambda t, s: loss(t, s))
    np.testing.assert_allclose(
        float(compiled(TEACHER, STUDENT)), loss_checks.value(loss, TEACHER, STUDENT), rtol=1e-6
    )
    np.testing.assert_allclose(
        float(compiled(TEACHER, STUDENT)), reference(TEACHER, STUDENT, 1, 1, 4.0), rtol=1e-5
    )


def test_temperature_variable_changes_value_without_new_loss():
    temperature = keras.Variable(1.0, trainable=False)
    loss = DISTLoss(temperature=temperature)
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT), reference(TEACHER, STUDENT, 1, 1, 1.0), rtol=1e-5
    )
    temperature.assign(4.0)
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT), reference(TEACHER, STUDENT, 1, 1, 4.0), rtol=1e-5
    )
    assert loss.get_config()["temperature"] == 4.0


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(DISTLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss = DISTLoss(beta=2.0, gamma=0.5, temperature=4.0, name="dist")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    assert loss.get_config()["gamma"] == 0.5


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(DISTLoss(), TEACHER, STUDENT)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": -1.0}, "beta"),
        ({"beta": "1"}, "beta"),
        ({"gamma": -0.5}, "gamma"),
        ({"gamma": None}, "gamma"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"temperature": [1.0]}, "temperature"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DISTLoss(**kwargs)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((4, 10), (4, 5)), ((4, 5), (3, 5)), ((4, 2, 5), (4, 5)), ((4,), (4,))],
)
def test_rejects_mismatched_shapes(teacher_shape, student_shape):
    with pytest.raises(ValueError) as info:
        DISTLoss()(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))
    assert str(teacher_shape) in str(info.value) and str(student_shape) in str(info.value)


def test_default_name_is_keras_style():
    assert DISTLoss().name == "dist_loss"
