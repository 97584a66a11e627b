"""Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss
from keras_kd.validation import validate_positive

# The reference (mdistiller) removes the target class from the non-target
# softmax by subtracting this from the scaled logits.
_GT_MASK_OFFSET = 1000.0


def _kl(log_p, log_q):
    """sum_k p * (log p - log q) over the last axis; p = 0 terms give 0."""
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)


def _binary_log_probs(logits, gt_mask):
    """log [p_target, p_non_target] of softmax(logits), computed in log space:
    log sum_{k != gt} softmax_k = logsumexp_{k != gt}(z) - logsumexp(z). Equal
    to the reference's log of summed probabilities, without its log(0)."""
    log_total = ops.logsumexp(logits, axis=-1)
    log_target = ops.sum(logits * gt_mask, axis=-1) - log_total
    # Exclude the target exactly; any finite number far below the logits works.
    others = ops.where(gt_mask > 0.5, ops.full_like(logits, -1e30), logits)
    log_other = ops.logsumexp(others, axis=-1) - log_total
    return ops.stack([log_target, log_other], axis=-1)


@keras.saving.register_keras_serializable(package="keras_kd")
class DKDLoss(DistillationLoss):
    """Decoupled Knowledge Distillation (Zhao, Cui, Song, Qiu & Liang,
    "Decoupled Knowledge Distillation", CVPR 2022).

    DKD splits the KD loss into a target-class term (TCKD) and a
    non-target-class term (NCKD) and weights them separately. With teacher
    logits `t`, student logits `s`, temperature `T` and ground-truth class `g`:

        p = softmax(t / T),  q = softmax(s / T)
        b_p = [p[g], 1 - p[g]],  b_q = [q[g], 1 - q[g]]
        TCKD = T^2 * KL(b_p || b_q)
        p~ = softmax(t / T - 1000 * onehot(g)),  q~ likewise from s
        NCKD = T^2 * KL(p~ || q~)      (distribution over the classes != g)
        loss = alpha * TCKD + beta * NCKD

    per example, averaged over the batch, as in the reference implementation
    (mdistiller `dkd_loss`: `size_average=False` then `/ batch`).

    Published settings (mdistiller `configs/`, `engine/cfg.py`): CIFAR-100
    alpha = 1, beta = 8, T = 4, cross-entropy weight 1, DKD term weight 1
    (some pairs use another beta: 2 for ResNet56->ResNet20, 6 for
    WRN-40-2->WRN-16-2); ImageNet ResNet34->ResNet18 alpha = 1, beta = 0.5,
    T = 1, warmup 1 epoch. mdistiller multiplies the loss by a linear warmup
    `min(epoch / warmup, 1)` (warmup = 20 epochs on CIFAR-100); that factor is
    not part of this loss: give the term a `WeightScheduler` ramping its
    weight from 0 to 1 over the warmup epochs.

    Apply it to the models' outputs (logits). `y_true` is the pair
    `(teacher_logits, labels)`; labels are class ids of shape `(batch,)` or
    `(batch, 1)`, or one-hot `(batch, K)` (the class is the argmax, so
    smoothed labels work too). Class ids outside `[0, K)` are not checked.

    Args:
        alpha: weight of TCKD, >= 0.
        beta: weight of NCKD, >= 0.
        temperature: softening temperature `T > 0`; a float or a
            `keras.Variable` (for a `TemperatureScheduler`).
    """

    schedulable_temperature = True  # the Distiller keeps T in a variable for schedules

    requires_labels = True

    def __init__(self, alpha=1.0, beta=8.0, temperature=4.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = validate_positive("alpha", alpha, allow_zero=True)
        self.beta = validate_positive("beta", beta, allow_zero=True)
        if not isinstance(temperature, keras.Variable):
            temperature = validate_positive("temperature", temperature)
        self.temperature = temperature

    def check_shapes(self, teacher_shape, student_shape):
        if (
            len(teacher_shape) != 2
            or len(student_shape) != 2
            or teacher_shape[-1] != student_shape[-1]
            or teacher_shape[-1] is None
            or teacher_shape[-1] < 2
        ):
            raise ValueError(
                "DKDLoss compares class distributions: it expects teacher and "
                "student logits of shape (batch, K) with the same K >= 2. "
                f"Received: teacher shape {teacher_shape} and student shape "
                f"{student_shape}."
            )

    def _gt_mask(self, labels, num_classes):
        shape = tuple(labels.shape)
        if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
            class_ids = ops.reshape(labels, (-1,))
        elif len(shape) == 2 and shape[-1] == num_classes:
            class_ids = ops.argmax(labels, axis=-1)
        else:
            raise ValueError(
                "DKDLoss expects labels as class ids of shape (batch,) or "
                f"(batch, 1), or one-hot of shape (batch, {num_classes}). "
                f"Received: labels of shape {shape}."
            )
        # Keras hands labels over as float32; one_hot wants integers.
        class_ids = ops.cast(ops.round(ops.cast(class_ids, "float32")), "int32")
        return ops.one_hot(class_ids, num_classes, dtype="float32")

    def call(self, y_true, student_logits):
        teacher_logits, labels = y_true
        gt_mask = self._gt_mask(labels, student_logits.shape[-1])
        temperature = ops.cast(self.temperature, "float32")
        teacher = teacher_logits / temperature
        student = student_logits / temperature

        tckd = _kl(_binary_log_probs(teacher, gt_mask), _binary_log_probs(student, gt_mask))
        nckd = _kl(
            ops.log_softmax(teacher - _GT_MASK_OFFSET * gt_mask, axis=-1),
            ops.log_softmax(student - _GT_MASK_OFFSET * gt_mask, axis=-1),
        )
        return (self.alpha * tckd + self.beta * nckd) * temperature**2

    def get_config(self):
        temperature = self.temperature
        if isinstance(temperature, keras.Variable):
            temperature = float(ops.convert_to_numpy(temperature))
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "temperature": temperature,
        }
