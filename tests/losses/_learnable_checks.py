"""Checks shared by the tests of the losses that own weights (VID, factor
transfer, CRD)."""

import keras
import numpy as np

from tests import backend_utils


class Holder(keras.Model):
    """Tracks a loss's layer as an attribute, as the Distiller does."""

    def __init__(self, head, **kwargs):
        super().__init__(**kwargs)
        self.head = head
        self.built = True

    def call(self, inputs):
        return inputs


def assert_builds_weights(make_loss, teacher_shape, student_shape):
    """All weights exist right after `build`, before any call, and a second
    build with the same shapes keeps the same layer."""
    loss = make_loss()
    assert loss.layer is None
    loss.build(teacher_shape, student_shape)
    assert loss.layer is not None and loss.layer.built
    assert len(loss.layer.weights) > 0
    layer, count = loss.layer, len(loss.layer.weights)
    loss.build(teacher_shape, student_shape)
    assert loss.layer is layer and len(layer.weights) == count
    return loss


def perturb_trainable(layer, seed=0):
    rng = np.random.default_rng(seed)
    for weight in layer.trainable_weights:
        weight.assign(weight.numpy() + rng.normal(scale=0.1, size=weight.shape).astype("float32"))


def assert_weights_round_trip(make_loss, teacher, student, path, warm_up=True):
    """A model tracking `loss.layer` saves its weights; a fresh loss built
    from the same config and shapes loads them and gives the same value,
    while an unloaded fresh loss does not."""
    shapes = ((None,) + teacher.shape[1:], (None,) + student.shape[1:])
    loss = make_loss()
    loss.build(*shapes)
    if warm_up:  # stateful losses: save state reached by a call
        loss(teacher, student)
    perturb_trainable(loss.layer)
    Holder(loss.layer).save_weights(str(path))
    expected = float(loss(teacher, student))

    restored = type(loss).from_config(loss.get_config())
    restored.build(*shapes)
    Holder(restored.layer).load_weights(str(path))
    np.testing.assert_allclose(float(restored(teacher, student)), expected, rtol=1e-5, atol=1e-6)

    unloaded = type(loss).from_config(loss.get_config())
    unloaded.build(*shapes)
    assert not np.isclose(float(unloaded(teacher, student)), expected, rtol=1e-4)


def assert_jit_compiles(loss, teacher, student):
    """The loss (state updates included) runs compiled (XLA on TensorFlow
    and JAX) and gives a finite value, which it returns."""
    fn = backend_utils.compiled(lambda t, s: loss(t, s), variables=loss.layer.variables if loss.layer else ())
    value = float(backend_utils.numpy(fn(teacher, student)))
    assert np.isfinite(value)
    return value
