"""Checks every keras_kd loss must pass; each loss's test module calls them.
They run on the Keras backend of the process (see `backend_utils`)."""

import keras
import numpy as np
from keras import ops

from tests import backend_utils


def value(loss, teacher, student, **kwargs):
    return float(backend_utils.numpy(loss(teacher, student, **kwargs)))


def assert_zero_when_equal(loss, features, atol=1e-6):
    """The loss is 0 when the student reproduces the teacher."""
    np.testing.assert_allclose(value(loss, features, features), 0.0, atol=atol)


def assert_gradient_reaches_student_only(loss, teacher, student):
    """Finite, non-zero gradient w.r.t. the student; none w.r.t. the teacher
    (integer leaves of the teacher side, such as labels, are not differentiated)."""
    _, (teacher_grads, student_grads), _ = backend_utils.value_and_grad(
        lambda t, s: loss(t, s), (teacher, student)
    )
    student_grads = keras.tree.flatten(student_grads)
    assert student_grads and all(np.all(np.isfinite(g)) for g in student_grads)
    assert any(np.abs(g).max() > 0 for g in student_grads)
    for grad in keras.tree.flatten(teacher_grads):
        assert grad is None or np.abs(grad).max() == 0


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


def cast(structure, dtype):
    """Every floating leaf of a nest cast to `dtype` (integer labels stay)."""

    def cast_leaf(x):
        x = ops.convert_to_tensor(x)
        return ops.cast(x, dtype) if keras.backend.is_float_dtype(x.dtype) else x

    return keras.tree.map_structure(cast_leaf, structure)


def assert_float32_under_float16_inputs(loss, teacher, student):
    """Mixed-precision features are cast up: the result is float32 and close
    to the float32 result."""
    half = cast((teacher, student), "float16")
    result = loss(*half)
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    reference = loss(*cast(half, "float32"))
    np.testing.assert_allclose(
        float(backend_utils.numpy(result)), float(backend_utils.numpy(reference)), rtol=1e-5, atol=1e-6
    )


def assert_same_under_xla(loss, teacher, student, rtol=1e-6, unknown_batch=False):
    """The loss compiled as the backend's trainer compiles a step (XLA on
    TensorFlow and JAX) gives the eager value; `unknown_batch`: traced with
    a None batch dimension on TensorFlow."""
    compiled = backend_utils.compiled(lambda t, s: loss(t, s), unknown_batch=unknown_batch)
    np.testing.assert_allclose(
        float(backend_utils.numpy(compiled(teacher, student))), value(loss, teacher, student), rtol=rtol
    )


def student_value_and_gradient(loss, teacher, student, jit_compile=False):
    """(loss, d loss / d student) as NumPy, eagerly or compiled (XLA on
    TensorFlow and JAX)."""
    # XLA lowers sqrt's gradient without TF's 0 * inf guard: test both.
    value, (grad,), _ = backend_utils.value_and_grad(
        lambda s: loss(teacher, s), (student,), jit_compile=jit_compile
    )
    return value, grad
