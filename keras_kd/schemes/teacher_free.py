"""Yuan, Tay, Li, Wang & Feng, "Revisiting Knowledge Distillation via Label
Smoothing Regularization", CVPR 2020 (Teacher-free KD, Tf-KD).

Two ways to distill without a stronger teacher:

* Tf-KD_reg, a manually designed "virtual teacher": `VirtualTeacherLoss`,
  trained with `virtual_teacher_distiller(student)`;
* Tf-KD_self, self-training: a pre-trained student teaches a fresh copy of
  its own architecture; `self_teacher(pretrained_student)` makes the frozen
  teacher for an ordinary `keras_kd.Distiller` with `KDLoss`.

Reference code: github.com/yuanli2333/Teacher-free-Knowledge-Distillation
(`my_loss_function.py`, `experiments/*/params.json`).
"""

import keras
from keras import ops

from keras_kd.distiller import Distiller
from keras_kd.losses.base import DistillationLoss
from keras_kd.term import Term
from keras_kd.validation import is_int, validate_positive

# Reference setting of Tf-KD_reg for ResNet18 on CIFAR-100
# (experiments/base_experiments/base_resnet18/params.json).
_REFERENCE_REG_ALPHA = 0.1
_REFERENCE_MULTIPLIER = 100.0


def class_ids(labels, num_classes, owner):
    """Integer class ids (batch,) from ids of shape (batch,) or (batch, 1),
    or from one-hot / soft labels (batch, K) (their argmax)."""
    shape = tuple(labels.shape)
    if len(shape) == 1 or (len(shape) == 2 and shape[-1] == 1):
        ids = ops.reshape(labels, (-1,))
    elif len(shape) == 2 and shape[-1] == num_classes:
        ids = ops.argmax(labels, axis=-1)
    else:
        raise ValueError(
            f"{owner} expects labels as class ids of shape (batch,) or (batch, 1), or one-hot of shape "
            f"(batch, {num_classes}). Received: labels of shape {shape}."
        )
    # Keras hands labels over as float32; one_hot and gather want integers.
    return ops.cast(ops.round(ops.cast(ids, "float32")), "int32")


@keras.saving.register_keras_serializable(package="keras_kd")
class VirtualTeacherLoss(DistillationLoss):
    """Tf-KD_reg's manually designed teacher (Yuan, Tay, Li, Wang & Feng,
    "Revisiting Knowledge Distillation via Label Smoothing Regularization",
    CVPR 2020, Sec. 5).

    The virtual teacher puts probability `a` (`correct_prob`) on the true
    class `c` and spreads the rest uniformly over the other `K - 1` classes:

        p^d(k) = a                  if k == c
                 (1 - a) / (K - 1)  otherwise

    This loss is what the authors' code computes (`loss_kd_regularization`
    in `my_loss_function.py`), per example and averaged over the batch:

        p^d_T = softmax(p^d / T)            (the probabilities, divided by T,
                                             go through a softmax)
        loss  = KL(p^d_T || softmax(z_s)) = sum_k p^d_T[k] * (log p^d_T[k] - log_softmax(z_s)[k])

    Exactly as in that code, the student's logits `z_s` are NOT divided by
    `T` and there is no `T^2` factor (the paper's Eq. softens both sides;
    the code does not). Because `p^d` lies in [0, 1], `p^d_T` is close to
    uniform for large `T` (K = 10, a = 0.9, T = 20: 0.104 on the true class,
    0.0995 on each other), so the term acts as a label-smoothing regulariser.
    The loss is smallest (0, zero gradient) when `softmax(z_s) == p^d_T`.

    Scale: the reference averages `nn.KLDivLoss()` over the batch AND the K
    classes and multiplies it by `multiplier`; its objective is
    `(1 - reg_alpha) * CE + reg_alpha * multiplier * KL / K`. This loss sums
    over classes (like `KDLoss`), so the reference's setting is a term
    weight of `reg_alpha * multiplier / K` with `student_loss_weight =
    1 - reg_alpha`. Reference CIFAR-100 settings (`params.json`): ResNet18
    T = 20, reg_alpha = 0.1, multiplier = 100; GoogLeNet T = 40, 0.1, 50;
    MobileNetV2 T = 40, 0.95, 1; ShuffleNetV2 T = 10, 0.95, 1. The code
    hard-codes a = 0.99; the default here is the paper's a = 0.9.

    There is no real teacher: `y_true` is the pair `(teacher_output,
    labels)` and the teacher output is ignored (see
    `virtual_teacher_distiller`). Labels are class ids `(batch,)` /
    `(batch, 1)` or one-hot `(batch, K)`.

    Args:
        num_classes: K, an int >= 2.
        correct_prob: `a`, in (1/K, 1), so the true class stays the most
            likely one and the others keep some mass.
        temperature: `T > 0`, applied to the virtual distribution only.
    """

    requires_labels = True

    def __init__(self, num_classes, correct_prob=0.9, temperature=20.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if not is_int(num_classes) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2. Received: num_classes={num_classes!r}")
        correct_prob = validate_positive("correct_prob", correct_prob)
        if not 1.0 / num_classes < correct_prob < 1.0:
            raise ValueError(
                f"`correct_prob` must be in (1/K, 1) = ({1.0 / num_classes:.4g}, 1) for K={num_classes} classes, "
                f"so the true class is the most likely one. Received: correct_prob={correct_prob!r}"
            )
        self.num_classes = num_classes
        self.correct_prob = correct_prob
        self.temperature = validate_positive("temperature", temperature)

    def check_shapes(self, teacher_shape, student_shape):
        if len(student_shape) != 2 or student_shape[-1] != self.num_classes:
            raise ValueError(
                f"VirtualTeacherLoss(num_classes={self.num_classes}) expects student logits of shape "
                f"(batch, {self.num_classes}). Received: {student_shape}."
            )

    def virtual_distribution(self, labels):
        """The softened virtual teacher `softmax(p^d / T)`, (batch, K)."""
        ids = class_ids(ops.convert_to_tensor(labels), self.num_classes, "VirtualTeacherLoss")
        one_hot = ops.one_hot(ids, self.num_classes, dtype="float32")
        off = (1.0 - self.correct_prob) / (self.num_classes - 1)
        p_d = off + (self.correct_prob - off) * one_hot
        return ops.softmax(p_d / self.temperature, axis=-1)

    def call(self, y_true, student_logits):
        _, labels = y_true  # the (zero) teacher output carries nothing
        target = self.virtual_distribution(labels)
        log_student = ops.log_softmax(student_logits, axis=-1)
        return ops.sum(target * (ops.log(target) - log_student), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "correct_prob": self.correct_prob,
            "temperature": self.temperature,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class ZeroLogits(keras.layers.Layer):
    """Outputs zeros of shape (batch, num_classes) for any input: the
    stand-in teacher of Tf-KD_reg, whose loss builds its target from the
    labels. Costs no computation beyond allocating the zeros."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        if not is_int(num_classes) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int. Received: num_classes={num_classes!r}")
        self.num_classes = num_classes

    def call(self, inputs):
        first = keras.tree.flatten(inputs)[0]
        return ops.zeros((ops.shape(first)[0], self.num_classes), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        first = input_shape[0] if isinstance(input_shape, list) else input_shape
        return (first[0], self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _num_classes(student):
    outputs = getattr(student, "outputs", None)
    if not outputs or len(outputs) != 1 or len(outputs[0].shape) != 2 or outputs[0].shape[-1] is None:
        raise ValueError(
            f"The student '{getattr(student, 'name', student)}' must be a functional or Sequential keras.Model "
            "with one logits output of shape (batch, K)."
        )
    return int(outputs[0].shape[-1])


def virtual_teacher(student):
    """A frozen functional model that takes the student's inputs and outputs
    zeros of the student's logits shape: the `teacher` of a Tf-KD_reg
    Distiller (the Distiller needs one; the student itself is refused)."""
    num_classes = _num_classes(student)
    # Same input names as the student, so dict batches feed both alike.
    inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name) for t in student.inputs]
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    outputs = ZeroLogits(num_classes, dtype="float32", name="zero_logits")(model_inputs)
    teacher = keras.Model(model_inputs, outputs, name=f"{student.name}_virtual_teacher")
    teacher.trainable = False
    return teacher


def virtual_teacher_distiller(
    student, correct_prob=0.9, temperature=20.0, weight=None, student_loss_weight=1.0 - _REFERENCE_REG_ALPHA
):
    """A `keras_kd.Distiller` that trains `student` with Tf-KD_reg:

        student_loss_weight * CE(y, z_s) + weight * VirtualTeacherLoss(y, z_s)

    Design: rather than a second model class, the Distiller's teacher is
    `virtual_teacher(student)`, a frozen functional model outputting zeros
    (the loss ignores it and builds the virtual teacher from the labels).
    So `fit`, `evaluate`, the `virtual_teacher_loss` log, schedules
    (`WeightScheduler("virtual_teacher_loss", ...)`) and `.keras` saving are
    the Distiller's own; the zero teacher costs nothing per step.

    Compile it with the supervised loss, e.g.
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

    Args:
        student: a functional/Sequential model with logits (batch, K).
        correct_prob, temperature: of `VirtualTeacherLoss`.
        weight: the term's weight. None: the reference's ResNet18/CIFAR-100
            setting `reg_alpha * multiplier / K = 0.1 * 100 / K` (see
            `VirtualTeacherLoss` for why K appears).
        student_loss_weight: the cross-entropy weight; the reference's
            `1 - reg_alpha` = 0.9.
    """
    num_classes = _num_classes(student)
    if weight is None:
        weight = _REFERENCE_REG_ALPHA * _REFERENCE_MULTIPLIER / num_classes
    loss = VirtualTeacherLoss(num_classes, correct_prob=correct_prob, temperature=temperature)
    return Distiller(
        virtual_teacher(student),
        student,
        [Term(loss, weight=weight)],
        student_loss_weight=student_loss_weight,
        name=f"{student.name}_tf_kd_reg",
    )


def self_teacher(student):
    """Tf-KD_self: a frozen copy of a pre-trained `student` to teach a fresh
    student of the same architecture.

    Returns a clone with the same weights (BatchNorm statistics included),
    renamed `<name>_teacher`, with `trainable = False`; it shares no
    variable with `student`. Recipe (paper Sec. 5; the reference's
    `loss_kd_self` and `experiments/kd_experiments/*_self_teacher`):

    1. train the student normally (cross-entropy);
    2. `teacher = self_teacher(student)`;
    3. train a freshly initialised model of the same architecture with
       `keras_kd.Distiller(teacher, new_student, [Term(KDLoss(T), weight=w)],
       student_loss_weight=1 - alpha)`.

    The reference's loss is `(1 - alpha) * CE + alpha * multiplier * T^2 *
    KL_mean` where `nn.KLDivLoss()` averages over batch and classes, so with
    `KDLoss` (summed over classes, times `T^2`) `w = alpha * multiplier / K`.
    CIFAR-100 settings: MobileNetV2 and ShuffleNetV2 alpha = 0.95, T = 20,
    multiplier = 1; ResNet18 alpha = 0.95, T = 6, multiplier = 50. The
    reference's own fair baseline is "double training": the normal model
    trained again for the same extra epochs.
    """
    if not isinstance(student, keras.Model) or not student.built:
        raise ValueError(f"`student` must be a built keras.Model. Received: student={student!r}")
    teacher = keras.models.clone_model(student)
    if not teacher.built:
        teacher.build_from_config(student.get_build_config())
    teacher.set_weights(student.get_weights())
    teacher.name = f"{student.name}_teacher"
    teacher.trainable = False
    return teacher
