"""Passalis & Tefas, "Learning Deep Representations with Probabilistic
Knowledge Transfer", ECCV 2018."""

import keras
from keras import ops

from keras_kd.losses._relational import check_relational_shapes
from keras_kd.losses.base import DistillationLoss, flatten
from keras_kd.validation import validate_positive


@keras.saving.register_keras_serializable(package="keras_kd")
class PKTLoss(DistillationLoss):
    """Probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep
    Representations with Probabilistic Knowledge Transfer", ECCV 2018).

    Matches the teacher's and student's conditional probability
    distributions of each example's neighbours, built from cosine
    similarities. With `x_i` the flattened features (any rank; the teacher
    and student sizes may differ) of the `B` examples of a batch:

        u_i = x_i / (||x_i|| + eps)   (NaNs set to 0)
        K[i, j] = (<u_i, u_j> + 1) / 2          cosine kernel in [0, 1]
        P[i, j] = K[i, j] / sum_k K[i, k]       row i: p(j | i)
        loss = mean_{i,j}(P_t[i, j] * log((P_t[i, j] + eps) / (P_s[i, j] + eps)))

    the author's code as kept by the CRD benchmark (RepDistiller,
    `distiller_zoo/PKT.py`), `eps = 1e-7`. The mean over all `B^2` entries
    is the summed KL divergence divided by `B^2`. One scalar per batch, no
    `sample_weight`; invariant to per-example positive scales and to
    rotations of either feature space.

    Published setting: term weight 30000 (RepDistiller's `-b 30000`, no KD
    term `-a 0`), on the penultimate features after global pooling
    (RepDistiller's `feat[-1]`), with no connector.

    Args:
        eps: `eps > 0`, added to the norms and inside the log ratio.
    """

    per_sample = False

    def __init__(self, eps=1e-7, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.eps = validate_positive("eps", eps)

    def check_shapes(self, teacher_shape, student_shape):
        check_relational_shapes(self, teacher_shape, student_shape)

    def call(self, teacher, student):
        # `build` checks only the first shapes; a reused loss re-checks here.
        self.check_shapes(tuple(teacher.shape), tuple(student.shape))
        p_t = self._neighbour_probabilities(flatten(teacher))
        p_s = self._neighbour_probabilities(flatten(student))
        return ops.mean(p_t * ops.log((p_t + self.eps) / (p_s + self.eps)))

    def _neighbour_probabilities(self, x):
        sum_sq = ops.sum(ops.square(x), axis=1, keepdims=True)
        # sqrt(0) has an infinite gradient: take it on 1 and select 0 back,
        # so a zero example keeps the exact value and a finite gradient.
        nonzero = sum_sq > 0
        norm = ops.where(nonzero, ops.sqrt(ops.where(nonzero, sum_sq, 1.0)), 0.0)
        unit = x / (norm + self.eps)
        unit = ops.where(ops.isnan(unit), 0.0, unit)
        kernel = (ops.matmul(unit, ops.transpose(unit)) + 1.0) / 2.0
        return kernel / ops.sum(kernel, axis=1, keepdims=True)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
