"""Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019."""

import keras
from keras import ops

from keras_kd.losses._relational import check_relational_shapes
from keras_kd.losses.base import DistillationLoss, flatten, l2_normalize


@keras.saving.register_keras_serializable(package="keras_kd")
class SimilarityPreservingLoss(DistillationLoss):
    """Similarity-preserving distillation (Tung & Mori, "Similarity-Preserving
    Knowledge Distillation", ICCV 2019).

    The student is trained so that examples the teacher finds similar are
    similar for the student too. With `Q` the (B, D) flattened features of a
    batch of `B` examples (any rank, `D` may differ between the networks):

        G = Q Q^T                                   (B, B)
        G[i, :] = G[i, :] / max(||G[i, :]||_2, 1e-12)   row-wise L2 norm
        loss = sum_ij (G_t[i, j] - G_s[i, j])^2 / B^2

    exactly the `Similarity` loss of the CRD benchmark (RepDistiller,
    `distiller_zoo/SP.py`). It is a relational loss: one scalar per batch, no
    `sample_weight`. It is invariant to a common positive scale of all the
    features and to rotations (or orthonormal embeddings into more
    dimensions) of the feature space, but not to per-example scales: the
    rows of `G`, not the features, are normalised.

    Published setting: term weight `gamma = 3000` (RepDistiller's
    `-b 3000`, with no KD term: `-a 0`), on the output of
    the last convolutional stage before global pooling (RepDistiller's
    `feat[-2]`), with no connector; batch size 64.
    """

    per_sample = False

    def check_shapes(self, teacher_shape, student_shape):
        check_relational_shapes(self, teacher_shape, student_shape)

    def call(self, teacher, student):
        # `build` checks only the first shapes; a reused loss re-checks here.
        self.check_shapes(tuple(teacher.shape), tuple(student.shape))
        g_t = _row_normalized_gram(flatten(teacher))
        g_s = _row_normalized_gram(flatten(student))
        batch = ops.cast(ops.shape(teacher)[0], "float32")
        return ops.sum(ops.square(g_t - g_s)) / (batch * batch)


def _row_normalized_gram(features):
    # torch's F.normalize(G): each row of G divided by max(||row||, 1e-12).
    return l2_normalize(ops.matmul(features, ops.transpose(features)), axis=1)

