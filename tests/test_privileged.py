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
