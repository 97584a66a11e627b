"""Ba & Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014;
Tang et al., "Distilling Task-Specific Knowledge from BERT into Simple
Neural Networks", arXiv:1903.12136, 2019."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss


@keras.saving.register_keras_serializable(package="keras_kd")
class LogitMSELoss(DistillationLoss):
    """L2 regression of the student's logits onto the teacher's.

    Ba & Caruana (NeurIPS 2014, "Do Deep Nets Really Need to be Deep?") train
    a shallow "mimic" net on the teacher's logits `z` alone with
    `1/(2N) * sum_n ||s_n - z_n||_2^2`; Tang, Lu, Liu, Mou, Vechtomova & Lin
    (2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
    Networks") use the same `||z_teacher - z_student||_2^2` as the distillation
    term of `alpha * CE + (1 - alpha) * L_distill`. Logits are compared
    directly: no softmax and no temperature.

    For teacher logits `t` and student logits `s` over `K` classes:

        loss = (1 / K) * sum_k (s[k] - t[k])^2

    per example, averaged over the batch (exactly `keras.losses.MeanSquaredError`
    on logits). The papers sum over the logits instead of averaging: to
    reproduce their objective exactly, multiply the term weight by `K`
    (Ba & Caruana: by `K / 2`). Apply it to the models' outputs (the logits,
    before any softmax); inputs of higher rank (e.g. per-token logits
    `(batch, length, vocab)`) give one value per position, like keras MSE.
    """

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)

    def check_shapes(self, teacher_shape, student_shape):
        ok = len(teacher_shape) == len(student_shape) and all(
            t is None or s is None or t == s
            for t, s in zip(teacher_shape[1:], student_shape[1:])
        )
        if not ok:
            raise ValueError(
                "LogitMSELoss regresses the student's logits onto the teacher's "
                f"element by element, but the teacher has shape {teacher_shape} "
                f"and the student {student_shape}: all dimensions but the batch "
                "(in particular the number of logits) must agree."
            )

    def call(self, teacher_logits, student_logits):
        return ops.mean(ops.square(student_logits - teacher_logits), axis=-1)

    def get_config(self):
        return super().get_config()
