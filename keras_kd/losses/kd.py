"""Hinton et al., "Distilling the Knowledge in a Neural Network", 2015."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss
from keras_kd.validation import validate_positive


@keras.saving.register_keras_serializable(package="keras_kd")
class KDLoss(DistillationLoss):
    """Soft-target knowledge distillation (Hinton, Vinyals & Dean, 2015).

    For teacher logits `t` and student logits `s` over `K` classes:

        p_t = softmax(t / T),  log p_s = log_softmax(s / T)
        loss = T^2 * sum_k p_t[k] * (log p_t[k] - log p_s[k])

    per example, averaged over the batch: `KL(p_t || p_s) * T^2`, the
    `DistillKL` of the CRD benchmark. The `T^2` factor keeps the gradient
    scale independent of the temperature, so the term's weight carries over
    when `T` changes. Default `T = 4` as in the CRD benchmark.

    Args:
        temperature: softening temperature `T > 0`. A float, or a
            `keras.Variable` so a `TemperatureScheduler` can change it during
            training without re-tracing the step.
        from_logits: if False, both inputs are probabilities and are turned
            back into logits with `log` first.
    """

    schedulable_temperature = True  # the Distiller keeps T in a variable for schedules

    def __init__(self, temperature=4.0, from_logits=True, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(temperature, keras.Variable):
            temperature = validate_positive("temperature", temperature)
        self.temperature = temperature
        self.from_logits = bool(from_logits)

    def check_shapes(self, teacher_shape, student_shape):
        if teacher_shape[-1] != student_shape[-1]:
            raise ValueError(
                f"KDLoss compares class distributions, but the teacher has "
                f"{teacher_shape[-1]} classes (shape {teacher_shape}) and the "
                f"student {student_shape[-1]} (shape {student_shape})."
            )

    def call(self, teacher_logits, student_logits):
        if not self.from_logits:
            teacher_logits = ops.log(ops.maximum(teacher_logits, 1e-7))
            student_logits = ops.log(ops.maximum(student_logits, 1e-7))
        temperature = ops.cast(self.temperature, "float32")
        log_p_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
        log_p_student = ops.log_softmax(student_logits / temperature, axis=-1)
        kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
        return kl * temperature**2

    def get_config(self):
        temperature = self.temperature
        if isinstance(temperature, keras.Variable):
            temperature = float(ops.convert_to_numpy(temperature))
        return {**super().get_config(), "temperature": temperature, "from_logits": self.from_logits}
