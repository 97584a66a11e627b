"""Argument checks shared by the whole package.

The bottom of the package: it imports nothing from keras_kd, so any module
may use it. Every check raises `ValueError` in one style, Keras' own:

    `batch_size` must be a positive integer. Received: batch_size=0
"""

import numpy as np


def received(name, value):
    """The tail of every argument error: `Received: name=value`."""
    return f"Received: {name}={value!r}"


def is_int(value):
    """True for a Python or NumPy integer that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_number(name, value):
    """`value` as a float; `ValueError` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a number. {received(name, value)}")
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number. {received(name, value)}")
    return float(value)


def validate_positive(name, value, allow_zero=False):
    """`value` as a float; `ValueError` unless it is a finite number > 0
    (>= 0 with `allow_zero`)."""
    value = validate_number(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be {bound}. {received(name, value)}")
    return float(value)


def validate_positive_int(name, value, allow_none=False):
    """`value` as an int; `ValueError` unless it is an integer >= 1 (or None
    with `allow_none`)."""
    if value is None and allow_none:
        return None
    if not is_int(value) or value < 1:
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ValueError(f"`{name}` must be {expected}. {received(name, value)}")
    return int(value)


def validate_seed(name, value):
    """`value` as an int; `ValueError` unless it is an integer in [0, 2**32),
    the seeds NumPy and TensorFlow accept."""
    if not is_int(value) or not 0 <= value < 2**32:
        raise ValueError(f"`{name}` must be an integer in [0, 2**32). {received(name, value)}")
    return int(value)
