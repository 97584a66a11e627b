"""Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", arXiv:1707.01219, 2017."""

import keras
from keras import ops

from keras_kd.losses.base import (
    DistillationLoss,
    l2_normalize,
    match_spatial,
    require_rank,
)

# F.normalize's floor on the norm.
_EPS = 1e-12


@keras.saving.register_keras_serializable(package="keras_kd")
class NSTLoss(DistillationLoss):
    """Neuron selectivity transfer (Huang & Wang, "Like What You Like:
    Knowledge Distill via Neuron Selectivity Transfer", arXiv:1707.01219,
    2017).

    Each channel of a channels-last map `(B, H, W, C)` is one sample, its
    `H*W` activations flattened and L2-normalized (`x / max(||x||, 1e-12)`).
    The squared maximum mean discrepancy between the teacher's `C_t` channel
    samples `t_i` and the student's `C_s` samples `s_j`, with the polynomial
    kernel `k(x, y) = (x . y)^2` (degree 2, c = 0):

        loss = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j')
               - 2 * mean_{i,j} k(s_j, t_i)

    per example, averaged over the batch: the `NSTLoss.nst_loss` of the CRD
    benchmark (RepDistiller) with `full_loss = True`. The channel counts may
    differ; when the spatial sizes differ the larger map is average-pooled to
    the smaller one first. The kernels are computed from the `C x C` Gram
    matrices, never a `C x C x H*W` tensor.

    Published setting (CRD benchmark, `scripts/run_cifar_distill.sh`): term
    weight 50 (`--distill nst -b 50`, no KD term), one term per residual
    stage (the outputs of every stage, `feat[1:-1]`), the per-layer losses
    summed with equal weight.
    """

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name, **kwargs)

    def check_shapes(self, teacher_shape, student_shape):
        require_rank(self, teacher_shape, student_shape, (4,))

    @staticmethod
    def _channel_samples(features):
        """(B, H, W, C) -> (B, C, H*W), each row of unit L2 norm."""
        height, width, channels = features.shape[1:]
        samples = ops.reshape(features, (-1, height * width, channels))
        samples = ops.transpose(samples, (0, 2, 1))
        return l2_normalize(samples, eps=_EPS)

    @staticmethod
    def _mean_poly_kernel(x, y):
        """Mean over all pairs of rows of (x_i . y_j)^2, per example."""
        return ops.mean(ops.square(ops.einsum("bin,bjn->bij", x, y)), axis=(1, 2))

    def call(self, teacher, student):
        teacher, student = match_spatial(teacher, student)
        teacher = self._channel_samples(teacher)
        student = self._channel_samples(student)
        return (
            self._mean_poly_kernel(teacher, teacher)
            + self._mean_poly_kernel(student, student)
            - 2.0 * self._mean_poly_kernel(student, teacher)
        )
