"""Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network
Minimization and Transfer Learning", CVPR 2017."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss, match_spatial


@keras.saving.register_keras_serializable(package="keras_kd")
class FSPLoss(DistillationLoss):
    """Flow of Solution Procedure (FSP) matrix loss (Yim, Joo, Bae & Kim, "A
    Gift from Knowledge Distillation: Fast Optimization, Network Minimization
    and Transfer Learning", CVPR 2017).

    Takes two feature maps per network, called as
    `loss((teacher_a, teacher_b), (student_a, student_b))`, all channels-last
    `(B, H, W, C)`. For one network's pair `f_a` (C_a channels) and `f_b`
    (C_b channels) the FSP matrix is their spatially averaged outer product:

        G[i, j] = (1 / (H*W)) * sum_{h,w} f_a[h, w, i] * f_b[h, w, j]
        loss = (1 / (C_a * C_b)) * sum_{i,j} (G_s[i, j] - G_t[i, j])^2

    per example, averaged over the batch: the `FSP.compute_loss`
    (`(s - t).pow(2).mean()`) of the CRD benchmark (RepDistiller). Within each
    network, when the two maps differ in spatial size the larger is
    average-pooled to the smaller, as the reference does; teacher and student
    may have different spatial sizes (G does not depend on them) but must have
    the same channels for `a` and for `b`.

    Published setting (CRD benchmark): one term per pair of consecutive
    features `feat[:-1]` (stem, then the output of every residual stage),
    summed with unit weight, used only as an initialization stage: 30 epochs
    training the student's feature layers on the FSP loss alone, then the
    ordinary training with cross-entropy (the FSP term is 0 there, so the
    script's `-b 50` has no effect). The paper likewise pairs the start and
    end of each residual section with equal weights and uses FSP as a
    pre-training stage.
    """

    num_maps = 2

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)

    def check_shapes(self, teacher_shape, student_shape):
        for side, shapes in (("teacher", teacher_shape), ("student", student_shape)):
            if len(shapes) != 2 or any(
                not isinstance(s, (list, tuple)) or len(s) != 4 for s in shapes
            ):
                raise ValueError(
                    "FSPLoss expects a pair of (B, H, W, C) maps per network. "
                    f"Received: {side} shapes {shapes} (teacher shapes "
                    f"{teacher_shape}, student shapes {student_shape})."
                )
        for index, label in enumerate("ab"):
            if teacher_shape[index][-1] != student_shape[index][-1]:
                raise ValueError(
                    "FSPLoss compares C_a x C_b FSP matrices, so teacher and "
                    "student maps must have the same channels; map "
                    f"'{label}' has teacher shape {teacher_shape[index]} and "
                    f"student shape {student_shape[index]} (teacher shapes "
                    f"{teacher_shape}, student shapes {student_shape})."
                )

    @staticmethod
    def _fsp_matrix(first, second):
        first, second = match_spatial(first, second)
        height, width = first.shape[1], first.shape[2]
        first = ops.reshape(first, (-1, height * width, first.shape[-1]))
        second = ops.reshape(second, (-1, height * width, second.shape[-1]))
        return ops.einsum("bnc,bnd->bcd", first, second) / float(height * width)

    def call(self, teacher, student):
        difference = self._fsp_matrix(*student) - self._fsp_matrix(*teacher)
        return ops.mean(ops.square(difference), axis=(1, 2))
