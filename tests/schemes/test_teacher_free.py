import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from keras_kd.losses import KDLoss
from keras_kd.schemes.teacher_free import VirtualTeacherLoss, self_teacher, virtual_teacher_distiller
from tests import loss_checks
from tests.conftest import mlp, sparse_ce

rng = np.random.default_rng(0)
K = 5
LABELS = np.array([0, 3, 1, 4, 2, 3], "int32")
STUDENT = rng.normal(size=(6, K)).astype("float32")
TEACHER = (np.zeros((6, K), "float32"), LABELS)  # the zero teacher's output is ignored


def reference(labels, student, correct_prob, temperature, num_classes):
    """The authors' loss_kd_regularization term, in float64, summed over
    classes instead of nn.KLDivLoss's mean over classes."""
    p_d = np.full((len(labels), num_classes), (1 - correct_prob) / (num_classes - 1))
    p_d[np.arange(len(labels)), labels] = correct_prob
    target = np.exp(p_d / temperature)
    target /= target.sum(-1, keepdims=True)
    z = student.astype("float64")
    log_q = z - z.max(-1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
    return (target * (np.log(target) - log_q)).sum(-1).mean()


@pytest.mark.parametrize("correct_prob, temperature", [(0.9, 20.0), (0.99, 1.0), (0.5, 4.0)])
def test_matches_reference_formula(correct_prob, temperature):
    loss = VirtualTeacherLoss(K, correct_prob=correct_prob, temperature=temperature)
    expected = reference(LABELS, STUDENT, correct_prob, temperature, K)
    np.testing.assert_allclose(loss_checks.value(loss, TEACHER, STUDENT), expected, rtol=1e-5)


def test_one_hot_labels_give_the_same_value():
    loss = VirtualTeacherLoss(K)
    one_hot = np.eye(K, dtype="float32")[LABELS]
    np.testing.assert_allclose(
        loss_checks.value(loss, (TEACHER[0], one_hot), STUDENT), loss_checks.value(loss, TEACHER, STUDENT), rtol=1e-6
    )


def test_minimal_with_zero_gradient_at_the_softened_virtual_distribution():
    loss = VirtualTeacherLoss(K, correct_prob=0.9, temperature=20.0)
    target = loss.virtual_distribution(LABELS).numpy()
    assert np.allclose(target.sum(-1), 1.0) and np.all(target.argmax(-1) == LABELS)
    at_minimum = np.log(target) + 3.0  # logits are defined up to a constant
    value, gradient = loss_checks.student_value_and_gradient(loss, TEACHER, at_minimum)
    np.testing.assert_allclose(float(value), 0.0, atol=1e-6)
    np.testing.assert_allclose(gradient, 0.0, atol=1e-7)  # NumPy from loss_checks
    assert loss_checks.value(loss, TEACHER, at_minimum + 0.1 * STUDENT) > 1e-4


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(VirtualTeacherLoss(K), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss = VirtualTeacherLoss(K, correct_prob=0.95, temperature=10.0, name="virtual")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 2.0}, "num_classes"),
        ({"num_classes": K, "correct_prob": 1.0}, "correct_prob"),
        ({"num_classes": K, "correct_prob": 1.0 / K}, "correct_prob"),
        ({"num_classes": K, "correct_prob": 0.1}, "correct_prob"),
        ({"num_classes": K, "correct_prob": 0.0}, "correct_prob"),
        ({"num_classes": K, "temperature": 0.0}, "temperature"),
        ({"num_classes": K, "temperature": -2.0}, "temperature"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VirtualTeacherLoss(**kwargs)


def test_wrong_number_of_classes_is_reported():
    with pytest.raises(ValueError, match="num_classes=5"):
        VirtualTeacherLoss(K)((np.zeros((2, 3), "float32"), [0, 1]), np.zeros((2, 3), "float32"))


def test_virtual_teacher_distiller_fits_logs_and_saves(digits, tmp_path):
    x, y = digits
    student = mlp(16, "student")
    distiller = virtual_teacher_distiller(student)
    assert distiller.teacher is not student and not distiller.teacher.trainable
    assert distiller.terms[0].weight == pytest.approx(1.0) and distiller.student_loss_weight == pytest.approx(0.9)
    np.testing.assert_array_equal(distiller.teacher.predict(x[:4], verbose=0), np.zeros((4, 10)))
    distiller.compile("adam", sparse_ce())
    before = [np.array(v) for v in student.trainable_weights]
    history = distiller.fit(x[:512], y[:512], epochs=1, batch_size=128, verbose=0).history
    assert np.isfinite(history["virtual_teacher_loss"][0]) and history["virtual_teacher_loss"][0] > 0
    assert any(not np.array_equal(b, np.array(a)) for b, a in zip(before, student.trainable_weights))
    expected = distiller.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    distiller.save(tmp_path / "tf_kd_reg.keras")
    restored = keras.saving.load_model(tmp_path / "tf_kd_reg.keras")
    assert isinstance(restored.terms[0].loss, VirtualTeacherLoss)
    got = restored.evaluate(x[:256], y[:256], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)


def test_self_teacher_is_a_frozen_copy_that_stays_fixed(digits):
    x, y = digits
    pretrained = mlp(16, "student")
    pretrained.compile("adam", sparse_ce())
    pretrained.fit(x[:512], y[:512], epochs=1, batch_size=128, verbose=0)
    teacher = self_teacher(pretrained)
    assert teacher is not pretrained and teacher.name == "student_teacher" and not teacher.trainable
    assert not {id(v) for v in teacher.weights} & {id(v) for v in pretrained.weights}
    np.testing.assert_array_equal(teacher.predict(x[:64], verbose=0), pretrained.predict(x[:64], verbose=0))

    before = [np.array(v) for v in teacher.weights]
    keras.utils.set_random_seed(2)
    fresh = mlp(16, "student")  # the same architecture, new weights
    distiller = keras_kd.Distiller(
        teacher, fresh, [keras_kd.Term(KDLoss(temperature=20.0), weight=0.95 / 10)], student_loss_weight=0.05
    )
    distiller.compile("adam", sparse_ce())
    history = distiller.fit(x[:512], y[:512], epochs=1, batch_size=128, verbose=0).history
    assert history["kd_loss"][0] > 0
    for b, a in zip(before, teacher.weights):
        np.testing.assert_array_equal(np.array(a), b)
    assert tf.reduce_any(tf.not_equal(fresh(x[:8]), teacher(x[:8])))
