"""Huang et al., "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss
from keras_kd.validation import validate_positive

# Added to the product of norms in the cosine similarity, as in the reference.
_EPSILON = 1e-8


def _safe_norm(x, axis):
    """L2 norm with gradient 0 (not NaN) at the zero vector, as in PyTorch;
    a column of identical probabilities centres to exactly zero."""
    squared = ops.sum(ops.square(x), axis=axis)
    positive = squared > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, squared, 1.0)), 0.0)


def _pearson(a, b, axis):
    """Pearson correlation of `a` and `b` along `axis`: the cosine similarity
    of the centred vectors, with `eps` added to the denominator."""
    a = a - ops.mean(a, axis=axis, keepdims=True)
    b = b - ops.mean(b, axis=axis, keepdims=True)
    dot = ops.sum(a * b, axis=axis)
    return dot / (_safe_norm(a, axis) * _safe_norm(b, axis) + _EPSILON)


@keras.saving.register_keras_serializable(package="keras_kd")
class DISTLoss(DistillationLoss):
    """DIST (Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A
    Stronger Teacher", NeurIPS 2022).

    DIST matches relations rather than exact probabilities, which the paper
    shows copes better with a much stronger teacher. With
    `Y_s = softmax(s / tau)` and `Y_t = softmax(t / tau)`, both (B, K):

        rho(u, v) = <u - mean(u), v - mean(v)> / (||u - mean(u)|| * ||v - mean(v)|| + 1e-8)
        inter = 1 - (1/B) * sum_i rho(Y_s[i, :], Y_t[i, :])   (each example, over classes)
        intra = 1 - (1/K) * sum_k rho(Y_s[:, k], Y_t[:, k])   (each class, over the batch)
        loss  = tau^2 * (beta * inter + gamma * intra)

    following the authors' code (hunto/image_classification_sota
    `lib/models/losses/dist_kd.py`, also DIST_KD): eps = 1e-8 in the cosine
    denominator, `tau^2` on both terms, defaults beta = gamma = tau = 1.

    The intra-class term relates the examples of a batch, so the loss returns
    one value per batch and takes no `sample_weight`; its value depends on the
    batch size (the paper uses large batches: 256 or more on ImageNet).

    Published setting: ImageNet, beta = gamma = 1, tau = 1, with the
    cross-entropy weight 1 and DIST term weight 1 (the authors' `KDLoss`
    wrapper: `DIST(beta=1, gamma=1)`, `ori_loss_weight = kd_loss_weight = 1`).
    The official code's default `tau` is 1 (the first release had no
    temperature at all); re-implementations for CIFAR-100 commonly use
    tau = 4 with beta = gamma = 2.

    Apply it to the models' outputs (logits). Inputs of rank > 2 (e.g.
    segmentation maps `(B, H, W, K)`) are flattened to `(-1, K)` rows first,
    as the authors' segmentation code does.

    Args:
        beta: weight of the inter-class relation term, >= 0.
        gamma: weight of the intra-class relation term, >= 0.
        temperature: softmax temperature `tau > 0`; a float or a
            `keras.Variable` (for a `TemperatureScheduler`).
    """

    schedulable_temperature = True  # the Distiller keeps T in a variable for schedules

    per_sample = False

    def __init__(self, beta=1.0, gamma=1.0, temperature=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = validate_positive("beta", beta, allow_zero=True)
        self.gamma = validate_positive("gamma", gamma, allow_zero=True)
        if not isinstance(temperature, keras.Variable):
            temperature = validate_positive("temperature", temperature)
        self.temperature = temperature

    def check_shapes(self, teacher_shape, student_shape):
        ok = (
            len(teacher_shape) >= 2
            and len(teacher_shape) == len(student_shape)
            and teacher_shape[-1] is not None
            and all(
                t is None or s is None or t == s
                for t, s in zip(teacher_shape, student_shape)
            )
        )
        if not ok:
            raise ValueError(
                "DISTLoss correlates class distributions example by example and "
                "class by class, so teacher and student logits must have the "
                f"same shape (batch, ..., K). Received: teacher shape "
                f"{teacher_shape} and student shape {student_shape}."
            )

    def call(self, teacher_logits, student_logits):
        num_classes = student_logits.shape[-1]
        teacher_logits = ops.reshape(teacher_logits, (-1, num_classes))
        student_logits = ops.reshape(student_logits, (-1, num_classes))
        temperature = ops.cast(self.temperature, "float32")
        y_t = ops.softmax(teacher_logits / temperature, axis=-1)
        y_s = ops.softmax(student_logits / temperature, axis=-1)
        inter = 1.0 - ops.mean(_pearson(y_s, y_t, axis=1))
        intra = 1.0 - ops.mean(_pearson(y_s, y_t, axis=0))
        return temperature**2 * (self.beta * inter + self.gamma * intra)

    def get_config(self):
        temperature = self.temperature
        if isinstance(temperature, keras.Variable):
            temperature = float(ops.convert_to_numpy(temperature))
        return {
            **super().get_config(),
            "beta": self.beta,
            "gamma": self.gamma,
            "temperature": temperature,
        }
