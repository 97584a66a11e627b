"""Xu, Hsu & Huang, "Training Shallow and Thin Networks for Acceleration via
Knowledge Distillation with Conditional Adversarial Networks", ICLR 2018
workshop (arXiv:1709.00513, 2017; later titled "Learning Loss for Knowledge
Distillation with Conditional Adversarial Networks")."""

import keras
import tensorflow as tf
from keras import ops

from keras_kd.distiller import Distiller
from keras_kd.features import OUTPUT
from keras_kd.features import FeatureExtractor as _Extractor
from keras_kd.losses.base import num_replicas, validate_positive
from keras_kd.schemes.teacher_free import class_ids


def default_discriminator(input_dim, units=128, negative_slope=0.2, name="discriminator"):
    """The discriminator MLP on logits: Dense(units) - LeakyReLU -
    Dense(units) - LeakyReLU - Dense(1), returning the logit of "comes from
    the teacher". Always float32, also under a mixed-precision policy."""
    inputs = keras.Input((input_dim,), name="logits", dtype="float32")
    x = keras.layers.Dense(units, name="fc1", dtype="float32")(inputs)
    x = keras.layers.LeakyReLU(negative_slope, name="leaky1", dtype="float32")(x)
    x = keras.layers.Dense(units, name="fc2", dtype="float32")(x)
    x = keras.layers.LeakyReLU(negative_slope, name="leaky2", dtype="float32")(x)
    outputs = keras.layers.Dense(1, name="real_or_fake", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


def _single_teacher(teacher, scheme):
    if not isinstance(teacher, keras.Model):
        raise ValueError(  # noqa: TRY004 (ValueError throughout, as in Distiller)
            f"{scheme} takes one teacher keras.Model. Received: teacher={teacher!r}"
        )


def logits_classes(model, role, scheme):
    """K of `model`'s one logits output `(batch, K)`; a ValueError naming `role` and `scheme` otherwise."""
    outputs = getattr(model, "outputs", None)
    shape = tuple(outputs[0].shape) if outputs and len(outputs) == 1 else None
    if shape is None or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            f"{scheme} needs the {role} '{model.name}' to be a functional or Sequential model with one logits "
            f"output of shape (batch, K). Received output shape: {shape}"
        )
    return int(shape[-1])


def num_classes_of(teacher, student, scheme):
    """K, checked to agree between the teacher's and the student's logits."""
    teacher_classes = logits_classes(teacher, "teacher", scheme)
    student_classes = logits_classes(student, "student", scheme)
    if teacher_classes != student_classes:
        raise ValueError(
            f"{scheme} compares logits, but the teacher has {teacher_classes} classes and the student "
            f"{student_classes}."
        )
    return student_classes


def ensure_teacher_output(distiller):
    """Make the Distiller's one teacher pass also return the logits, even
    when no term reads them, so a scheme needs no second teacher call."""
    extractors = getattr(distiller, "_teacher_extractors", None)
    if extractors is None:  # single-teacher layout: one extractor
        extractor = distiller._teacher_features
        if OUTPUT not in extractor.keys:
            distiller._teacher_features = _Extractor(extractor.model, sorted({*extractor.keys, OUTPUT}), "teacher")
        return
    for key, extractor in list(extractors.items()):
        if OUTPUT not in extractor.keys:
            extractors[key] = _Extractor(extractor.model, sorted({*extractor.keys, OUTPUT}), "teacher")


def teacher_logits(features):
    """The (only) teacher's logits from `frozen_teacher_features(x)`, as float32."""
    if OUTPUT not in features:  # {teacher key: {feature key: tensor}}
        features = next(iter(features.values()))
    return tf.cast(features[OUTPUT], "float32")


@keras.saving.register_keras_serializable(package="keras_kd")
class AdversarialDistiller(Distiller):
    """Distillation with a (conditional) adversarial network on logits (Xu,
    Hsu & Huang, arXiv:1709.00513, 2017; ICLR 2018 workshop).

    A discriminator `D` learns to tell the teacher's logits ("real") from
    the student's ("fake"); the student, the generator, learns to fool it.
    Conditional (the default): `D` sees the logits concatenated with the
    one-hot label, `[z, onehot(y)]`, so it judges whether the logits fit the
    class (a conditional GAN, conditioned on the label). One `train_step`
    runs the teacher once and the student once, then makes two updates:

    student (compile's `optimizer`, on the student, connectors and
    learnable-loss weights only):

        L_S = Distiller loss (student_loss_weight * CE + sum_i w_i term_i)
              + adversarial_weight * BCE(D([z_s, c]), 1)

        (the non-saturating generator loss `-log D(z_s)`);

    discriminator (`compile(..., discriminator_optimizer=...)`, on `D`'s
    weights only, with the student's logits under `stop_gradient`):

        L_D = BCE(D([z_t, c]), 1) + BCE(D([z_s, c]), 0)

    BCE is the mean binary cross-entropy on D's logit (sample weights
    apply). The student's term uses `D` before its update: both updates
    read the same forward pass. Logs: everything the Distiller logs, plus
    `adversarial_loss` (L_S's adversarial part, unweighted) and
    `discriminator_loss` (L_D). `adversarial_weight` is a variable in
    `term_weights["adversarial_loss"]`, so a `WeightScheduler` can ramp it.

    `D` is tracked by the Distiller (saved with it, in `get_config`), never
    part of `distiller.student`.

    Args:
        teacher, student, terms, student_loss_weight, stop_on_nan: as in
            `keras_kd.Distiller` (one teacher; both output logits (batch, K)).
        discriminator: a built keras.Model taking (batch, 2K) if
            `conditional` else (batch, K) float32 and returning one logit
            (batch, 1). Default `default_discriminator`: Dense(128) -
            LeakyReLU(0.2) - Dense(128) - LeakyReLU(0.2) - Dense(1).
        adversarial_weight: weight of the student's adversarial term, >= 0.
        conditional: condition `D` on the one-hot label (needs labels).

    Constants: the MLP width, LeakyReLU slope and the default discriminator
    optimizer (Adam, learning rate 1e-4) are this library's choices, not
    checked against the paper's text.
    """

    def __init__(
        self,
        teacher,
        student,
        terms=(),
        student_loss_weight=1.0,
        discriminator=None,
        adversarial_weight=1.0,
        conditional=True,
        stop_on_nan=True,
        name="adversarial_distiller",
        **kwargs,
    ):
        _single_teacher(teacher, "AdversarialDistiller")
        super().__init__(
            teacher,
            student,
            terms,
            student_loss_weight=student_loss_weight,
            stop_on_nan=stop_on_nan,
            name=name,
            **kwargs,
        )
        self.num_classes = num_classes_of(teacher, student, "AdversarialDistiller")
        if not isinstance(conditional, bool):
            raise ValueError(  # noqa: TRY004 (ValueError throughout, as in Distiller)
                f"`conditional` must be True or False. Received: conditional={conditional!r}"
            )
        self.conditional = conditional
        self.adversarial_weight = validate_positive("adversarial_weight", adversarial_weight, allow_zero=True)
        input_dim = 2 * self.num_classes if conditional else self.num_classes
        if discriminator is None:
            discriminator = default_discriminator(input_dim, name=f"{name}_discriminator")
        _check_discriminator(discriminator, input_dim, conditional)
        if discriminator is student or discriminator is teacher:
            raise ValueError("The discriminator must be a separate model from the teacher and the student.")
        for term_name in ("adversarial_loss", "discriminator_loss"):
            if term_name in self.term_weights:
                raise ValueError(f"The term name {term_name!r} is reserved by AdversarialDistiller; rename the term.")
        self.discriminator = discriminator
        ensure_teacher_output(self)
        self.term_weights["adversarial_loss"] = keras.Variable(
            self.adversarial_weight, trainable=False, name="adversarial_loss_weight"
        )
        self.term_trackers["adversarial_loss"] = keras.metrics.Mean(name="adversarial_loss")
        self.discriminator_loss_tracker = keras.metrics.Mean(name="discriminator_loss")
        self.discriminator_optimizer = None
        self._bce = keras.losses.BinaryCrossentropy(from_logits=True, dtype="float32")

    def compile(self, optimizer="rmsprop", loss=None, discriminator_optimizer=None, **kwargs):
        """`keras.Model.compile` plus `discriminator_optimizer` (an optimizer
        or its name; default `keras.optimizers.Adam(1e-4)`), which updates
        the discriminator only."""
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        if discriminator_optimizer is None:
            discriminator_optimizer = keras.optimizers.Adam(learning_rate=1e-4)
        self.discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
        # Each optimizer holds slots for its own side only.
        self.optimizer.build(self.student_side_variables)
        self.discriminator_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        if config and self.discriminator_optimizer is not None:
            config["discriminator_optimizer"] = keras.saving.serialize_keras_object(self.discriminator_optimizer)
        return config

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def student_side_variables(self):
        """What the student's optimizer trains: every trainable variable of
        the Distiller except the discriminator's."""
        excluded = {id(v) for v in self.discriminator.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in excluded]

    def _discriminator_input(self, logits, y):
        logits = tf.cast(logits, "float32")
        if not self.conditional:
            return logits
        if y is None:
            raise ValueError(
                "AdversarialDistiller(conditional=True) conditions the discriminator on the labels, but the data "
                "has none. Feed (x, y) batches, or use conditional=False."
            )
        condition = ops.one_hot(class_ids(y, self.num_classes, "AdversarialDistiller"), self.num_classes)
        return tf.concat([logits, tf.cast(condition, "float32")], axis=-1)

    def _discriminator_loss(self, real_input, fake_input, sample_weight, training):
        real = self.discriminator(real_input, training=training)
        fake = self.discriminator(fake_input, training=training)
        return self._bce(tf.ones_like(real), real, sample_weight) + self._bce(tf.zeros_like(fake), fake, sample_weight)

    def train_step(self, data):
        x, y, sample_weight = self.transfer_batch(*keras.utils.unpack_x_y_sample_weight(data))
        teacher_features = self.frozen_teacher_features(x)
        real_input = self._discriminator_input(teacher_logits(teacher_features), y)
        student_variables = self.student_side_variables
        with tf.GradientTape() as tape:
            student_features = self._student_features(x, training=True)
            values, total = self.compute_losses(x, y, sample_weight, teacher_features, student_features, training=True)
            fake_input = self._discriminator_input(student_features[OUTPUT], y)
            fake = self.discriminator(fake_input, training=True)
            values["adversarial_loss"] = self._bce(tf.ones_like(fake), fake, sample_weight)
            total = total + self.term_weights["adversarial_loss"] * values["adversarial_loss"]
            scaled_total = self.optimizer.scale_loss(total)
        if student_variables:  # none when the student is frozen
            gradients = tape.gradient(scaled_total, student_variables)
            self.optimizer.apply(gradients, student_variables)

        # The discriminator's step: same logits, the student's held fixed.
        discriminator_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as discriminator_tape:
            discriminator_loss = self._discriminator_loss(
                real_input, tf.stop_gradient(fake_input), sample_weight, training=True
            )
        gradients = discriminator_tape.gradient(discriminator_loss, discriminator_variables)
        self.discriminator_optimizer.apply(gradients, discriminator_variables)
        self._track_discriminator(x, discriminator_loss)
        return self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_features = self._teacher_features(x, training=False)
        student_features = self._student_features(x, training=False)
        values, total = self.compute_losses(x, y, sample_weight, teacher_features, student_features, training=False)
        real_input = self._discriminator_input(teacher_logits(teacher_features), y)
        fake_input = self._discriminator_input(student_features[OUTPUT], y)
        fake = self.discriminator(fake_input, training=False)
        values["adversarial_loss"] = self._bce(tf.ones_like(fake), fake, sample_weight)
        total = total + self.term_weights["adversarial_loss"] * values["adversarial_loss"]
        self._track_discriminator(x, self._discriminator_loss(real_input, fake_input, sample_weight, False))
        return self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total)

    def _track_discriminator(self, x, value):
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        # Keras scaled the loss by 1/replicas for the gradient; log the batch value.
        self.discriminator_loss_tracker.update_state(value * num_replicas(), sample_weight=batch_size)

    def get_config(self):
        return {
            **super().get_config(),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "adversarial_weight": self.adversarial_weight,
            "conditional": self.conditional,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("discriminator"), dict):
            config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return super().from_config(config)


def _check_discriminator(discriminator, input_dim, conditional):
    if not isinstance(discriminator, keras.Model) or not discriminator.built:
        raise ValueError(f"`discriminator` must be a built keras.Model. Received: discriminator={discriminator!r}")
    try:
        shape = tuple(discriminator.compute_output_shape((None, input_dim)))
    except Exception as error:  # noqa: BLE001 -- any failure means the input does not fit
        raise ValueError(
            f"The discriminator must take inputs of shape (batch, {input_dim}) (the logits"
            f"{' and the one-hot label' if conditional else ''}): {error}"
        ) from None
    if len(shape) != 2 or shape[-1] != 1:
        raise ValueError(
            f"The discriminator must return one logit per example, shape (batch, 1); it returns {shape} for "
            f"inputs of shape (batch, {input_dim})."
        )
