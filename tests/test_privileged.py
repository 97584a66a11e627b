"""Teacher and student with different inputs: dict batches, each model
reading the inputs it names (privileged-feature / cross-modal distillation)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from tests.conftest import sparse_ce


def models():
    online, offline = keras.Input((32,), name="online"), keras.Input((32,), name="offline")
    teacher = keras.Model(
        [online, offline], keras.layers.Dense(10)(keras.layers.Concatenate()([online, offline])), name="teacher"
    )
    student_input = keras.Input((32,), name="online")
    student = keras.Model(student_input, keras.layers.Dense(10)(student_input), name="student")
    return teacher, student


def batches(digits):
    x, y = digits
    return {"online": x[:256, :32], "offline": x[:256, 32:]}, y[:256]


def test_each_model_reads_its_own_inputs(digits):
    teacher, student = models()
    features, y = batches(digits)
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()])
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    dataset = tf.data.Dataset.from_tensor_slices((features, y)).batch(64)
    history = distiller.fit(dataset, epochs=1, verbose=0).history
    assert {"kd_loss", "student_loss"} <= set(history)
    logs = distiller.evaluate(dataset, return_dict=True, verbose=0)
    expected = keras_kd.losses.KDLoss()(
        teacher.predict([features["online"], features["offline"]], verbose=0),
        student.predict(features["online"], verbose=0),
    )
    assert logs["kd_loss"] == pytest.approx(float(expected), rel=1e-4)
    # The Distiller predicts with the student on the same dict batches.
    np.testing.assert_allclose(
        distiller.predict(features, verbose=0), student.predict(features["online"], verbose=0), atol=1e-5
    )


def test_a_missing_input_is_named(digits):
    teacher, student = models()
    features, y = batches(digits)
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()])
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    with pytest.raises(ValueError, match=r"teacher 'teacher' takes inputs \['online', 'offline'\].*missing \['offline'\]"):
        distiller.fit(tf.data.Dataset.from_tensor_slices(({"online": features["online"]}, y)).batch(64), verbose=0)


def test_privileged_example_runs():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import privileged_features

    results = privileged_features.main(epochs=1, limit=200)
    assert set(results) == {"teacher (both halves)", "student, top half, scratch", "student, top half, distilled"}


def test_privileged_example_uses_generalized_distillation(digits):
    """Lopez-Paz et al.'s objective (their code/mnist.py): the teacher softened by T, the student NOT,
    (1 - lambda) * CE + lambda * T^2 * KL(softmax(t / T) || softmax(s)); Hinton's KD would soften both."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import privileged_features

    teacher, student = models()
    features, y = batches(digits)
    distiller = privileged_features.generalized_distiller(teacher, student, temperature=4.0, imitation=0.7)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    logs = distiller.evaluate(features, y, batch_size=256, return_dict=True, verbose=0)
    t = teacher.predict([features["online"], features["offline"]], verbose=0).astype("float64")
    s = student.predict(features["online"], verbose=0).astype("float64")

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_p_t, log_p_s = log_softmax(t / 4.0), log_softmax(s)
    kl = np.mean(np.sum(np.exp(log_p_t) * (log_p_t - log_p_s), -1))
    ce = -np.mean(log_p_s[np.arange(len(y)), y])
    assert logs["loss"] == pytest.approx(0.3 * ce + 0.7 * 16.0 * kl, rel=1e-4)
