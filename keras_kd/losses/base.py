"""The base class of every keras_kd loss and the shape helpers they share.

A distillation loss is a `keras.losses.Loss` called as
`loss(teacher_output, student_output)`: the teacher's tensor takes the place
of `y_true` and the student's the place of `y_pred`. Two kinds exist:

* per-sample losses (KD, FitNets, attention transfer, ...) return one value
  per example, so `sample_weight` and Keras reductions apply as usual;
* relational losses (similarity preserving, RKD, CRD, ...) compare examples
  with each other and return one value per batch (`per_sample = False`).
  They accept no `sample_weight`; under `tf.distribute` they are scaled by
  the number of replicas exactly like Keras scales per-sample losses.

Losses always compute in float32 (`dtype="float32"`), so mixed-precision
features are cast up before any softmax or norm.
"""

import re

import keras
from keras import ops

from keras_kd.backend import num_replicas


def snake_case(name):
    """`AttentionTransferLoss` -> `attention_transfer_loss`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class DistillationLoss(keras.losses.Loss):
    """Base class of the keras_kd losses.

    Subclasses implement `call(teacher, student)` and may set:

    * `per_sample` (default True): whether `call` returns a value per example;
    * `requires_index` (default False): whether `y_true` may be the pair
      `(teacher_output, index)`, each example's position in the training
      set (CRD's memory is indexed by it); the `Distiller` passes it in
      training when the batches carry one (`datasets.with_index`);
    * `requires_labels` (default False): whether `y_true` is the pair
      `(teacher_output, labels)` (DKD needs the ground-truth class);
    * `num_maps` (default 1): feature maps per side; FSP takes 2, so
      `y_true` and `y_pred` are pairs of maps; None takes a list of any
      length >= 1 (ReviewKD reads one map per stage);
    * `check_shapes(teacher_shape, student_shape)`: raise `ValueError` when
      the two features cannot be compared;
    * `build(teacher_shape, student_shape)` and `layer`: losses with
      learnable state (VID, CRD, factor transfer) create a `keras.layers.Layer`
      there; the `Distiller` tracks and trains it with the student.

    Gradients never reach the teacher: `y_true` passes through
    `stop_gradient`. The default name is the snake-case class name (`KDLoss` -> `kd_loss`),
    which is the key the term is logged under.
    """

    per_sample = True
    requires_labels = False
    requires_index = False
    schedulable_temperature = False  # True: `temperature` may be a keras.Variable
    num_maps = 1

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype="float32"):
        super().__init__(
            name=name or snake_case(type(self).__name__),
            reduction=reduction,
            dtype=dtype,
        )
        self.built = False

    @property
    def layer(self):
        """The `keras.layers.Layer` holding this loss's weights, or None."""
        return None

    def check_shapes(self, teacher_shape, student_shape):
        """Raise `ValueError` if the shapes cannot be compared. Default: accept."""

    def build(self, teacher_shape, student_shape):
        """Validate the feature shapes (batch dimension included) and create
        any state. Called once by the `Distiller`, or by the first call."""
        self.check_shapes(teacher_shape, student_shape)
        self.built = True

    def __call__(self, y_true, y_pred, sample_weight=None):
        if not self.per_sample and sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} relates the examples of a batch to each "
                "other and returns one value per batch, so it cannot take a "
                "`sample_weight`. Received sample_weight="
                f"{sample_weight!r}."
            )
        y_pred = self._to_tensors(y_pred)
        if self.requires_labels:
            teacher, labels = y_true
            teacher = self._to_tensors(teacher)
            y_true = (teacher, ops.convert_to_tensor(labels))
        elif self.requires_index and isinstance(y_true, (tuple, list)):
            teacher, index = y_true
            teacher = self._to_tensors(teacher)
            y_true = (teacher, ops.convert_to_tensor(index))
        else:
            teacher = y_true = self._to_tensors(y_true)
        # The teacher is a fixed target: no gradient flows back into it.
        y_true = keras.tree.map_structure(ops.stop_gradient, y_true)
        if not self.built:
            self.build(_shapes(teacher), _shapes(y_pred))
        value = super().__call__(y_true, y_pred, sample_weight)
        if not self.per_sample and self.reduction not in (None, "none"):
            # Keras skips this for scalar values; replicas must still average.
            value = value / num_replicas()
        return value

    def _to_tensors(self, features):
        if self.num_maps == 1:
            return ops.convert_to_tensor(features, dtype=self.dtype)
        is_list = isinstance(features, (list, tuple))
        if not is_list or (len(features) != self.num_maps if self.num_maps else not features):
            expected = self.num_maps or "a list of one or more"
            raise ValueError(
                f"{type(self).__name__} takes {expected} feature maps per "
                f"network. Received: {type(features).__name__} "
                f"of length {len(features) if is_list else 1}."
            )
        return tuple(ops.convert_to_tensor(f, dtype=self.dtype) for f in features)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction, "dtype": self.dtype}


def _shapes(structure):
    if isinstance(structure, (list, tuple)):
        return tuple(_shapes(s) for s in structure)
    return tuple(structure.shape)


def require_rank(loss, teacher_shape, student_shape, ranks):
    """Raise unless both shapes have one of `ranks` (batch included)."""
    for side, shape in (("teacher", teacher_shape), ("student", student_shape)):
        if len(shape) not in ranks:
            raise ValueError(
                f"{type(loss).__name__} expects {side} features of rank "
                f"{' or '.join(map(str, ranks))} (batch included). Received: "
                f"teacher shape {teacher_shape} and student shape {student_shape}."
            )


def require_equal_channels(loss, teacher_shape, student_shape):
    """Raise unless the last (channel) dimensions agree."""
    if teacher_shape[-1] != student_shape[-1]:
        raise ValueError(
            f"{type(loss).__name__} compares features channel by channel, but "
            f"the teacher has shape {teacher_shape} and the student {student_shape}"
            f" ({teacher_shape[-1]} vs {student_shape[-1]} channels). Give the "
            "term a connector (e.g. connector='conv1x1') to map the student to "
            "the teacher's channels."
        )


def l2_normalize(x, axis=-1, eps=1e-12):
    """`x / max(||x||, eps)` along `axis`, torch's `F.normalize`.

    Written as `sqrt(max(||x||^2, eps^2))` so that an all-zero vector gets a
    zero, not NaN, gradient (also under XLA).
    """
    squared_norm = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared_norm, eps * eps))


def flatten(x):
    """(batch, ...) -> (batch, features)."""
    return ops.reshape(x, (ops.shape(x)[0], -1))


def _adaptive_pool_matrix(size_in, size_out):
    """(size_out, size_in) averaging matrix of PyTorch's adaptive_avg_pool:
    window i spans [floor(i*in/out), ceil((i+1)*in/out))."""
    rows = []
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)])
    return ops.convert_to_tensor(rows, dtype="float32")


def adaptive_avg_pool(x, height, width):
    """Average-pool a channels-last map (B, H, W, C) to (B, height, width, C)."""
    if x.shape[1] != height:
        x = ops.einsum("oh,bhwc->bowc", _adaptive_pool_matrix(x.shape[1], height), x)
    if x.shape[2] != width:
        x = ops.einsum("ow,bhwc->bhoc", _adaptive_pool_matrix(x.shape[2], width), x)
    return x


def match_spatial(teacher, student):
    """Pool the larger of two (B, H, W, C) maps to the smaller's size, as the
    CRD benchmark does with `adaptive_avg_pool2d`. Other ranks pass through."""
    if len(teacher.shape) != 4 or len(student.shape) != 4:
        return teacher, student
    t_hw, s_hw = tuple(teacher.shape[1:3]), tuple(student.shape[1:3])
    if t_hw == s_hw:
        return teacher, student
    if t_hw[0] * t_hw[1] > s_hw[0] * s_hw[1]:
        return adaptive_avg_pool(teacher, *s_hw), student
    return teacher, adaptive_avg_pool(student, *t_hw)
