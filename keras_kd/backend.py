"""The few places where keras_kd depends on the Keras backend.

Everything in the training step is written in `keras.ops`, so the Distiller,
the losses, the connectors and the schedules run on TensorFlow, JAX and
PyTorch alike. TFLite export, the tensorflow-model-optimization path,
TFRecord streaming, `tf.distribute` and the `TeacherCache` use TensorFlow
itself; on another backend they raise `require_tensorflow`'s error.
"""

import contextlib

import keras


def name():
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def is_tensorflow():
    return name() == "tensorflow"


def require_tensorflow(feature):
    """Raise a clear error when `feature` runs on a backend other than TensorFlow."""
    if not is_tensorflow():
        raise RuntimeError(
            f"{feature} needs the TensorFlow backend of Keras; this process runs Keras on {name()!r}. "
            "Set KERAS_BACKEND=tensorflow before importing keras to use it."
        )


def no_grad():
    """A context in which the teacher's forward pass records no gradient.

    On PyTorch the teacher's parameters require gradients (the Distiller
    leaves `teacher.trainable` as the caller set it), so autograd would
    record its whole forward pass; TensorFlow and JAX differentiate only
    what the step asks for.
    """
    if name() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def num_replicas():
    """Replicas of the current `tf.distribute` strategy, as a float: Keras sums
    replica gradients, so per-replica scalar losses are divided by it. 1 on
    JAX and PyTorch, whose data parallelism computes the loss on the global
    batch."""
    if keras.backend.backend() != "tensorflow":
        return 1.0
    import tensorflow as tf

    return float(tf.distribute.get_strategy().num_replicas_in_sync)
