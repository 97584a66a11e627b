"""Training schemes beyond one teacher and one student, each built on the
same `Distiller`, losses and callbacks (one module per scheme):

- `mutual.MutualLearning`: peers trained together (Zhang et al. 2018).
- `self_distillation.SelfDistillation`: auxiliary heads taught by the
  deepest one; heads removed or exported as early exits (Zhang et al. 2019).
- `teacher_free`: the virtual teacher (`VirtualTeacherLoss`,
  `virtual_teacher_distiller`) and self-training (`self_teacher`) of Yuan
  et al. 2020.
- `adversarial.AdversarialDistiller`: a discriminator on logits with its own
  optimizer inside the step (Xu et al. 2017).
- `boundary.BoundarySupportingDistiller`: adversarial samples near the
  teacher's decision boundary added to the transfer set (Heo et al. 2019).
- `grafting.GraftingTrainer` and its `FilterGrafting` callback: peers of one
  architecture trained in parallel, each layer grafted from another peer's
  by an entropy-weighted average after every epoch (Meng et al. 2020).
- `noisy_student.NoisyStudent`: self-training in rounds, an un-noised
  teacher's pseudo-labels for a noised, equal-or-larger student that becomes
  the next teacher (Xie et al. 2020).
- `teacher_assistant.TeacherAssistant`: a chain teacher -> assistant(s) ->
  student, each distilled from the one before (Mirzadeh et al. 2020), or
  densely guided by every larger model with random teacher dropping
  (`dense=True`, Son et al. 2021).

Several teachers, privileged inputs and unlabelled data need no scheme
class: the `Distiller` takes a list or dict of teachers, dict batches and
inputs without labels. Two-stage FitNets is the `HintStage` callback.
"""

from keras_kd.schemes import (
    adversarial,
    boundary,
    grafting,
    mutual,
    noisy_student,
    self_distillation,
    teacher_assistant,
    teacher_free,
)
from keras_kd.schemes.adversarial import AdversarialDistiller
from keras_kd.schemes.boundary import BoundarySupportingDistiller
from keras_kd.schemes.grafting import FilterGrafting, GraftingTrainer
from keras_kd.schemes.mutual import MutualLearning
from keras_kd.schemes.noisy_student import NoisyStudent
from keras_kd.schemes.self_distillation import SelfDistillation
from keras_kd.schemes.teacher_assistant import StochasticTeachersDistiller, TeacherAssistant
from keras_kd.schemes.teacher_free import VirtualTeacherLoss, self_teacher, virtual_teacher_distiller

__all__ = [
    "AdversarialDistiller",
    "BoundarySupportingDistiller",
    "FilterGrafting",
    "GraftingTrainer",
    "MutualLearning",
    "NoisyStudent",
    "SelfDistillation",
    "StochasticTeachersDistiller",
    "TeacherAssistant",
    "VirtualTeacherLoss",
    "adversarial",
    "boundary",
    "grafting",
    "mutual",
    "noisy_student",
    "self_distillation",
    "self_teacher",
    "teacher_assistant",
    "teacher_free",
    "virtual_teacher_distiller",
]
