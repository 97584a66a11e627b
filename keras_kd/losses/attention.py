"""Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017."""

import keras
from keras import ops

from keras_kd.losses.base import DistillationLoss, l2_normalize, match_spatial, require_rank
from keras_kd.validation import validate_positive

# F.normalize's floor on the norm.
_EPS = 1e-12


@keras.saving.register_keras_serializable(package="keras_kd")
class AttentionTransferLoss(DistillationLoss):
    """Activation-based attention transfer (Zagoruyko & Komodakis, "Paying
    More Attention to Attention: Improving the Performance of Convolutional
    Neural Networks via Attention Transfer", ICLR 2017).

    For a channels-last map `f` of shape `(B, H, W, C)` the spatial attention
    map is the channel mean of `|f|^p`, flattened and L2-normalized:

        a(f) = mean_c |f[:, :, :, c]|^p            (H*W values)
        at(f) = a(f) / max(||a(f)||_2, 1e-12)
        loss = (1 / (H*W)) * sum_j (at(s)[j] - at(t)[j])^2

    per example, averaged over the batch: the `Attention.at_loss` of the CRD
    benchmark (RepDistiller), `(at(s) - at(t)).pow(2).mean()`. The channel
    counts may differ; when the spatial sizes differ the larger map is
    average-pooled to the smaller one first.

    Published setting (CRD benchmark, `scripts/run_cifar_distill.sh`): term
    weight 1000 (`--distill attention -b 1000`, no KD term), `p = 2`, one term
    per residual stage (the outputs of every stage, `feat[1:-1]`), the
    per-layer losses summed with equal weight. The paper's `beta = 1000`
    likewise absorbs the division by the attention-map size and batch size.

    Args:
        p: exponent of the attention map, `p > 0` (default 2).
    """

    def __init__(self, p=2, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.p = validate_positive("p", p)

    def check_shapes(self, teacher_shape, student_shape):
        require_rank(self, teacher_shape, student_shape, (4,))

    def _attention(self, features):
        if self.p == 2.0:
            # Same as |f|^2 but with a gradient well defined at 0.
            powered = ops.square(features)
        else:
            # |f|^p (the paper's definition): f^p is NaN for negative f and
            # non-integer p; on the usual post-ReLU maps the two coincide.
            powered = ops.power(ops.abs(features), self.p)
        height, width = features.shape[1], features.shape[2]
        attention = ops.reshape(ops.mean(powered, axis=-1), (-1, height * width))
        return l2_normalize(attention, eps=_EPS)

    def call(self, teacher, student):
        teacher, student = match_spatial(teacher, student)
        difference = self._attention(student) - self._attention(teacher)
        return ops.mean(ops.square(difference), axis=-1)

    def get_config(self):
        return {**super().get_config(), "p": self.p}
