"""Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020."""

import math

import keras
import tensorflow as tf
from keras import ops

from keras_kd.losses._learnable import (
    LearnableLoss,
    torch_default_init,
    validate_positive_int,
)
from keras_kd.losses.base import (
    flatten,
    l2_normalize,
    validate_positive,
)

EPS = 1e-7  # the reference's `eps` in ContrastLoss


@keras.saving.register_keras_serializable(package="keras_kd")
class CRDHead(keras.layers.Layer):
    """The weights and memory of `CRDLoss`.

    * `embed_teacher`, `embed_student`: the reference's `Embed`, a linear
      map of the flattened features to `feature_dim` followed by L2
      normalisation (trainable);
    * `memory_teacher`, `memory_student`: FIFO queues (memory_size,
      feature_dim) of past embeddings, oldest first, initialised like the
      reference's memory, uniform in +-1/sqrt(feature_dim / 3)
      (non-trainable);
    * `z_student`, `z_teacher`: the NCE normalisation constants of the
      student-anchor and teacher-anchor scores, -1 until the first batch
      sets them (non-trainable).

    `call((teacher, student))` returns the embeddings `(z_t, z_s)`.
    """

    def __init__(self, feature_dim=128, memory_size=4096, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.feature_dim = validate_positive_int("feature_dim", feature_dim)
        self.memory_size = validate_positive_int("memory_size", memory_size)

    def build(self, teacher_shape, student_shape):
        self.embed_teacher = keras.layers.Dense(
            self.feature_dim,
            kernel_initializer=torch_default_init(),
            dtype="float32",
            name="embed_teacher",
        )
        self.embed_student = keras.layers.Dense(
            self.feature_dim,
            kernel_initializer=torch_default_init(),
            dtype="float32",
            name="embed_student",
        )
        self.embed_teacher.build((None, math.prod(teacher_shape[1:])))
        self.embed_student.build((None, math.prod(student_shape[1:])))
        stdv = 1.0 / math.sqrt(self.feature_dim / 3.0)
        memory_init = keras.initializers.RandomUniform(-stdv, stdv)
        memory_shape = (self.memory_size, self.feature_dim)
        self.memory_teacher = self._state("memory_teacher", memory_shape, memory_init)
        self.memory_student = self._state("memory_student", memory_shape, memory_init)
        self.z_teacher = self._state("z_teacher", (), keras.initializers.Constant(-1.0))
        self.z_student = self._state("z_student", (), keras.initializers.Constant(-1.0))

    def _state(self, name, shape, initializer):
        # Under tf.distribute, the first replica's update is kept (its batch
        # is enqueued): an average of two replicas' queues is no embedding.
        return self.add_weight(
            name=name,
            shape=shape,
            initializer=initializer,
            trainable=False,
            aggregation="only_first_replica",
        )

    def call(self, inputs):
        teacher, student = inputs
        teacher_embedding = l2_normalize(self.embed_teacher(flatten(teacher)))
        student_embedding = l2_normalize(self.embed_student(flatten(student)))
        return teacher_embedding, student_embedding

    def get_config(self):
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "memory_size": self.memory_size,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class CRDLoss(LearnableLoss):
    """Contrastive representation distillation (Tian, Krishnan & Isola,
    "Contrastive Representation Distillation", ICLR 2020).

    Teacher and student features (any rank; flattened) are embedded to
    `feature_dim` by a linear layer each and L2-normalised (`e_t`, `e_s`).
    Each example's student embedding must pick out its own teacher
    embedding (the positive) among `K` negatives drawn from a memory of
    past teacher embeddings, and symmetrically for the teacher anchor
    against a memory of student embeddings. With scores
    `P = exp(e_anchor . e_other / T) / Z` and noise probability `Pn = 1/N`,
    the NCE loss of the reference (`ContrastLoss`, Eq. 18 of the paper) is,
    per direction,

        - [ sum_b log(P_pos / (P_pos + K Pn + eps))
            + sum_{b,k} log(K Pn / (P_neg + K Pn + eps)) ] / B

    and the returned value is the sum of both directions: one scalar per
    batch (`per_sample = False`). `Z = mean(exp(scores)) * N` is estimated
    once, from the first batch (positives and negatives), and then kept, as in
    the reference. `T = 0.07`, `eps = 1e-7`. Within each direction only the
    anchor carries a gradient: the positive and the negatives play the
    reference's detached memory entries, so the student, the student
    embedding and the teacher embedding head are trained, never the teacher.

    Published setting (CRD benchmark, RepDistiller `scripts/run_cifar_distill.sh`
    and `train_student.py`): weight 0.8 (`--distill crd -a 0 -b 0.8`; with KD
    `-a 1 -b 0.8`) on the penultimate features (`feat[-1]`, the pooled
    vector before the classifier), `feat_dim 128`, `nce_k 16384`,
    `nce_t 0.07`, `nce_m 0.5`, `N` = the training-set size (50000).

    Deviations from the reference, because the `Distiller` passes no dataset
    indices:

    * Memory: the reference stores one entry per training example, indexed
      by the example's dataset index. Here each memory is a FIFO queue
      (MoCo-style) of the `memory_size` most recent embeddings; every call
      enqueues the batch's detached embeddings, after the negatives are
      read, by variable assignment (so it works in `tf.function` and XLA).
      `N` (in `Pn = 1/N` and in `Z`) is `memory_size`. The momentum update
      becomes: the enqueued entry is `normalize(momentum * oldest + (1 -
      momentum) * e)`, blending with the entry it replaces. When
      `memory_size` equals the dataset size, the batch size divides it and
      the data come in a fixed order, the replaced entry is the same
      example's previous one and this is exactly the reference's update;
      with shuffled data it blends different examples, so
      `momentum=0` (a plain queue, the default) is right there. Every call
      updates the queue, evaluation calls included. Under `tf.distribute`
      the first replica's batch is enqueued.
    * Positives: the current embedding of the same example from the other
      network, detached (the reference reads the example's memory entry,
      a momentum average of its embeddings from earlier epochs).
    * Negatives: with `num_negatives == memory_size` (default) the whole
      queue; otherwise `num_negatives` entries drawn uniformly with
      replacement (like the reference's uniform sampler) — one draw shared
      by the whole batch and both directions, not one per example.
      The queue may hold an older embedding of an anchor's own example.
    * `num_negatives` defaults to 4096, not the reference's 16384, so the
      memory stays meaningful on datasets smaller than CIFAR-100's 50000
      examples; keep `memory_size` at most the dataset size (older entries
      are stale), and at least the batch size.

    Args:
        feature_dim: embedding size (reference `feat_dim = 128`).
        num_negatives: negatives per anchor `K` (reference `nce_k = 16384`).
        temperature: `T` (reference `nce_t = 0.07`).
        momentum: weight of the replaced memory entry in [0, 1). Default 0, a
            plain queue, because with shuffled data the replaced entry is
            another example (reference `nce_m = 0.5` with indexed memory; see
            above).
        memory_size: queue length `N`; None means `num_negatives`. Must be
            >= `num_negatives`.
    """

    per_sample = False

    def __init__(
        self,
        feature_dim=128,
        num_negatives=4096,
        temperature=0.07,
        momentum=0.0,
        memory_size=None,
        name=None,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.feature_dim = validate_positive_int("feature_dim", feature_dim)
        self.num_negatives = validate_positive_int("num_negatives", num_negatives)
        self.temperature = validate_positive("temperature", temperature)
        momentum = validate_positive("momentum", momentum, allow_zero=True)
        if momentum >= 1:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum!r}")
        self.momentum = momentum
        if memory_size is not None:
            memory_size = validate_positive_int("memory_size", memory_size)
            if memory_size < self.num_negatives:
                raise ValueError(
                    "`memory_size` must be >= `num_negatives` (negatives are drawn from "
                    f"the memory). Received: memory_size={memory_size!r}, "
                    f"num_negatives={num_negatives!r}"
                )
        self.memory_size = memory_size

    @property
    def queue_size(self):
        return self.num_negatives if self.memory_size is None else self.memory_size

    def check_shapes(self, teacher_shape, student_shape):
        for side, shape in (("teacher", teacher_shape), ("student", student_shape)):
            if len(shape) < 2 or any(d is None for d in shape[1:]):
                raise ValueError(
                    f"CRDLoss embeds flattened features, so the {side} features need a "
                    "batch dimension and known feature dimensions; received teacher "
                    f"shape {teacher_shape} and student shape {student_shape}."
                )
        batches = {teacher_shape[0], student_shape[0]} - {None}
        if len(batches) > 1:
            raise ValueError(
                "CRDLoss pairs teacher and student examples, but the batch sizes "
                f"differ: teacher shape {teacher_shape}, student shape {student_shape}."
            )
        if batches and max(batches) > self.queue_size:
            raise ValueError(
                f"CRDLoss enqueues each batch into a memory of {self.queue_size} "
                f"entries, fewer than the batch: teacher shape {teacher_shape}, "
                f"student shape {student_shape}. Raise `memory_size`."
            )

    def make_layer(self, teacher_shape, student_shape):
        layer = CRDHead(self.feature_dim, self.queue_size, name=f"{self.name}_head")
        layer.build(teacher_shape, student_shape)
        return layer
        super().build(teacher_shape, student_shape)

    def _negatives(self, memories):
        if self.num_negatives == self.queue_size:
            return memories
        # Uniform with replacement, one draw for the batch (XLA-friendly).
        index = tf.random.uniform((self.num_negatives,), 0, self.queue_size, dtype="int32")
        return tuple(ops.take(memory, index, axis=0) for memory in memories)

    def _nce(self, anchor, positive, negatives, z_variable):
        """ContrastLoss of the reference for one direction; sets Z once."""
        positive_logit = ops.sum(anchor * positive, axis=-1, keepdims=True) / self.temperature
        negative_logits = ops.matmul(anchor, ops.transpose(negatives)) / self.temperature
        logits = ops.concatenate([positive_logit, negative_logits], axis=-1)  # (B, 1 + K)

        n_data = float(self.queue_size)
        first_z = ops.stop_gradient(ops.mean(ops.exp(logits)) * n_data)
        z = ops.where(z_variable < 0, first_z, z_variable)
        z_variable.assign(z)

        # The reference's log(P / (P + K Pn + eps)) in log space (log P =
        # logits - log Z), so a P that underflows to 0 gives no log(0).
        k_pn = self.num_negatives / n_data
        log_p = logits - ops.log(z)
        log_denominator = ops.logaddexp(log_p, math.log(k_pn + EPS))
        log_d1 = log_p[:, 0] - log_denominator[:, 0]
        log_d0 = math.log(k_pn) - log_denominator[:, 1:]
        batch = ops.cast(ops.shape(anchor)[0], "float32")
        return -(ops.sum(log_d1) + ops.sum(log_d0)) / batch

    def _enqueue(self, memory, embeddings):
        """Drop the oldest `B` entries, append the batch's (momentum-blended)."""
        batch = ops.shape(embeddings)[0]
        memory_value = ops.convert_to_tensor(memory)
        embeddings = ops.stop_gradient(embeddings)
        if self.momentum:
            embeddings = l2_normalize(
                self.momentum * memory_value[:batch] + (1.0 - self.momentum) * embeddings
            )
        memory.assign(ops.concatenate([memory_value[batch:], embeddings], axis=0))

    def call(self, teacher, student):
        # The batch size (vs the memory size) is often known only here.
        self.check_shapes(tuple(teacher.shape), tuple(student.shape))
        layer = self._layer
        teacher_embedding, student_embedding = layer((teacher, student))
        negatives_teacher, negatives_student = self._negatives(
            (
                ops.convert_to_tensor(layer.memory_teacher),
                ops.convert_to_tensor(layer.memory_student),
            )
        )
        # Student anchor vs teacher memory, and teacher anchor vs student memory.
        student_anchor_loss = self._nce(
            student_embedding,
            ops.stop_gradient(teacher_embedding),
            negatives_teacher,
            layer.z_student,
        )
        teacher_anchor_loss = self._nce(
            teacher_embedding,
            ops.stop_gradient(student_embedding),
            negatives_student,
            layer.z_teacher,
        )
        # After the negatives are read: the batch never contrasts with itself.
        self._enqueue(layer.memory_teacher, teacher_embedding)
        self._enqueue(layer.memory_student, student_embedding)
        return student_anchor_loss + teacher_anchor_loss

    def get_config(self):
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "num_negatives": self.num_negatives,
            "temperature": self.temperature,
            "momentum": self.momentum,
            "memory_size": self.memory_size,
        }
