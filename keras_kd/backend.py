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


class TensorFlowRequiredError(RuntimeError):
    """A TensorFlow-only feature was used with Keras on JAX or PyTorch."""


def require_tensorflow(feature):
    """Raise `TensorFlowRequiredError`, one clear sentence, when `feature`
    runs on a backend other than TensorFlow."""
    if not is_tensorflow():
        raise TensorFlowRequiredError(
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


def regularization_loss(model):
    """The sum of `model.losses` in float32, scaled per replica as Keras
    scales the compiled loss (replica gradients are summed)."""
    losses = [keras.ops.cast(keras.ops.sum(loss), "float32") for loss in model.losses]
    total = keras.ops.sum(keras.ops.stack(losses)) if losses else keras.ops.zeros((), "float32")
    return total / num_replicas()


def track_batch_value(tracker, value, batch_size):
    """Adds one batch's `value` of a loss to the mean `tracker`, weighted by
    `batch_size`. Keras scaled the loss by 1 / replicas for the summed
    gradients; the logs hold the batch's own value."""
    tracker.update_state(keras.ops.stop_gradient(value) * num_replicas(), sample_weight=batch_size)
