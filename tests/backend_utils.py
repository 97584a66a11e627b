"""Backend-neutral test helpers: differentiate, compile and read back tensors
the same way on TensorFlow, JAX and PyTorch, so that one test checks a
behaviour on whichever Keras backend the process runs (`KERAS_BACKEND`).

* `value_and_grad` differentiates with `tf.GradientTape`, `jax.value_and_grad`
  or torch autograd;
* `compiled` compiles as each backend's trainer does: `tf.function` (XLA when
  `jit_compile`), `jax.jit`, and a plain call on PyTorch (Keras' torch trainer
  runs eagerly by default);
* `tensorflow_only` skips a test on the other backends, with the reason.
"""

import keras
import numpy as np
import pytest
from keras import ops

BACKEND = keras.backend.backend()


def tensorflow_only(reason):
    """Skip on JAX and PyTorch; `reason` names what only TensorFlow has."""
    return pytest.mark.skipif(BACKEND != "tensorflow", reason=f"TensorFlow only: {reason}")


def numpy(x):
    """A tensor or Variable (or a nest of them) as NumPy."""
    return keras.tree.map_structure(lambda t: np.asarray(ops.convert_to_numpy(t)), x)


def _is_float(x):
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(x.dtype))


def _leaves(args):
    """`args`' leaves as backend tensors, and the positions of the floating ones."""
    leaves = [ops.convert_to_tensor(x) for x in keras.tree.flatten(args)]
    return leaves, [i for i, x in enumerate(leaves) if _is_float(x)]


def _with(leaves, positions, values):
    leaves = list(leaves)
    for i, value in zip(positions, values):
        leaves[i] = value
    return leaves


def _zeros_for_missing(grads, targets):
    return [numpy(ops.zeros_like(t) if g is None else g) for g, t in zip(grads, targets)]


def value_and_grad(fn, args, variables=(), jit_compile=False):
    """`fn(*args)` (a scalar) and its gradients, as NumPy.

    Args:
        fn: called as `fn(*args)`; returns a scalar tensor.
        args: a tuple of arrays or nests (tuples/lists) of arrays.
        variables: `keras.Variable`s to differentiate too. On JAX, whose
            functions are pure, the updates `fn` makes to them are written
            back after the call, as the other backends do in place; `fn` must
            update no other variable there.
        jit_compile: compile the step (`tf.function(jit_compile=True)`,
            `jax.jit`; PyTorch runs eagerly).

    Returns:
        `(value, arg_grads, variable_grads)`: `arg_grads` has the structure of
        `args`, with None at integer leaves; a gradient that does not reach
        an input is zeros on every backend. `variable_grads` is a list.
    """
    leaves, floats = _leaves(args)
    variables = list(variables)
    if BACKEND == "tensorflow":
        value, grads = _tf_value_and_grad(fn, args, leaves, floats, variables, jit_compile)
    elif BACKEND == "jax":
        value, grads = _jax_value_and_grad(fn, args, leaves, floats, variables, jit_compile)
    elif BACKEND == "torch":
        value, grads = _torch_value_and_grad(fn, args, leaves, floats, variables)
    else:
        raise ValueError(f"No gradient helper for the Keras backend {BACKEND!r}.")
    arg_grads = _with([None] * len(leaves), floats, grads[: len(floats)])
    return numpy(value), keras.tree.pack_sequence_as(args, arg_grads), grads[len(floats):]


def _tf_value_and_grad(fn, args, leaves, floats, variables, jit_compile):
    import tensorflow as tf

    def step(float_leaves):
        with tf.GradientTape() as tape:
            tape.watch(float_leaves)
            tape.watch([v.value for v in variables])
            value = fn(*keras.tree.pack_sequence_as(args, _with(leaves, floats, float_leaves)))
        grads = tape.gradient(
            value, float_leaves + [v.value for v in variables],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return value, [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices of a gather

    if jit_compile:
        step = tf.function(step, jit_compile=True, autograph=False)
    value, grads = step([leaves[i] for i in floats])
    return value, [numpy(g) for g in grads]


def _jax_value_and_grad(fn, args, leaves, floats, variables, jit_compile):
    import jax

    differentiable = [v for v in variables if _is_float(v)]
    others = [v for v in variables if not _is_float(v)]

    def pure(float_leaves, float_values, other_values):
        mapping = list(zip(differentiable, float_values)) + list(zip(others, other_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            value = fn(*keras.tree.pack_sequence_as(args, _with(leaves, floats, float_leaves)))
            updates = [scope.get_current_value(v) for v in variables]
        return value, updates

    step = jax.value_and_grad(pure, argnums=(0, 1), has_aux=True)
    if jit_compile:
        step = jax.jit(step)
    (value, updates), (leaf_grads, variable_grads) = step(
        [leaves[i] for i in floats], [v.value for v in differentiable], [v.value for v in others]
    )
    for variable, update in zip(variables, updates):
        variable.assign(update)
    by_id = dict(zip(map(id, differentiable), variable_grads))
    grads = list(leaf_grads) + [by_id.get(id(v)) for v in variables]
    return value, _zeros_for_missing(grads, [leaves[i] for i in floats] + [v.value for v in variables])


def _torch_value_and_grad(fn, args, leaves, floats, variables):
    import torch

    float_leaves = [leaves[i].detach().clone().requires_grad_(True) for i in floats]
    value = fn(*keras.tree.pack_sequence_as(args, _with(leaves, floats, float_leaves)))
    targets = float_leaves + [v.value for v in variables]
    wanted = [i for i, t in enumerate(targets) if t.requires_grad]
    grads = [None] * len(targets)
    if value.requires_grad and wanted:
        found = torch.autograd.grad(value, [targets[i] for i in wanted], allow_unused=True)
        for i, grad in zip(wanted, found):
            grads[i] = grad
    return value.detach(), _zeros_for_missing(grads, targets)


def compiled(fn, variables=(), jit_compile=True, unknown_batch=False):
    """`fn` compiled as each backend's trainer compiles a step.

    TensorFlow: `tf.function` (XLA when `jit_compile`); with `unknown_batch`,
    traced once for inputs whose batch dimension is None (the signature is
    taken from the first call). JAX: `jax.jit` when `jit_compile`; the updates
    `fn` makes to `variables` are written back after each call (any other
    variable must stay unchanged inside `fn`). PyTorch: a plain call.
    """
    variables = list(variables)
    if BACKEND == "tensorflow":
        return _tf_compiled(fn, jit_compile, unknown_batch)
    if BACKEND == "jax":
        return _jax_compiled(fn, variables, jit_compile)
    return fn


def _tf_compiled(fn, jit_compile, unknown_batch):
    import tensorflow as tf

    traced = []

    def call(*args):
        if not traced:
            signature = None
            if unknown_batch:
                signature = keras.tree.map_structure(
                    lambda x: tf.TensorSpec((None,) + tuple(np.shape(x))[1:], tf.convert_to_tensor(x).dtype), args
                )
            traced.append(tf.function(fn, jit_compile=jit_compile, autograph=False, input_signature=signature))
        return traced[0](*args)

    return call


def _jax_compiled(fn, variables, jit_compile):
    import jax

    def pure(values, args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
            outputs = fn(*args)
            updates = [scope.get_current_value(v) for v in variables]
        return outputs, updates

    step = jax.jit(pure) if jit_compile else pure

    def call(*args):
        outputs, updates = step([v.value for v in variables], args)
        for variable, update in zip(variables, updates):
            variable.assign(update)
        return outputs

    return call
