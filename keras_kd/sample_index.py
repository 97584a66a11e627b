"""Each example's position in the training set, carried through `fit`.

Some methods keep a memory with one row per training example (CRD's memory
bank, Tian et al. 2020), so the step must know which examples a batch holds.
Keras' `fit` reads `(x, y, sample_weight)`; the index rides inside `x`:

* a tensor (or list) `x` becomes `{"inputs": x, "sample_index": i}`;
* a dict `x` gains the key `"sample_index"`.

`with_index` builds such data; the `Distiller` takes the index out again
before the teacher and the student see `x` (`split_index`), and passes it to
the terms whose loss has `requires_index = True`.
"""

import numpy as np

INDEX_KEY = "sample_index"
INPUTS_KEY = "inputs"


def with_index(data, y=None, sample_weight=None):
    """Adds each example's position (0, 1, ...) to `x`.

    Args:
        data: an *unbatched* `tf.data.Dataset` of `x`, `(x, y)` or
            `(x, y, sample_weight)` elements (apply this before `shuffle`
            and `batch`, so that each example keeps its own index); or the
            array (or dict of arrays) `x` itself.
        y, sample_weight: with arrays, the labels and weights that go with
            `x`.

    Returns:
        The dataset with the index in `x`; for arrays, the tuple
        `(x_with_index, y[, sample_weight])` to unpack into `fit`:
        `distiller.fit(*with_index(x, y), batch_size=64)`.
    """
    if _is_dataset(data):
        import tensorflow as tf

        if y is not None or sample_weight is not None:
            raise ValueError("Give `y` and `sample_weight` inside the dataset's elements, not as arguments.")
        return data.enumerate().map(_add_index, num_parallel_calls=tf.data.AUTOTUNE)
    count = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
    x = _attach(data, np.arange(count, dtype="int64"))
    return tuple(value for value in (x, y, sample_weight) if value is not None)


def _is_dataset(data):
    """A `tf.data.Dataset`, without importing TensorFlow for arrays (JAX and PyTorch runs)."""
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "enumerate")


def _add_index(index, element):
    if isinstance(element, tuple):
        return (_attach(element[0], index), *element[1:])
    return _attach(element, index)


def _attach(x, index):
    if isinstance(x, dict):
        if INDEX_KEY in x:
            raise ValueError(f"The inputs already hold a {INDEX_KEY!r} entry.")
        return {**x, INDEX_KEY: index}
    return {INPUTS_KEY: x, INDEX_KEY: index}


def split_index(x):
    """`(x, index)`: the inputs without the index, and the index (None when
    `x` carries none)."""
    if not isinstance(x, dict) or INDEX_KEY not in x:
        return x, None
    x = dict(x)
    index = x.pop(INDEX_KEY)
    if set(x) == {INPUTS_KEY}:
        x = x[INPUTS_KEY]
    return x, index


def batch_size_of(x):
    """The batch size of the inputs `x` (a tensor or a structure of them;
    the example index of `with_index` left out), as a scalar tensor."""
    import keras

    inputs, _ = split_index(x)
    return keras.ops.shape(keras.tree.flatten(inputs)[0])[0]
