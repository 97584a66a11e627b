"""Heo, Lee, Yun & Choi, "Knowledge Distillation with Adversarial Samples
Supporting Decision Boundary", AAAI 2019 (BSS distillation).

Reference code: github.com/bhheo/BSS_distillation
(`train_BSS_distillation.py`, `attacks/attack_BSS.py`)."""

import keras
import numpy as np
from keras import ops

from keras_kd import backend
from keras_kd.backend import num_replicas
from keras_kd.callbacks import WeightScheduler
from keras_kd.distiller import OUTPUT, Distiller
from keras_kd.sample_index import batch_size_of
from keras_kd.schemes.adversarial import (
    _single_teacher,
    num_classes_of,
    teacher_logits,
)
from keras_kd.schemes.teacher_free import class_ids
from keras_kd.validation import is_int, validate_positive

TARGETS = ("sample", "second")
TRANSFER = "inputs"  # `Distiller.call`'s key of the batch both networks saw (training)
_NORM_EPS = 1e-12  # the reference divides by the raw norm; a zero gradient must not give NaN


def input_gradient(fn, x):
    """`(d objective / d x, aux)` for `objective, aux = fn(x)` (a scalar
    objective): the one place where the attack depends on the backend.
    `aux` comes back without gradient."""
    name = backend.name()
    if name == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            objective, aux = fn(x)
        return tape.gradient(objective, x), keras.tree.map_structure(tf.stop_gradient, aux)
    if name == "jax":
        import jax

        return jax.grad(fn, has_aux=True)(x)
    if name == "torch":
        import torch

        with torch.enable_grad():  # also inside `no_grad` (evaluation, teacher passes)
            x = x.detach().requires_grad_(True)
            objective, aux = fn(x)
            (gradient,) = torch.autograd.grad(objective, x)
        return gradient, keras.tree.map_structure(lambda t: t.detach(), aux)
    raise RuntimeError(
        f"BoundarySupportingDistiller's attack needs the input gradient, implemented for the tensorflow, jax and "
        f"torch backends of Keras; this process runs Keras on {name!r}."
    )


@keras.saving.register_keras_serializable(package="keras_kd")
class BoundarySupportingDistiller(Distiller):
    """Distillation with boundary supporting samples, BSS (Heo, Lee, Yun &
    Choi, AAAI 2019), following the authors' code.

    Each step, besides the Distiller's loss on the clean batch, the teacher
    is attacked to find samples near its decision boundaries, and the
    student learns the teacher's outputs there too:

    1. Base samples: those the teacher classifies correctly (argmax = label).
       At most `ceil(bss_fraction * batch)` of them are attacked (the
       reference attacks 64 of 256): those where teacher and student
       disagree most, by `sum_{k != y} (p_t[k] - p_s[k])^2` (softmax at T=1).
    2. Target class `e` per sample, among the classes other than the
       teacher's top-1 `b`: `target="sample"` draws it with probability
       proportional to the teacher's softmax (the reference); `"second"`
       takes the second most likely class.
    3. `num_steps` iterations of the reference's attack on the teacher's
       logits `f` (inference mode), for samples still classified as `b`:

           g = d(f_e - f_b)/dx,
           x <- x + step_size * (f_b(x) - f_e(x) + 1e-4) * g / ||g||_2

       a step along the gradient of the logit difference, proportional to
       the remaining margin, which moves `x` to the b/e boundary; a sample
       stops once the teacher's prediction leaves `b`. `input_range`
       (min, max) clips the samples (the reference clips its normalised
       CIFAR images to [-2.5, 2.5]; default: no clipping).
    4. The BSS term, on the attacked samples only (teacher in inference
       mode, student in training mode, a second student forward pass as in
       the reference):

           bss_kd_loss = mean_i KL(softmax(t_i / T) || softmax(s_i / T))

       averaged over the attacked base samples (0 if there are none; when
       fewer base samples than `ceil(bss_fraction * batch)` exist, the rest
       of the fixed-size selection is padding with weight 0, which only
       touches the student's BatchNorm statistics). This has the gradient
       of the reference's soft cross-entropy (without `T^2`); the logged
       value leaves out the teacher's entropy, so it is 0 when the student
       matches. Total: Distiller loss + `bss_weight * bss_kd_loss`.

    The samples are built under `stop_gradient`: no gradient reaches the
    teacher or flows through the attack. The supervised loss and the
    Distiller's terms see the clean batch only. Logs: everything the
    Distiller logs plus `bss_kd_loss` (0 in `evaluate`, which runs no
    attack). Sample weights do not apply to the BSS term.

    Reference constants (CIFAR-10, `train_BSS_distillation.py`): T = 3,
    10 attack steps, step size 0.3 (L2 attack), 64 attacked samples per
    batch of 256, and per-epoch weights `ratio = max(3 (1 - e/E), 0) + 1`
    on the clean KD term and `ratio_attack = max(2 (1 - 4e/(3E)), 0)` on
    the BSS term (epoch e = 1..E): `bss_weight` = 2 with `bss_schedulers`
    reproduces them. The step size is in input units: the reference's
    inputs are normalised per channel (std 1); rescale it for other input
    scales.

    Args:
        teacher, student, terms, student_loss_weight, stop_on_nan: as in
            `keras_kd.Distiller` (one teacher; both output logits (batch, K)).
            With `augmentation`, the attack starts from the augmented batch.
        num_steps: attack iterations, an int >= 1 (unrolled in the step).
        step_size: the attack's step size `eta > 0`.
        bss_weight: the BSS term's weight, >= 0; the weight variable of the
            scheme term `bound_term("bss_kd_loss")`, so a `WeightScheduler`
            can change it.
        bss_fraction: fraction of the batch attacked, in (0, 1].
        temperature: the BSS term's softmax temperature, > 0.
        target: "sample" or "second" (how the target class is chosen).
        input_range: None or (min, max) to clip the samples to.
        seed: seed of the target-class sampling.
    """

    def __init__(
        self,
        teacher,
        student,
        terms=(),
        student_loss_weight=1.0,
        num_steps=10,
        step_size=0.3,
        bss_weight=2.0,
        bss_fraction=0.25,
        temperature=3.0,
        target="sample",
        input_range=None,
        seed=None,
        stop_on_nan=True,
        name="bss_distiller",
        **kwargs,
    ):
        _single_teacher(teacher, "BoundarySupportingDistiller")
        super().__init__(
            teacher,
            student,
            terms,
            student_loss_weight=student_loss_weight,
            stop_on_nan=stop_on_nan,
            name=name,
            **kwargs,
        )
        self.num_classes = num_classes_of(teacher, student, "BoundarySupportingDistiller")
        if not is_int(num_steps) or num_steps < 1:
            raise ValueError(f"`num_steps` must be an int >= 1. Received: num_steps={num_steps!r}")
        self.num_steps = num_steps
        self.step_size = validate_positive("step_size", step_size)
        self.bss_weight = validate_positive("bss_weight", bss_weight, allow_zero=True)
        self.bss_fraction = validate_positive("bss_fraction", bss_fraction)
        if self.bss_fraction > 1:
            raise ValueError(f"`bss_fraction` must be in (0, 1]. Received: bss_fraction={bss_fraction!r}")
        self.temperature = validate_positive("temperature", temperature)
        if target not in TARGETS:
            raise ValueError(f"`target` must be one of {list(TARGETS)}. Received: target={target!r}")
        self.target = target
        if input_range is not None:
            if (
                not isinstance(input_range, (list, tuple))
                or len(input_range) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in input_range)
                or not input_range[0] < input_range[1]
            ):
                raise ValueError(
                    f"`input_range` must be None or (min, max) with min < max. Received: input_range={input_range!r}"
                )
            input_range = (float(input_range[0]), float(input_range[1]))
        self.input_range = input_range
        if seed is not None and not is_int(seed):
            raise ValueError(f"`seed` must be None or an int. Received: seed={seed!r}")
        self.seed = seed
        if "bss_kd_loss" in self.term_weights:
            raise ValueError("The term name 'bss_kd_loss' is reserved by BoundarySupportingDistiller; rename the term.")
        # The base samples are chosen on the teacher's logits, even when no term reads them.
        self.read_teacher_features([OUTPUT])
        self.seed_generator = keras.random.SeedGenerator(seed, name="bss_target_seed")
        self.bss_term = self.add_term("bss_kd_loss", self.bss_weight)

    # ---- the attack ---------------------------------------------------------

    def attack(self, x, base_class, target_class):
        """Move each sample of `x` from the teacher's class `base_class`
        toward `target_class` (int tensors (batch,)) with the reference's
        iterative update; returns samples of `x`'s shape, without gradient."""
        x = ops.convert_to_tensor(x)
        base = ops.one_hot(base_class, self.num_classes, dtype="float32")
        target = ops.one_hot(target_class, self.num_classes, dtype="float32")

        def margin(x_adv):
            logits = ops.cast(self.teacher(ops.cast(x_adv, x.dtype), training=False), "float32")
            f_base = ops.sum(logits * base, axis=-1)
            f_target = ops.sum(logits * target, axis=-1)
            return ops.sum(f_target - f_base), (logits, f_base, f_target)

        x_adv = ops.stop_gradient(ops.cast(x, "float32"))
        per_sample = (-1,) + (1,) * (len(x_adv.shape) - 1)
        feature_axes = tuple(range(1, len(x_adv.shape)))
        for _ in range(self.num_steps):  # a fixed, small number of iterations: unrolled
            gradient, (logits, f_base, f_target) = input_gradient(margin, x_adv)
            # Samples already past the boundary stop moving.
            active = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), base_class), "float32")
            norm = ops.sqrt(ops.maximum(ops.sum(ops.square(gradient), axis=feature_axes), _NORM_EPS**2))
            scale = self.step_size * active * (f_base - f_target + 1e-4) / norm
            x_adv = ops.stop_gradient(x_adv + ops.reshape(scale, per_sample) * gradient)
            if self.input_range is not None:
                x_adv = ops.clip(x_adv, *self.input_range)
        return ops.stop_gradient(ops.cast(x_adv, x.dtype))

    def target_classes(self, logits):
        """Target class per sample: any class but the teacher's top-1, drawn
        in proportion to the teacher's softmax ("sample") or the second most
        likely ("second")."""
        logits = ops.cast(logits, "float32")
        top1 = ops.argmax(logits, axis=-1)
        masked = ops.where(ops.one_hot(top1, self.num_classes) > 0.5, -1e9, logits)
        if self.target == "second":
            return ops.cast(ops.argmax(masked, axis=-1), "int32")
        draw = keras.random.categorical(masked, 1, seed=self.seed_generator, dtype="int32")
        return ops.reshape(draw, (-1,))

    def attack_count(self, batch):
        """`min(batch, ceil(bss_fraction * batch))`, computed in float32 on
        every backend; a Python int when the batch size is static."""
        if isinstance(batch, int):
            return min(batch, int(np.ceil(np.float32(self.bss_fraction) * np.float32(batch))))
        count = ops.cast(ops.ceil(np.float32(self.bss_fraction) * ops.cast(batch, "float32")), "int32")
        return ops.minimum(batch, count)

    def boundary_supporting_samples(self, x, y, teacher_logits, student_logits):
        """(samples, weights) for one batch: `ceil(bss_fraction * batch)`
        attacked samples and, per sample, 1.0 if it was a base sample (the
        teacher classified it correctly) else 0.0 (padding when fewer base
        samples than that exist)."""
        if isinstance(x, (dict, list, tuple)):
            raise ValueError(  # noqa: TRY004 (ValueError throughout, as in Distiller)
                "BoundarySupportingDistiller attacks a single input tensor. Received: a structure of "
                f"{type(x).__name__}."
            )
        x = ops.convert_to_tensor(x)
        labels = class_ids(ops.convert_to_tensor(y), self.num_classes, "BoundarySupportingDistiller")
        teacher_logits = ops.cast(teacher_logits, "float32")
        student_logits = ops.cast(student_logits, "float32")
        top1 = ops.cast(ops.argmax(teacher_logits, axis=-1), "int32")
        correct = ops.equal(top1, labels)
        # Rank base samples by teacher-student disagreement off the true class.
        disagreement = ops.square(ops.softmax(teacher_logits, axis=-1) - ops.softmax(student_logits, axis=-1))
        score = ops.sum(disagreement * (1.0 - ops.one_hot(labels, self.num_classes)), axis=-1)
        score = ops.where(correct, score, -1.0)  # scores are >= 0
        _, index = ops.top_k(score, k=self.attack_count(ops.shape(x)[0]))
        weights = ops.cast(ops.take(correct, index, axis=0), "float32")
        chosen_logits = ops.take(teacher_logits, index, axis=0)
        samples = self.attack(
            ops.take(x, index, axis=0), ops.take(top1, index, axis=0), self.target_classes(chosen_logits)
        )
        return samples, weights

    def bss_kd_loss(self, teacher_logits, student_logits, weights):
        """mean over attacked base samples of KL(p_t^T || p_s^T)."""
        temperature = self.temperature
        log_p_teacher = ops.log_softmax(ops.cast(teacher_logits, "float32") / temperature, axis=-1)
        log_p_student = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
        kl = ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
        value = ops.sum(weights * kl) / ops.maximum(ops.sum(weights), 1.0)
        # Keras sums replica gradients; scale like its per-sample losses.
        return value / num_replicas()

    # ---- the step -----------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The Distiller's loss on the clean batch plus `bss_weight *
        bss_kd_loss` (0 in evaluation, which runs no attack)."""
        total = super().compute_loss(x, y, y_pred, sample_weight, training)
        if not self.returns_features:
            return total
        if training:
            value = self.boundary_supporting_loss(y_pred[TRANSFER], self.mixed_labels(y, y_pred), y_pred)
        else:
            value = ops.zeros((), "float32")
        self.bss_term.track(value, batch_size_of(x))
        return total + self.bss_term.weighted(value)

    def boundary_supporting_loss(self, x, y, outputs):
        """`bss_kd_loss` on the samples attacked from the batch `x`: both
        networks run on them (teacher in inference mode, outside the
        gradient; student in training mode)."""
        if y is None:
            raise ValueError(
                "BoundarySupportingDistiller attacks the samples the teacher classifies correctly, so it needs "
                "the labels. Feed (x, y) batches."
            )
        samples, weights = self.boundary_supporting_samples(
            x, y, teacher_logits(outputs["teacher"]), ops.stop_gradient(outputs["student"][OUTPUT])
        )
        with backend.no_grad():
            teacher_on_samples = ops.stop_gradient(self.teacher(samples, training=False))
        student_on_samples = self.student(samples, training=True)
        return self.bss_kd_loss(teacher_on_samples, student_on_samples, weights)

    def get_config(self):
        return {
            **super().get_config(),
            "num_steps": self.num_steps,
            "step_size": self.step_size,
            "bss_weight": self.bss_weight,
            "bss_fraction": self.bss_fraction,
            "temperature": self.temperature,
            "target": self.target,
            "input_range": list(self.input_range) if self.input_range is not None else None,
            "seed": self.seed,
        }


def bss_schedulers(epochs, kd_term=None, kd_temperature=None):
    """The reference's per-epoch weights as `WeightScheduler` callbacks.

    BSS term: `max(2 (1 - 4e / (3E)), 0)` at (1-based) epoch e of E, from
    ~2 down to 0 at 3/4 of training. With `kd_term` (the name of the clean
    KD term), also `max(3 (1 - e/E), 0) + 1`, from ~4 down to 1, divided by
    `kd_temperature^2` when given: the reference's KD is the soft
    cross-entropy without `T^2`, while `KDLoss` multiplies by `T^2`. The
    schedules are callables, so these callbacks cannot be serialized.
    """
    if not is_int(epochs) or epochs < 1:
        raise ValueError(f"`epochs` must be an int >= 1. Received: epochs={epochs!r}")
    schedulers = [
        WeightScheduler("bss_kd_loss", lambda epoch: max(2.0 * (1.0 - 4.0 / 3.0 * (epoch + 1) / epochs), 0.0))
    ]
    if kd_term is not None:
        scale = 1.0 / validate_positive("kd_temperature", kd_temperature) ** 2 if kd_temperature else 1.0
        schedulers.append(
            WeightScheduler(kd_term, lambda epoch: scale * (max(3.0 * (1.0 - (epoch + 1) / epochs), 0.0) + 1.0))
        )
    return schedulers
