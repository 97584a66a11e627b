"""Checks every keras_kd loss must pass; each loss's test module calls them."""

import keras
import numpy as np
import tensorflow as tf


def value(loss, teacher, student, **kwargs):
    return float(loss(teacher, student, **kwargs))


def assert_zero_when_equal(loss, features, atol=1e-6):
    """The loss is 0 when the student reproduces the teacher."""
    np.testing.assert_allclose(value(loss, features, features), 0.0, atol=atol)


def assert_gradient_reaches_student_only(loss, teacher, student):
    """Finite, non-zero gradient w.r.t. the student; none w.r.t. the teacher."""
    teacher_vars = tf.nest.map_structure(tf.Variable, teacher)
    student_vars = tf.nest.map_structure(tf.Variable, student)
    with tf.GradientTape(persistent=True) as tape:
        result = loss(teacher_vars, student_vars)
    student_grads = tape.gradient(result, tf.nest.flatten(student_vars))
    teacher_grads = tape.gradient(result, tf.nest.flatten(teacher_vars))
    assert all(g is not None for g in student_grads)
    for grad in student_grads:
        grad = tf.convert_to_tensor(grad)
        assert np.all(np.isfinite(grad.numpy()))
    assert any(float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) > 0 for g in student_grads)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0 for g in teacher_grads)


def assert_serializable(loss, teacher, student):
    """get_config/from_config and keras.saving round trips give the same loss."""
    clone = type(loss).from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    if loss.layer is None:  # learnable losses are compared by their own tests
        np.testing.assert_allclose(
            value(restored, teacher, student), value(loss, teacher, student), rtol=1e-6
        )


def assert_float32_under_float16_inputs(loss, teacher, student):
    """Mixed-precision features are cast up: the result is float32 and close
    to the float32 result."""
    half = tf.nest.map_structure(lambda x: tf.cast(x, "float16"), (teacher, student))
    result = loss(*half)
    assert result.dtype == tf.float32
    reference = loss(*tf.nest.map_structure(lambda x: tf.cast(x, "float32"), half))
    np.testing.assert_allclose(float(result), float(reference), rtol=1e-5, atol=1e-6)


def assert_same_under_xla(loss, teacher, student, rtol=1e-6):
    """The loss compiled with XLA (`jit_compile=True`) gives the eager value."""
    compiled = tf.function(lambda t, s: loss(t, s), jit_compile=True)
    np.testing.assert_allclose(
        float(compiled(teacher, student)), value(loss, teacher, student), rtol=rtol
    )


def student_value_and_gradient(loss, teacher, student, jit_compile=False):
    """(loss, d loss / d student), eagerly-traced or under XLA."""

    @tf.function(jit_compile=jit_compile)
    def value_and_gradient(student):
        with tf.GradientTape() as tape:
            tape.watch(student)
            value = loss(teacher, student)
        return value, tape.gradient(value, student)

    # XLA lowers sqrt's gradient without TF's 0 * inf guard: test both.
    return value_and_gradient(tf.constant(student))

