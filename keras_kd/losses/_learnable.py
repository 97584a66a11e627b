"""Helpers shared by the losses that own weights (VID, factor transfer, CRD)."""

import keras


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
            f"student shape {built[1]}; received teacher shape {teacher_shape} "
            f"and student shape {student_shape}."
        )


def validate_positive_int(name, value):
    """Raise `ValueError` unless `value` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)
