"""Helpers shared by the losses that own weights (VID, factor transfer, CRD)."""

import keras

from keras_kd.losses.base import DistillationLoss


def torch_default_init():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default kernel init for
    conv and linear layers, so heads start where the reference's do."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def check_rebuild_shapes(loss, built, teacher_shape, student_shape):
    """A second `build` must see the shapes of the first (batch aside): the
    layer already exists and may hold trained (or pre-trained) weights."""
    built_shapes = (tuple(built[0])[1:], tuple(built[1])[1:])
    if built_shapes != (tuple(teacher_shape)[1:], tuple(student_shape)[1:]):
        raise ValueError(
            f"{type(loss).__name__} was built for teacher shape {built[0]} and "
            f"student shape {built[1]}. Received: teacher shape {teacher_shape} "
            f"and student shape {student_shape}."
        )


class LearnableLoss(DistillationLoss):
    """A loss that owns weights: `make_layer(teacher_shape, student_shape)`
    returns a built `keras.layers.Layer`, created once by `build` and exposed
    as `layer`, which the Distiller tracks, trains and saves.

    A second `build` keeps the layer (it may hold trained or pre-trained
    weights) and only checks that the shapes are the same.
    """

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._layer = None
        self._shapes = None

    @property
    def layer(self):
        return self._layer

    def build(self, teacher_shape, student_shape):
        teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
        self.check_shapes(teacher_shape, student_shape)
        if self._layer is not None:
            check_rebuild_shapes(self, self._shapes, teacher_shape, student_shape)
            return
        self._layer = self.make_layer(teacher_shape, student_shape)
        self._shapes = (teacher_shape, student_shape)
        self.built = True
