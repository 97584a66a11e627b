"""Teacher outputs computed once and replayed: the state behind
`keras_kd.callbacks.TeacherCache`.

In the first epoch every batch's teacher features are stored, by the batch's
position in the epoch, in preallocated variables; later epochs read them
back instead of running the teacher. That is only right when every epoch
yields the same batches in the same order, so the data are checked first:
a `tf.data` pipeline must hold no shuffling and no random op, and NumPy
inputs need `shuffle=False`.

That check reads the pipeline's op names, which cannot see a Python
generator that reshuffles or a `numpy_function` that adds noise. So what is
replayed is verified too: the first epoch also stores a fingerprint of each
batch's inputs (a few float32 reductions), later epochs compare the batch at
the same position with it, and a mismatch is recorded for the callback to
raise (`FeatureCache.mismatch`).
"""

import math

import numpy as np
import tensorflow as tf

RANDOM_MARKERS = ("Random", "Shuffle", "RngReadAndSkip", "RngSkip", "Multinomial")
DEFAULT_BUDGET_BYTES = 2 << 30
FINGERPRINT_SIZE = 5  # see batch_fingerprint


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
            raise ValueError(f"TeacherCache needs teacher features of static shape. Received: {shapes}.")
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
        self.fingerprints = tf.Variable(
            tf.zeros([steps, FINGERPRINT_SIZE]), trainable=False, name="teacher_cache_fingerprints"
        )
        # The epoch position of the first replayed batch whose inputs differ from the stored ones; -1: none.
        self.mismatch = tf.Variable(-1, trainable=False, dtype=tf.int32, name="teacher_cache_mismatch")

    def features(self, x, compute):
        """The teacher features of batch `x`: computed and stored in the first
        epoch, read back afterwards (the teacher does not run then)."""
        index = self.step.assign_add(1) - 1
        count = tf.shape(tf.nest.flatten(x)[0])[0]
        fingerprint = batch_fingerprint(x)

        def store():
            computed = compute()
            values = [tf.cast(computed[teacher][key], "float32") for teacher, key in self.keys]
            writes = [self.fingerprints[index].assign(fingerprint)]
            for buffer, value in zip(self.buffers, values):
                padding = [[0, self.batch_size - count]] + [[0, 0]] * (value.shape.rank - 1)
                writes.append(buffer[index].assign(tf.pad(value, padding)))
            with tf.control_dependencies(writes):
                return [tf.identity(v) for v in values]

        def read():
            differs = tf.logical_not(fingerprints_match(self.fingerprints[index], fingerprint))
            first = tf.logical_and(differs, self.mismatch < 0)
            record = self.mismatch.assign(tf.where(first, index, self.mismatch))
            with tf.control_dependencies([record]):
                return [tf.identity(buffer[index][:count]) for buffer in self.buffers]

        values = tf.cond(self.filled, read, store)
        features = {}
        for (teacher, key), value in zip(self.keys, values):
            features.setdefault(teacher, {})[key] = value
        return features

    def start_epoch(self):
        self.step.assign(0)

    def check(self, epoch):
        """Raises a ValueError when a replayed batch (of `epoch`, counted
        from 0) did not hold the inputs the teacher saw in the first epoch."""
        position = int(self.mismatch.numpy())
        if position >= 0:
            raise ValueError(
                f"TeacherCache: batch {position} of epoch {epoch + 1} does not hold the inputs that batch {position} "
                "held in the first epoch of this fit, so the cached teacher outputs are wrong for it (training "
                "stopped after that batch's update, or the next one's). The data change order or "
                "content between epochs (a generator that reshuffles, a random numpy_function or py_function, ...) "
                "in a way the pipeline's op names do not show. Make every epoch yield the same batches, or drop "
                "the TeacherCache."
            )

    def end_epoch(self):
        self.filled.assign(True)


def batch_fingerprint(x):
    """Five float32 numbers that summarise a batch of inputs: its example
    count, then over every input tensor the sum, the sum of absolute values,
    the sum of squares and a position-weighted sum (weights from 1 to 2
    along the flattened tensor, so it changes when examples swap places).
    Cheap next to a teacher pass, and equal for equal batches."""
    tensors = [_numbers(tensor) for tensor in tf.nest.flatten(x)]
    tensors = [tensor for tensor in tensors if tensor is not None] or [tf.zeros([0])]
    count = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], "float32")
    sums = []
    for values in tensors:
        size = tf.shape(values)[0]
        weights = 1.0 + tf.cast(tf.range(size), "float32") / tf.cast(tf.maximum(size, 1), "float32")
        sums.append(
            tf.stack(
                [
                    tf.reduce_sum(values),
                    tf.reduce_sum(tf.abs(values)),
                    tf.reduce_sum(tf.square(values)),
                    tf.reduce_sum(values * weights),
                ]
            )
        )
    return tf.concat([count[None], tf.add_n(sums)], axis=0)


def _numbers(tensor):
    """The values of an input tensor as a flat float32 vector (ragged and
    sparse tensors: their stored values); None for non-numeric inputs
    (strings), which the fingerprint leaves out."""
    if isinstance(tensor, tf.RaggedTensor):
        tensor = tensor.flat_values
    elif isinstance(tensor, tf.SparseTensor):
        tensor = tensor.values
    tensor = tf.convert_to_tensor(tensor)
    if not (tensor.dtype.is_floating or tensor.dtype.is_integer or tensor.dtype.is_bool):
        return None
    return tf.reshape(tf.cast(tensor, "float32"), [-1])


def fingerprints_match(stored, current, rtol=1e-6):
    """True when two `batch_fingerprint`s agree. A batch fingerprints the same
    each time; `rtol` only absorbs float32 rounding. The sum, the sum of |x|
    and the weighted sum are bounded by 2 * sum of |x|, which scales their
    tolerance; the sum of squares scales its own; the count must be equal."""
    magnitude = tf.maximum(tf.abs(stored), tf.abs(current))
    bound = 2.0 * magnitude[2]
    scale = tf.stack([0.0, bound, bound, magnitude[3], bound])
    return tf.reduce_all(tf.abs(stored - current) <= rtol * scale)
