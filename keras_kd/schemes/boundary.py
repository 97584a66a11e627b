"""Heo, Lee, Yun & Choi, "Knowledge Distillation with Adversarial Samples
Supporting Decision Boundary", AAAI 2019 (BSS distillation).

Reference code: github.com/bhheo/BSS_distillation
(`train_BSS_distillation.py`, `attacks/attack_BSS.py`)."""

import keras
import tensorflow as tf

from keras_kd.callbacks import WeightScheduler
from keras_kd.distiller import OUTPUT, Distiller
from keras_kd.losses.base import is_int, num_replicas, validate_positive
from keras_kd.schemes.adversarial import _single_teacher, ensure_teacher_output, num_classes_of, teacher_logits
from keras_kd.schemes.teacher_free import class_ids

TARGETS = ("sample", "second")
_NORM_EPS = 1e-12  # the reference divides by the raw norm; a zero gradient must not give NaN


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
        num_steps: attack iterations, an int >= 1 (unrolled in the step).
        step_size: the attack's step size `eta > 0`.
        bss_weight: the BSS term's weight, >= 0; a variable in
            `term_weights["bss_kd_loss"]`, so a `WeightScheduler` can
            change it.
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
        ensure_teacher_output(self)
        self.seed_generator = keras.random.SeedGenerator(seed, name="bss_target_seed")
        self.term_weights["bss_kd_loss"] = keras.Variable(self.bss_weight, trainable=False, name="bss_kd_loss_weight")
        self.term_trackers["bss_kd_loss"] = keras.metrics.Mean(name="bss_kd_loss")

    # ---- the attack ---------------------------------------------------------

    def attack(self, x, base_class, target_class):
        """Move each sample of `x` from the teacher's class `base_class`
        toward `target_class` (int tensors (batch,)) with the reference's
        iterative update; returns samples of `x`'s shape, without gradient."""
        x_adv = tf.stop_gradient(tf.cast(x, "float32"))
        base = tf.one_hot(base_class, self.num_classes, dtype="float32")
        target = tf.one_hot(target_class, self.num_classes, dtype="float32")
        per_sample = (-1,) + (1,) * (len(x_adv.shape) - 1)
        feature_axes = list(range(1, len(x_adv.shape)))
        for _ in range(self.num_steps):  # a fixed, small number of iterations: unrolled
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                logits = tf.cast(self.teacher(tf.cast(x_adv, x.dtype), training=False), "float32")
                f_base = tf.reduce_sum(logits * base, axis=-1)
                f_target = tf.reduce_sum(logits * target, axis=-1)
                objective = tf.reduce_sum(f_target - f_base)
            gradient = tape.gradient(objective, x_adv)
            # Samples already past the boundary stop moving.
            active = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type="int32"), base_class), "float32")
            norm = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(gradient), axis=feature_axes), _NORM_EPS**2))
            scale = self.step_size * active * (f_base - f_target + 1e-4) / norm
            x_adv = x_adv + tf.reshape(scale, per_sample) * gradient
            if self.input_range is not None:
                x_adv = tf.clip_by_value(x_adv, *self.input_range)
        return tf.stop_gradient(tf.cast(x_adv, x.dtype))

    def target_classes(self, logits):
        """Target class per sample: any class but the teacher's top-1, drawn
        in proportion to the teacher's softmax ("sample") or the second most
        likely ("second")."""
        top1 = tf.argmax(logits, axis=-1, output_type="int32")
        masked = tf.where(tf.one_hot(top1, self.num_classes) > 0.5, tf.constant(-1e9, logits.dtype), logits)
        if self.target == "second":
            return tf.argmax(masked, axis=-1, output_type="int32")
        draw = keras.random.categorical(masked, 1, seed=self.seed_generator, dtype="int32")
        return tf.reshape(draw, (-1,))

    def boundary_supporting_samples(self, x, y, teacher_logits, student_logits):
        """(samples, weights) for one batch: `ceil(bss_fraction * batch)`
        attacked samples and, per sample, 1.0 if it was a base sample (the
        teacher classified it correctly) else 0.0 (padding when fewer base
        samples than that exist)."""
        if not isinstance(x, tf.Tensor) and not hasattr(x, "shape"):
            raise ValueError("BoundarySupportingDistiller attacks a single input tensor; received a structure.")
        x = tf.convert_to_tensor(x)
        labels = class_ids(y, self.num_classes, "BoundarySupportingDistiller")
        teacher_logits = tf.cast(teacher_logits, "float32")
        student_logits = tf.cast(student_logits, "float32")
        top1 = tf.argmax(teacher_logits, axis=-1, output_type="int32")
        correct = tf.equal(top1, labels)
        # Rank base samples by teacher-student disagreement off the true class.
        disagreement = tf.square(tf.nn.softmax(teacher_logits) - tf.nn.softmax(student_logits))
        score = tf.reduce_sum(disagreement * (1.0 - tf.one_hot(labels, self.num_classes)), axis=-1)
        score = tf.where(correct, score, tf.fill(tf.shape(score), tf.constant(-1.0)))  # scores are >= 0
        batch = tf.shape(x)[0]
        count = tf.minimum(batch, tf.cast(tf.math.ceil(self.bss_fraction * tf.cast(batch, "float32")), "int32"))
        _, index = tf.math.top_k(score, k=count)
        weights = tf.cast(tf.gather(correct, index), "float32")
        chosen_logits = tf.gather(teacher_logits, index)
        samples = self.attack(tf.gather(x, index), tf.gather(top1, index), self.target_classes(chosen_logits))
        return samples, weights

    def bss_kd_loss(self, teacher_logits, student_logits, weights):
        """mean over attacked base samples of KL(p_t^T || p_s^T)."""
        temperature = self.temperature
        log_p_teacher = tf.nn.log_softmax(tf.cast(teacher_logits, "float32") / temperature, axis=-1)
        log_p_student = tf.nn.log_softmax(tf.cast(student_logits, "float32") / temperature, axis=-1)
        kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
        value = tf.reduce_sum(weights * kl) / tf.maximum(tf.reduce_sum(weights), 1.0)
        # Keras sums replica gradients; scale like its per-sample losses.
        return value / num_replicas()

    # ---- the step -----------------------------------------------------------

    def train_step(self, data):
        # Overrides the whole step, not `transfer_batch`: the samples depend
        # on the student's clean outputs, and the supervised loss must not
        # see them.
        x, y, sample_weight = self.transfer_batch(*keras.utils.unpack_x_y_sample_weight(data))
        if y is None:
            raise ValueError(
                "BoundarySupportingDistiller attacks the samples the teacher classifies correctly, so it needs "
                "the labels. Feed (x, y) batches."
            )
        teacher_features = self.frozen_teacher_features(x)
        with tf.GradientTape() as tape:
            student_features = self._student_features(x, training=True)
            values, total = self.compute_losses(x, y, sample_weight, teacher_features, student_features, training=True)
            with tape.stop_recording():
                samples, weights = self.boundary_supporting_samples(
                    x, y, teacher_logits(teacher_features), student_features[OUTPUT]
                )
                teacher_on_samples = tf.stop_gradient(self.teacher(samples, training=False))
            student_on_samples = self.student(samples, training=True)
            values["bss_kd_loss"] = self.bss_kd_loss(teacher_on_samples, student_on_samples, weights)
            total = total + self.term_weights["bss_kd_loss"] * values["bss_kd_loss"]
            scaled_total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total)

    def test_step(self, data):
        # Evaluation runs no attack: the BSS term is logged as 0.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_features = self._teacher_features(x, training=False)
        student_features = self._student_features(x, training=False)
        values, total = self.compute_losses(x, y, sample_weight, teacher_features, student_features, training=False)
        values["bss_kd_loss"] = tf.constant(0.0)
        return self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total)

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
