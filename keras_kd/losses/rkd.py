"""Park et al., "Relational Knowledge Distillation", CVPR 2019."""

import keras
from keras import ops

from keras_kd.losses._relational import check_relational_shapes
from keras_kd.losses.base import DistillationLoss, flatten, l2_normalize
from keras_kd.validation import validate_positive

# The reference's clamp of squared distances (`pdist(..., eps=1e-12)`).
_EPS = 1e-12


@keras.saving.register_keras_serializable(package="keras_kd")
class RKDLoss(DistillationLoss):
    """Relational knowledge distillation (Park, Kim, Lu & Cho, "Relational
    Knowledge Distillation", CVPR 2019): the distance-wise and angle-wise
    losses together (RKD-DA).

    With `x_i` the flattened features (any rank; the teacher and student
    sizes may differ) of the `B` examples of a batch:

        d_ij = sqrt(max(||x_i - x_j||^2, 1e-12)) for i != j, d_ii = 0
        psi_D = d / mu,  mu = mean of d_ij over the B (B - 1) pairs i != j
        e_ij = (x_j - x_i) / max(||x_j - x_i||, 1e-12)
        psi_A[i, j, k] = <e_ij, e_ik>    (cosine of the angle j-i-k)
        loss = w_d * mean_{B^2}(huber(psi_D_s, psi_D_t))
             + w_a * mean_{B^3}(huber(psi_A_s, psi_A_t))

    `huber` is the smooth L1 loss with threshold 1 (`0.5 z^2` for `|z| < 1`,
    `|z| - 0.5` beyond), both means run over every entry (the zero diagonal
    and degenerate triplets included), as in the CRD benchmark's reference
    implementation (RepDistiller, `distiller_zoo/RKD.py`). One scalar per
    batch, no `sample_weight`. The loss is 0 whenever the student is a
    scaled, rotated and translated copy of the teacher.

    The angle term builds the (B, B, D) unit differences and a (B, B, B)
    batched product: memory grows as B^2 D + B^3 (each (B, B, B) tensor
    takes 64 MiB at B = 256).

    Published setting: `distance_weight = 25`, `angle_weight = 50`
    (RepDistiller's defaults), term weight 1 (`-b 1`, no KD term: `-a 0`),
    on the penultimate features after global pooling (RepDistiller's
    `feat[-1]`), with no connector.

    Args:
        distance_weight: weight `w_d >= 0` of the distance term.
        angle_weight: weight `w_a >= 0` of the angle term.
    """

    per_sample = False

    def __init__(self, distance_weight=25.0, angle_weight=50.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.distance_weight = validate_positive(
            "distance_weight", distance_weight, allow_zero=True
        )
        self.angle_weight = validate_positive("angle_weight", angle_weight, allow_zero=True)

    def check_shapes(self, teacher_shape, student_shape):
        check_relational_shapes(self, teacher_shape, student_shape)

    def call(self, teacher, student):
        # `build` checks only the first shapes; a reused loss re-checks here.
        self.check_shapes(tuple(teacher.shape), tuple(student.shape))
        # diff[i, j] = x_j - x_i, shared by both terms.
        t_diff = _pairwise_differences(flatten(teacher))
        s_diff = _pairwise_differences(flatten(student))
        loss = ops.zeros((), dtype="float32")
        # A zero weight skips its term (the angle term is the B^3 one).
        if self.distance_weight:
            distance = _smooth_l1(_normalized_distances(s_diff), _normalized_distances(t_diff))
            loss = loss + self.distance_weight * distance
        if self.angle_weight:
            angle = _smooth_l1(_angles(s_diff), _angles(t_diff))
            loss = loss + self.angle_weight * angle
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "distance_weight": self.distance_weight,
            "angle_weight": self.angle_weight,
        }


def _pairwise_differences(x):
    return ops.expand_dims(x, 0) - ops.expand_dims(x, 1)


def _normalized_distances(diff):
    # From the differences rather than |x|^2 + |y|^2 - 2 x.y: same clamp,
    # no cancellation, and identical examples land exactly on the clamp.
    dist = ops.sqrt(ops.maximum(ops.sum(ops.square(diff), axis=-1), _EPS))
    index = ops.arange(ops.shape(dist)[0])
    off_diagonal = ops.cast(ops.expand_dims(index, 0) != ops.expand_dims(index, 1), "float32")
    dist = dist * off_diagonal
    # Clamped distances are > 0, so the reference's mean over d > 0 is the
    # mean over i != j; the guards only matter for a batch of one.
    mean = ops.sum(dist) / ops.maximum(ops.sum(off_diagonal), 1.0)
    return dist / ops.maximum(mean, _EPS)


def _angles(diff):
    unit = l2_normalize(diff, axis=-1)
    return ops.matmul(unit, ops.transpose(unit, (0, 2, 1)))


def _smooth_l1(prediction, target):
    error = ops.abs(prediction - target)
    return ops.mean(ops.where(error < 1.0, 0.5 * ops.square(error), error - 0.5))
