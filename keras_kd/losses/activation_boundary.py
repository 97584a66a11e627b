"""Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries
Formed by Hidden Neurons", AAAI 2019."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss, flatten
from keras_kd.validation import validate_positive

# The reference implementations divide the summed loss by 1000 (a fixed
# rescaling of the magnitude, not part of the paper's formula).
_SCALE = 1.0 / 1000.0


@keras.saving.register_keras_serializable(package="keras_kd")
class ABLoss(DistillationLoss):
    """Activation-boundary distillation (Heo, Lee, Yun & Choi, "Knowledge
    Transfer via Distillation of Activation Boundaries Formed by Hidden
    Neurons", AAAI 2019).

    Works on PRE-ReLU features: the student learns on which side of zero each
    teacher neuron lies, with a margin `m`. For teacher pre-activations `t` and
    (connector-mapped) student pre-activations `s` of equal shape, the
    paper's alternative (hinge-squared) loss summed over every element:

        loss = (1 / 1000) * sum_i [ (s_i + m)^2 * 1(s_i > -m and t_i <= 0)
                                  + (s_i - m)^2 * 1(s_i <= m and t_i > 0) ]

    per example, averaged over the batch: `criterion_alternative_L2` of the
    CRD benchmark (RepDistiller) and of the authors' code, summed over
    elements and divided by the batch size. The `1/1000` is the reference's
    fixed rescaling, kept so its weights carry over. Both references further
    multiply the total by 3 (`loss / 1000 * 3`); that factor is left to the
    term weight. The loss is 0 only once every student neuron is on the
    teacher's side by at least `m`, so it is not 0 when `s == t`.

    Published setting (CRD benchmark, `distiller_zoo/AB.py`, and the authors'
    code): margin 1, pre-ReLU outputs of every residual stage
    (`feat[1:-1]`, `preact=True`), the student mapped by a connector (conv +
    BN, no ReLU) where shapes differ; layer `i` of `n` (1 = shallowest)
    weighted `2^(i - n)`, times the extra 3: term weights `3 * 2^(i - n)`
    reproduce the reference exactly. AB is an initialization stage: the
    student's feature layers and connectors train on this loss alone (30
    epochs in the CRD benchmark), then the student trains with cross-entropy
    (and KD in the paper) without this term, so the script's `-b 1` has no
    effect there.

    Args:
        margin: the margin `m >= 0` (default 1.0).
    """

    def __init__(self, margin=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = validate_positive("margin", margin, allow_zero=True)

    def check_shapes(self, teacher_shape, student_shape):
        if len(teacher_shape) < 2 or tuple(teacher_shape[1:]) != tuple(student_shape[1:]):
            raise ValueError(
                "ABLoss compares pre-activations neuron by neuron, so teacher and "
                f"student must have the same shape. Received: teacher shape "
                f"{teacher_shape} and student shape {student_shape}. Give the "
                "term a connector mapping the student to the teacher's shape: "
                "connector='conv1x1' (conv + BN, as the reference) for channels, "
                "or a keras.layers.Layer that also resamples space."
            )

    def call(self, teacher, student):
        teacher, student = flatten(teacher), flatten(student)
        margin = self.margin
        teacher_on = teacher > 0
        # Teacher off: push the student below -m; teacher on: above +m.
        off_penalty = ops.where(
            ops.logical_and(student > -margin, ops.logical_not(teacher_on)),
            ops.square(student + margin),
            0.0,
        )
        on_penalty = ops.where(
            ops.logical_and(student <= margin, teacher_on),
            ops.square(student - margin),
            0.0,
        )
        return ops.sum(off_penalty + on_penalty, axis=-1) * _SCALE

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
