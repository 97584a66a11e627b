"""Checks of the labels against the student, on the first batch, before
training: a label out of range or one-hot labels given to a sparse loss
otherwise fail inside the compiled step with the backend's own error
("Graph execution error" on TensorFlow), far from their cause."""

import keras
import numpy as np

_SPARSE = ("sparse_categorical_crossentropy", "SparseCategoricalCrossentropy")
_DENSE = ("categorical_crossentropy", "CategoricalCrossentropy", "kl_divergence", "KLDivergence")


def first_labels(args, kwargs):
    """The labels of the data given to `fit` (at most the first batch's
    worth), as a NumPy array, or None when they cannot be read without
    consuming the data (generators, `PyDataset`) or there are none."""
    x = args[0] if args else kwargs.get("x")
    y = args[1] if len(args) > 1 else kwargs.get("y")
    if y is not None:
        return _as_array(y)
    if type(x).__module__.startswith("tensorflow") and hasattr(x, "take"):  # a tf.data.Dataset
        for element in x.take(1):
            if isinstance(element, tuple) and len(element) > 1:
                return _as_array(element[1])
    return None


def _as_array(y):
    if isinstance(y, (list, tuple, dict)):
        return None  # several outputs: the student's own loss checks them
    try:
        return np.asarray(keras.ops.convert_to_numpy(y[:1024] if hasattr(y, "__getitem__") else y))
    except (TypeError, ValueError):
        return None


def check_labels(labels, num_classes, loss):
    """Raise `ValueError` when `labels` cannot train a student with
    `num_classes` logits under the compiled `loss`."""
    if labels is None or labels.size == 0 or num_classes is None:
        return
    name = loss if isinstance(loss, str) else type(loss).__name__
    integer = np.issubdtype(labels.dtype, np.integer)
    one_hot = labels.ndim >= 2 and labels.shape[-1] == num_classes and num_classes > 1
    if name in _SPARSE and one_hot and not integer:
        raise ValueError(
            f"The labels look one-hot (shape {labels.shape[1:]} per example, dtype {labels.dtype}) but the loss "
            f"{name} expects class ids. Use CategoricalCrossentropy, or pass class ids (np.argmax(y, -1))."
        )
    if name in _DENSE and (integer or labels.ndim < 2 or labels.shape[-1] != num_classes):
        raise ValueError(
            f"The loss {name} expects one-hot or soft labels of {num_classes} classes per example. Received: "
            f"labels of shape {labels.shape} and dtype {labels.dtype}. Use SparseCategoricalCrossentropy for "
            "class ids."
        )
    if name in _SPARSE:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"Labels must be class ids in [0, {num_classes - 1}] for a student with {num_classes} outputs; "
                f"the first batch holds labels from {low} to {high}."
            )


def num_classes(model):
    """The static width of the model's (single) output, or None."""
    outputs = getattr(model, "outputs", None)
    if not outputs or len(outputs) != 1:
        return None
    return outputs[0].shape[-1]

