"""Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020."""

import math

import keras
from keras import ops

from keras_kd.losses._learnable import LearnableLoss, torch_default_init
from keras_kd.losses.base import flatten, l2_normalize
from keras_kd.validation import validate_positive, validate_positive_int

EPS = 1e-7  # the reference's `eps` in ContrastLoss

EMBEDDING_EPS = 1e-4  # floor of the embeddings' norm (see CRDHead.call)


@keras.saving.register_keras_serializable(package="keras_kd")
class CRDHead(keras.layers.Layer):
    """The weights and memory of `CRDLoss`.

    * `embed_teacher`, `embed_student`: the reference's `Embed`, a linear
      map of the flattened features to `feature_dim` followed by L2
      normalisation (trainable);
    * `memory_teacher`, `memory_student`: one row per training example
      (num_data, feature_dim), indexed by the example's dataset index,
      initialised like the reference's `ContrastMemory`, uniform in
      +-1/sqrt(feature_dim / 3) (non-trainable);
    * `z_student`, `z_teacher`: the NCE normalisation constants of the
      student-anchor and teacher-anchor scores, -1 until the first training
      batch sets them (non-trainable).

    `call((teacher, student))` returns the embeddings `(e_t, e_s)`.
    """

    def __init__(self, feature_dim=128, num_data=50000, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.feature_dim = validate_positive_int("feature_dim", feature_dim)
        self.num_data = validate_positive_int("num_data", num_data)
        self.seed_generator = keras.random.SeedGenerator(seed=None, name="negatives_seed")

    def build(self, teacher_shape, student_shape):
        self.embed_teacher = self._embed("embed_teacher", teacher_shape)
        self.embed_student = self._embed("embed_student", student_shape)
        stdv = 1.0 / math.sqrt(self.feature_dim / 3.0)
        memory_init = keras.initializers.RandomUniform(-stdv, stdv)
        memory_shape = (self.num_data, self.feature_dim)
        self.memory_teacher = self._state("memory_teacher", memory_shape, memory_init)
        self.memory_student = self._state("memory_student", memory_shape, memory_init)
        self.z_teacher = self._state("z_teacher", (), keras.initializers.Constant(-1.0))
        self.z_student = self._state("z_student", (), keras.initializers.Constant(-1.0))

    def _embed(self, name, feature_shape):
        dense = keras.layers.Dense(
            self.feature_dim, kernel_initializer=torch_default_init(), dtype="float32", name=name
        )
        dense.build((None, math.prod(feature_shape[1:])))
        return dense

    def _state(self, name, shape, initializer):
        # Under tf.distribute, the first replica's update is kept: an average
        # of two replicas' memories would blend unrelated rows.
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=False,
            aggregation="only_first_replica",
        )

    def call(self, inputs):
        teacher, student = inputs
        # eps: the gradient of x / max(||x||, eps) is up to 1 / eps where an
        # embedding vanishes (dead features give bias-only embeddings, 0 at
        # initialisation); 1e-4 keeps it bounded (1e-12 gave 3e12) and leaves
        # embeddings of any ordinary norm unchanged.
        teacher_embedding = l2_normalize(self.embed_teacher(flatten(teacher)), eps=EMBEDDING_EPS)
        student_embedding = l2_normalize(self.embed_student(flatten(student)), eps=EMBEDDING_EPS)
        return teacher_embedding, student_embedding

    def get_config(self):
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "num_data": self.num_data,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class CRDLoss(LearnableLoss):
    """Contrastive representation distillation (Tian, Krishnan & Isola,
    "Contrastive Representation Distillation", ICLR 2020), as in the
    authors' code (RepDistiller `crd/criterion.py`, `crd/memory.py`).

    Teacher and student features (any rank; flattened) are embedded to
    `feature_dim` by a linear layer each and L2-normalised (`e_t`, `e_s`).
    Two memories hold one embedding per training example, indexed by the
    example's dataset index `i`. The student anchor `e_s[i]` must pick out
    the teacher memory row of its own example, `M_t[i]` (the positive), among
    `K` rows `M_t[j]`, `j` uniform over the `N` training examples (the
    negatives); symmetrically the teacher anchor against the student memory.
    With scores `P = exp(e_anchor . M[j] / T) / Z` and noise probability
    `Pn = 1/N`, the NCE loss (`ContrastLoss`, Eq. 18 of the paper) is, per
    direction,

        - [ sum_b log(P_pos / (P_pos + K Pn + eps))
            + sum_{b,k} log(K Pn / (P_neg + K Pn + eps)) ] / B

    and the returned value is the sum of both directions: one scalar per
    batch (`per_sample = False`). `Z = mean(exp(scores / T)) * N` is
    estimated from the first training batch and then kept. After the scores
    are read, each example's rows are updated with momentum `m`:
    `M[i] <- normalize(m * M[i] + (1 - m) * e[i])`. Memory rows are constants
    (no gradient), so the student, its embedding head and the teacher's
    embedding head train, never the teacher. `T = 0.07`, `eps = 1e-7`,
    `m = 0.5`, `K = 16384`, `feature_dim = 128` (the paper's and its code's).

    The index: `y_true` is `(teacher_features, index)`, with `index` the
    integer position of each example in the training set (0 <= i < N). A
    `Distiller` passes it when the batches carry it: wrap the training data
    with `keras_kd.datasets.with_index`. Called without an index (the
    Distiller does so in `evaluate`), the loss reads the memories and writes
    nothing: the positive is then the other network's current embedding of
    the same example, and Z stays as it is (1 if it was never set).

    Negatives are drawn independently for each anchor, uniformly with
    replacement (the reference's `AliasMethod` over uniform weights; the
    example's own row may be drawn), and shared by the two directions, as in
    `ContrastMemory.forward`. When `N` is at most four times `K + 1`, the
    scores against every row are one matrix product and the drawn ones are
    gathered from it (the same numbers, without a (B, K, feature_dim) copy).

    Published setting (CRD benchmark, RepDistiller `scripts/run_cifar_distill.sh`
    and `train_student.py`): weight 0.8 (`--distill crd -a 0 -b 0.8`; with KD
    `-a 1 -b 0.8`) on the penultimate features (`feat[-1]`, the pooled
    vector before the classifier), `feat_dim 128`, `nce_k 16384`,
    `nce_t 0.07`, `nce_m 0.5`, `N` = the training-set size. The reference's
    `--mode exact` draws negatives from other classes (its CIFAR-100 table);
    this loss draws them uniformly (its `idx=None` path).

    Args:
        num_data: `N`, the number of training examples (rows of each memory).
        feature_dim: embedding size (reference `feat_dim = 128`).
        num_negatives: negatives per anchor `K` (reference `nce_k = 16384`).
        temperature: `T` (reference `nce_t = 0.07`).
        momentum: memory momentum `m` in [0, 1) (reference `nce_m = 0.5`).
    """

    per_sample = False
    requires_index = True

    def __init__(
        self,
        num_data=None,
        feature_dim=128,
        num_negatives=16384,
        temperature=0.07,
        momentum=0.5,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if num_data is None:
            raise ValueError(
                "CRDLoss keeps one memory row per training example: pass num_data=<the number of "
                "training examples> (and feed batches from keras_kd.datasets.with_index)."
            )
        self.num_data = validate_positive_int("num_data", num_data)
        if self.num_data > 2**24:
            # Keras' Loss casts y_true, the index with it, to float32: exact up to 2^24.
            raise ValueError(
                f"CRDLoss indexes at most 2**24 examples (the index travels as float32). Received: num_data={num_data!r}"
            )
        self.feature_dim = validate_positive_int("feature_dim", feature_dim)
        self.num_negatives = validate_positive_int("num_negatives", num_negatives)
        self.temperature = validate_positive("temperature", temperature)
        momentum = validate_positive("momentum", momentum, allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum!r}")
        self.momentum = momentum

    def check_shapes(self, teacher_shape, student_shape):
        for side, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if len(shape) < 2 or any(d is None for d in shape[1:]):
                raise ValueError(
                    f"CRDLoss embeds flattened features, so the {side} features need a "
                    "batch dimension and known feature dimensions. Received: teacher "
                    f"shape {teacher_shape} and student shape {student_shape}."
                )
        batches = {teacher_shape[0], student_shape[0]} - {None}
        if len(batches) > 1:
            raise ValueError(
                "CRDLoss pairs teacher and student examples, but the batch sizes "
                f"differ: teacher shape {teacher_shape}, student shape {student_shape}."
            )

    def make_layer(self, teacher_shape, student_shape):
        layer = CRDHead(self.feature_dim, self.num_data, name=f"{self.name}_head")
        layer.build(teacher_shape, student_shape)
        return layer

    def draw_negatives(self, batch):
        """(batch, K) memory rows, uniform over the N examples with replacement."""
        shape = (batch, self.num_negatives)
        return keras.random.randint(shape, 0, self.num_data, seed=self._layer.seed_generator, dtype="int32")

    def _scores(self, anchor, memory, rows):
        """`anchor[b] . memory[rows[b, k]] / T`, shape (B, K + 1)."""
        if self.num_data <= 4 * (self.num_negatives + 1):
            # A copy (small on this path): the product keeps its operand for the
            # gradient, and on PyTorch the memory update after the scores
            # overwrites the variable's storage in place.
            every_row = ops.matmul(anchor, ops.transpose(ops.copy(memory)))  # (B, N)
            scores = ops.take_along_axis(every_row, rows, axis=1)
        else:
            scores = ops.einsum("bd,bkd->bk", anchor, ops.take(memory, rows, axis=0))
        return scores / self.temperature

    def _current_positive_scores(self, anchor, positive, memory, negatives):
        """(B, K + 1) scores whose positive is `positive` itself (detached),
        not a memory row: the form used without an index."""
        positive_score = ops.sum(anchor * ops.stop_gradient(positive), -1, keepdims=True) / self.temperature
        return ops.concatenate([positive_score, self._scores(anchor, memory, negatives)], axis=1)

    def _nce(self, scores, z_variable, training):
        """ContrastLoss of the reference for one direction; Z set once."""
        n_data = float(self.num_data)
        if training:
            first_z = ops.stop_gradient(ops.mean(ops.exp(scores)) * n_data)
            current = ops.convert_to_tensor(z_variable)
            z = ops.where(current < 0, first_z, current)
            z_variable.assign(z)
        else:
            current = ops.convert_to_tensor(z_variable)
            z = ops.where(current < 0, 1.0, current)
        # log(P / (P + K Pn + eps)) in log space (log P = score - log Z), so a
        # P that underflows to 0 gives no log(0).
        k_pn = self.num_negatives / n_data
        log_p = scores - ops.log(z)
        log_denominator = ops.logaddexp(log_p, math.log(k_pn + EPS))
        log_d1 = log_p[:, 0] - log_denominator[:, 0]
        log_d0 = math.log(k_pn) - log_denominator[:, 1:]
        batch = ops.cast(ops.shape(scores)[0], "float32")
        return -(ops.sum(log_d1) + ops.sum(log_d0)) / batch

    def _update(self, memory, index, embeddings):
        """`M[i] <- normalize(m M[i] + (1 - m) e[i])` for the batch's rows."""
        memory_value = ops.convert_to_tensor(memory)
        rows = ops.take(memory_value, index, axis=0)
        updated = l2_normalize(self.momentum * rows + (1.0 - self.momentum) * ops.stop_gradient(embeddings))
        memory.assign(ops.scatter_update(memory_value, ops.expand_dims(index, -1), updated))

    def call(self, y_true, student):
        teacher, index = y_true if isinstance(y_true, (tuple, list)) else (y_true, None)
        self.check_shapes(tuple(teacher.shape), tuple(student.shape))
        layer = self._layer
        teacher_embedding, student_embedding = layer((teacher, student))
        memory_teacher = ops.stop_gradient(ops.convert_to_tensor(layer.memory_teacher))
        memory_student = ops.stop_gradient(ops.convert_to_tensor(layer.memory_student))
        negatives = self.draw_negatives(ops.shape(student_embedding)[0])
        training = index is not None
        if training:
            index = ops.cast(index, "int32")
            rows = ops.concatenate([ops.expand_dims(index, -1), negatives], axis=1)
            student_scores = self._scores(student_embedding, memory_teacher, rows)
            teacher_scores = self._scores(teacher_embedding, memory_student, rows)
        else:
            # No index: the positive is the other network's current embedding.
            student_scores = self._current_positive_scores(
                student_embedding, teacher_embedding, memory_teacher, negatives
            )
            teacher_scores = self._current_positive_scores(
                teacher_embedding, student_embedding, memory_student, negatives
            )
        # Student anchor vs teacher memory, and teacher anchor vs student memory.
        value = self._nce(student_scores, layer.z_student, training) + self._nce(
            teacher_scores, layer.z_teacher, training
        )
        if training:
            # After the scores are read, as in the reference.
            self._update(layer.memory_teacher, index, teacher_embedding)
            self._update(layer.memory_student, index, student_embedding)
        return value

    def get_config(self):
        return {
            **super().get_config(),
            "num_data": self.num_data,
            "feature_dim": self.feature_dim,
            "num_negatives": self.num_negatives,
            "temperature": self.temperature,
            "momentum": self.momentum,
        }
