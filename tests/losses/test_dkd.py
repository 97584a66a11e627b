import keras
import numpy as np
import pytest
from keras import ops

from keras_kd.losses.dkd import DKDLoss
from tests import backend_utils, loss_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(6, 5)).astype("float32") * 3
STUDENT = rng.normal(size=(6, 5)).astype("float32") * 3
LABELS = np.array([0, 3, 1, 4, 2, 3], "int32")
ONE_HOT = np.eye(5, dtype="float32")[LABELS]


def reference(teacher, student, labels, alpha, beta, temperature):
    """mdistiller's dkd_loss, step by step, in float64."""

    def softmax(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    t, s = teacher.astype("float64") / temperature, student.astype("float64") / temperature
    gt = np.eye(t.shape[1])[labels]
    p, q = softmax(t), softmax(s)
    bp = np.stack([(p * gt).sum(1), (p * (1 - gt)).sum(1)], 1)
    bq = np.stack([(q * gt).sum(1), (q * (1 - gt)).sum(1)], 1)
    tckd = (bp * (np.log(bp) - np.log(bq))).sum(1)
    p2, q2 = softmax(t - 1000.0 * gt), softmax(s - 1000.0 * gt)
    with np.errstate(divide="ignore", invalid="ignore"):
        nckd = np.where(p2 > 0, p2 * (np.log(p2) - np.log(q2)), 0.0).sum(1)
    per_example = (alpha * tckd + beta * nckd) * temperature**2
    return per_example.mean(), per_example


def test_zero_when_student_matches_teacher():
    np.testing.assert_allclose(
        loss_checks.value(DKDLoss(), (TEACHER, LABELS), TEACHER), 0.0, atol=1e-6
    )


@pytest.mark.parametrize(
    "alpha, beta, temperature", [(1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (2.0, 0.0, 2.0), (0.0, 3.0, 10.0)]
)
def test_matches_reference_formula(alpha, beta, temperature):
    got = loss_checks.value(
        DKDLoss(alpha=alpha, beta=beta, temperature=temperature), (TEACHER, LABELS), STUDENT
    )
    expected, _ = reference(TEACHER, STUDENT, LABELS, alpha, beta, temperature)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_hand_computed_case():
    # T = 1, target class 0. Teacher softmax [1/2, 1/4, 1/4], student [1/4, 1/4, 1/2].
    # TCKD = KL([1/2, 1/2] || [1/4, 3/4]); NCKD = KL([1/2, 1/2] || [1/3, 2/3]).
    # Arrays, not lists: base.py reads the teacher's shape before converting it.
    teacher = np.array([[np.log(2.0), 0.0, 0.0]], "float32")
    student = np.array([[0.0, 0.0, np.log(2.0)]], "float32")
    tckd = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    nckd = 0.5 * np.log(0.5 / (1 / 3)) + 0.5 * np.log(0.5 / (2 / 3))
    got = loss_checks.value(DKDLoss(alpha=1.0, beta=1.0, temperature=1.0), (teacher, [0]), student)
    np.testing.assert_allclose(got, tckd + nckd, rtol=1e-6)
    got = loss_checks.value(DKDLoss(alpha=2.0, beta=0.0, temperature=1.0), (teacher, [0]), student)
    np.testing.assert_allclose(got, 2 * tckd, rtol=1e-6)


@pytest.mark.parametrize(
    "labels", [LABELS, LABELS[:, None], ONE_HOT, LABELS.astype("float32"), ops.convert_to_tensor(LABELS)]
)
def test_label_formats_give_the_same_value(labels):
    got = loss_checks.value(DKDLoss(), (TEACHER, labels), STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, LABELS, 1.0, 8.0, 4.0)[0], rtol=1e-5)


def test_smoothed_one_hot_uses_argmax():
    smoothed = ONE_HOT * 0.9 + 0.1 / 5
    got = loss_checks.value(DKDLoss(), (TEACHER, smoothed), STUDENT)
    np.testing.assert_allclose(got, loss_checks.value(DKDLoss(), (TEACHER, LABELS), STUDENT), rtol=1e-6)


def test_labels_matter():
    other = (LABELS + 1) % 5
    a = loss_checks.value(DKDLoss(), (TEACHER, LABELS), STUDENT)
    b = loss_checks.value(DKDLoss(), (TEACHER, other), STUDENT)
    assert abs(a - b) > 1e-3


def test_sample_weight_weights_examples():
    weights = np.array([0, 0, 1, 0, 0, 0], "float32")
    got = loss_checks.value(DKDLoss(), (TEACHER, LABELS), STUDENT, sample_weight=weights)
    _, per_example = reference(TEACHER, STUDENT, LABELS, 1.0, 8.0, 4.0)
    np.testing.assert_allclose(got, per_example[2] / 6, rtol=1e-5)


def test_confident_student_stays_finite():
    # The reference's log(sum of probabilities) is log(0) here; log space is not.
    teacher = np.array([[0.0, 0.0, 0.0]], "float32")
    student = np.array([[200.0, 0.0, 0.0]], "float32")
    got = loss_checks.value(DKDLoss(temperature=1.0), (teacher, [0]), student)
    assert np.isfinite(got) and got > 100


def test_same_value_under_xla():
    loss = DKDLoss()
    compiled = backend_utils.compiled(lambda t, y, s: loss((t, y), s))
    eager = loss_checks.value(loss, (TEACHER, LABELS), STUDENT)
    np.testing.assert_allclose(float(compiled(TEACHER, LABELS, STUDENT)), eager, rtol=1e-6)
    np.testing.assert_allclose(float(compiled(TEACHER, ONE_HOT, STUDENT)), eager, rtol=1e-6)


def test_temperature_variable_changes_value_without_new_loss():
    temperature = keras.Variable(1.0, trainable=False)
    loss = DKDLoss(temperature=temperature)
    first = loss_checks.value(loss, (TEACHER, LABELS), STUDENT)
    temperature.assign(4.0)
    np.testing.assert_allclose(first, reference(TEACHER, STUDENT, LABELS, 1, 8, 1.0)[0], rtol=1e-5)
    np.testing.assert_allclose(
        loss_checks.value(loss, (TEACHER, LABELS), STUDENT),
        reference(TEACHER, STUDENT, LABELS, 1, 8, 4.0)[0],
        rtol=1e-5,
    )
    assert loss.get_config()["temperature"] == 4.0


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(DKDLoss(), (TEACHER, LABELS), STUDENT)


def test_serialization_round_trip():
    loss = DKDLoss(alpha=0.5, beta=6.0, temperature=2.0, name="dkd")
    loss_checks.assert_serializable(loss, (TEACHER, LABELS), STUDENT)
    assert loss.get_config()["beta"] == 6.0


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(DKDLoss(), (TEACHER, LABELS), STUDENT)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": "1"}, "alpha"),
        ({"beta": -0.1}, "beta"),
        ({"beta": None}, "beta"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -4.0}, "temperature"),
        ({"temperature": True}, "temperature"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DKDLoss(**kwargs)


def test_zero_weights_are_allowed():
    assert loss_checks.value(DKDLoss(alpha=0.0, beta=0.0), (TEACHER, LABELS), STUDENT) == 0.0


@pytest.mark.parametrize("teacher_shape, student_shape", [((2, 10), (2, 5)), ((2, 3, 4), (2, 3, 4)), ((2, 1), (2, 1))])
def test_rejects_mismatched_shapes(teacher_shape, student_shape):
    teacher = np.zeros(teacher_shape, "float32")
    with pytest.raises(ValueError) as info:
        DKDLoss()((teacher, np.zeros(2, "int32")), np.zeros(student_shape, "float32"))
    assert str(teacher_shape) in str(info.value) and str(student_shape) in str(info.value)


def test_rejects_bad_label_shape():
    with pytest.raises(ValueError, match=r"\(6, 3\)"):
        DKDLoss()((TEACHER, np.zeros((6, 3), "float32")), STUDENT)


def test_requires_labels_and_default_name():
    assert DKDLoss.requires_labels and DKDLoss.per_sample
    assert DKDLoss().name == "dkd_loss"
