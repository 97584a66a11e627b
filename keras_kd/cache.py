"""Teacher outputs computed once and replayed: the state behind
`keras_kd.callbacks.TeacherCache`.

In the first epoch every batch's teacher features are stored, by the batch's
position in the epoch, in preallocated variables; later epochs read them
back instead of running the teacher. That is only right when every epoch
yields the same batches in the same order, so the data are checked first:
a `tf.data` pipeline must hold no shuffling and no random op, and NumPy
inputs need `shuffle=False`.
"""

import math

import numpy as np
import tensorflow as tf

RANDOM_MARKERS = ("Random", "Shuffle", "RngReadAndSkip", "RngSkip", "Multinomial")
DEFAULT_BUDGET_BYTES = 2 << 30


def random_ops(dataset):
    """Names of the random or shuffling ops in a `tf.data` pipeline's graph."""
    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    return sorted(op for op in ops if any(marker in op for marker in RANDOM_MARKERS))


def check_deterministic(x, fit_kwargs):
    """Raises a ValueError unless every epoch of `x` yields the same batches
    in the same order. Returns (batch_size, steps_per_epoch)."""
    if isinstance(x, tf.data.Dataset):
        found = random_ops(x)
        if found:
            raise ValueError(
                f"TeacherCache replays the teacher's outputs by batch position, but this pipeline is shuffled or "
                f"randomly augmented (ops {found}), so epochs differ. Remove the shuffle/augmentation for a cached "
                "run, or drop the TeacherCache."
            )
        steps = fit_kwargs.get("steps_per_epoch") or int(x.cardinality())
        if steps < 0:
            raise ValueError("TeacherCache needs a dataset of known length (or `steps_per_epoch`).")
        first = next(iter(x))
        inputs = first[0] if isinstance(first, tuple) else first
        return int(tf.nest.flatten(inputs)[0].shape[0]), steps
    if isinstance(x, (np.ndarray, dict, list, tuple)) or hasattr(x, "__array__"):
        if fit_kwargs.get("shuffle", True):
            raise ValueError(
                "TeacherCache replays the teacher's outputs by batch position: pass shuffle=False to fit "
                "(array inputs are reshuffled every epoch by default)."
            )
        batch_size = fit_kwargs.get("batch_size") or 32
        count = len(tf.nest.flatten(x)[0])
        return batch_size, fit_kwargs.get("steps_per_epoch") or math.ceil(count / batch_size)
    raise ValueError(
        f"TeacherCache cannot check that {type(x).__name__} inputs repeat identically each epoch; "
        "give a tf.data.Dataset without shuffling or random ops, or arrays with shuffle=False."
    )


class FeatureCache:
    """Variables holding one epoch of teacher features, `[steps, batch, ...]`."""

    def __init__(self, shapes, batch_size, steps, budget_bytes=DEFAULT_BUDGET_BYTES):
        # shapes: {teacher key: {feature key: static shape}}, as the Distiller's extractors report them.
        self.keys = [(teacher, key) for teacher in shapes for key in sorted(shapes[teacher])]
        flat = [shapes[teacher][key] for teacher, key in self.keys]
        if any(shape is None or None in shape[1:] for shape in flat):
            raise ValueError(f"TeacherCache needs teacher features of static shape; received {shapes}.")
        size = 4 * steps * batch_size * sum(int(np.prod(shape[1:])) for shape in flat)
        if size > budget_bytes:
            raise ValueError(
                f"Caching the teacher's features needs {size / 2**30:.2f} GiB (more than the budget of "
                f"{budget_bytes / 2**30:.2f} GiB): cache fewer feature terms or raise `budget_bytes`."
            )
        self.batch_size = batch_size
        self.steps = steps
        self.buffers = [
            tf.Variable(tf.zeros([steps, batch_size, *shape[1:]]), trainable=False, name="teacher_cache")
            for shape in flat
        ]
        self.step = tf.Variable(0, trainable=False, dtype=tf.int32, name="teacher_cache_step")
        self.filled = tf.Variable(False, trainable=False, name="teacher_cache_filled")
        self.bytes = size

    def features(self, x, compute):
        """The teacher features of batch `x`: computed and stored in the first
        epoch, read back afterwards (the teacher does not run then)."""
        index = self.step.assign_add(1) - 1
        count = tf.shape(tf.nest.flatten(x)[0])[0]

        def store():
            computed = compute()
            values = [tf.cast(computed[teacher][key], "float32") for teacher, key in self.keys]
            writes = []
            for buffer, value in zip(self.buffers, values):
                padding = [[0, self.batch_size - count]] + [[0, 0]] * (value.shape.rank - 1)
                writes.append(buffer[index].assign(tf.pad(value, padding)))
            with tf.control_dependencies(writes):
                return [tf.identity(v) for v in values]

        def read():
            return [buffer[index][:count] for buffer in self.buffers]

        values = tf.cond(self.filled, read, store)
        features = {}
        for (teacher, key), value in zip(self.keys, values):
            features.setdefault(teacher, {})[key] = value
        return features

    def start_epoch(self):
        self.step.assign(0)

    def end_epoch(self):
        self.filled.assign(True)
