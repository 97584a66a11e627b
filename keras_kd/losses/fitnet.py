"""Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015."""

import keras
from keras import ops

from keras_kd.losses.base import (
    DistillationLoss,
    flatten,
    match_spatial,
    require_equal_channels,
    require_rank,
)


@keras.saving.register_keras_serializable(package="keras_kd")
class FitNetLoss(DistillationLoss):
    """FitNets hint loss (Romero, Ballas, Kahou, Chassang, Gatta & Bengio,
    "FitNets: Hints for Thin Deep Nets", ICLR 2015).

    The student's guided layer, passed through a learned regressor (the
    connector), is regressed onto the teacher's hint layer. For teacher
    features `t` and (regressed) student features `s` with `N` elements per
    example:

        loss = (1 / N) * sum_i (s[i] - t[i])^2

    per example, averaged over the batch: exactly `nn.MSELoss()` (mean over
    every element) of `HintLoss` in the CRD benchmark (RepDistiller), since
    every example has the same `N`.

    Inputs are channels-last maps `(B, H, W, C)` (or vectors `(B, C)`, or
    sequences `(B, T, C)` of equal shape). When the spatial sizes differ the
    larger map is average-pooled to the smaller one. The channel counts must
    agree: give the term a connector (e.g. `connector='conv1x1'`) to map the
    student to the teacher's channels.

    Published setting (CRD benchmark, `scripts/run_cifar_distill.sh`): term
    weight 100 (`--distill hint -b 100`, no KD term), a single hint at the
    output of the second residual stage (`--hint_layer 2`), the student
    regressed by `ConvReg` (conv + BN + ReLU; a 1x1 conv when the spatial
    sizes agree, so `connector='conv1x1'` is the same but for the ReLU),
    trained in one stage together with cross-entropy (weight 1). The paper
    itself trains the hint in a separate first stage, then the whole student
    with KD.
    """

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name or "fitnet_loss", **kwargs)

    def check_shapes(self, teacher_shape, student_shape):
        require_rank(self, teacher_shape, student_shape, (2, 3, 4))
        if len(teacher_shape) != len(student_shape) or (
            len(teacher_shape) == 3 and teacher_shape[1] != student_shape[1]
        ):
            raise ValueError(
                "FitNetLoss compares features element by element, but the "
                f"teacher has shape {teacher_shape} and the student "
                f"{student_shape}: only (B, H, W, C) maps of different spatial "
                "sizes can be matched (by pooling)."
            )
        require_equal_channels(self, teacher_shape, student_shape)

    def call(self, teacher, student):
        teacher, student = match_spatial(teacher, student)
        return ops.mean(ops.square(flatten(student) - flatten(teacher)), axis=-1)
