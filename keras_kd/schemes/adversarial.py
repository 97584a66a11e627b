"""Xu, Hsu & Huang, "Training Shallow and Thin Networks for Acceleration via
Knowledge Distillation with Conditional Adversarial Networks", ICLR 2018
workshop (arXiv:1709.00513, 2017; later titled "Learning Loss for Knowledge
Distillation with Conditional Adversarial Networks")."""

import keras
from keras import ops

from keras_kd import backend
from keras_kd.backend import track_batch_value
from keras_kd.distiller import Distiller
from keras_kd.features import OUTPUT
from keras_kd.sample_index import batch_size_of
from keras_kd.schemes.teacher_free import class_ids
from keras_kd.validation import validate_positive


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


def teacher_logits(features):
    """The (only) teacher's logits, as float32, from the teacher side of
    `Distiller.call`'s outputs (`{teacher key: {feature key: tensor}}`) or
    from one teacher's `{feature key: tensor}`."""
    if OUTPUT not in features:
        features = next(iter(features.values()))
    return ops.cast(features[OUTPUT], "float32")


def gradients_and_aux(fn, variables):
    """`(d value / d variables, aux)` for `value, aux = fn()`, the one place
    where the adversarial step depends on the backend (TensorFlow and
    PyTorch; JAX's trainer is stateless, see `AdversarialDistiller`)."""
    if backend.is_tensorflow():
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value, aux = fn()
        return (tape.gradient(value, variables) if variables else []), aux
    import torch

    value, aux = fn()
    if not variables:
        return [], aux
    # autograd.grad, not backward(): no gradient lands in other variables' `.grad`.
    return list(torch.autograd.grad(value, [v.value for v in variables], allow_unused=True)), aux


def require_stateful_trainer(scheme):
    """AdversarialDistiller's own `train_step` runs on TensorFlow and PyTorch only."""
    if backend.name() not in ("tensorflow", "torch"):
        raise RuntimeError(
            f"{scheme} updates its discriminator with a second optimizer in its own train_step, written for the "
            f"TensorFlow and PyTorch backends of Keras; this process runs Keras on {backend.name()!r}. Set "
            "KERAS_BACKEND=tensorflow or KERAS_BACKEND=torch before importing keras to use it."
        )


@keras.saving.register_keras_serializable(package="keras_kd")
class AdversarialDistiller(Distiller):
    """Distillation with a (conditional) adversarial network on logits (Xu,
    Hsu & Huang, arXiv:1709.00513, 2017; ICLR 2018 workshop).

    A discriminator `D` learns to tell the teacher's logits ("real") from
    the student's ("fake"); the student, the generator, learns to fool it.
    Conditional (the default): `D` sees the logits concatenated with the
    one-hot label, `[z, onehot(y)]`, so it judges whether the logits fit the
    class (a conditional GAN, conditioned on the label). One `train_step`
    runs the teacher once and the student once (`call`), then makes two
    updates:

    student (compile's `optimizer`, on the student, connectors and
    learnable-loss weights only), the loss of `compute_loss`:

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
    `discriminator_loss` (L_D; in `evaluate`, on D in inference mode).
    `adversarial_weight` is the weight of the scheme term
    `bound_term("adversarial_loss")`, so a `WeightScheduler` can ramp it.

    Backends: TensorFlow and PyTorch. The second optimizer needs a
    `train_step` of its own, and JAX's stateless trainer carries the state
    of one optimizer only, so construction raises a RuntimeError on JAX.

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
        require_stateful_trainer("AdversarialDistiller")
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
        # The discriminator reads the teacher's logits, even when no term does.
        self.read_teacher_features([OUTPUT])
        self.adversarial_term = self.add_term("adversarial_loss", self.adversarial_weight)
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

    def discriminator_input(self, logits, y):
        """`D`'s input: the logits, with the one-hot label when conditional."""
        logits = ops.cast(logits, "float32")
        if not self.conditional:
            return logits
        if y is None:
            raise ValueError(
                "AdversarialDistiller(conditional=True) conditions the discriminator on the labels, but the data "
                "has none. Feed (x, y) batches, or use conditional=False."
            )
        condition = ops.one_hot(class_ids(y, self.num_classes, "AdversarialDistiller"), self.num_classes)
        return ops.concatenate([logits, ops.cast(condition, "float32")], axis=-1)

    def discriminator_loss(self, outputs, y, sample_weight, training):
        """L_D on the logits of `call`'s outputs, the student's held fixed."""
        real = self.discriminator(self.discriminator_input(teacher_logits(outputs["teacher"]), y), training=training)
        fake_input = self.discriminator_input(ops.stop_gradient(outputs["student"][OUTPUT]), y)
        fake = self.discriminator(fake_input, training=training)
        real_loss = self._bce(ops.ones_like(real), real, sample_weight)
        return real_loss + self._bce(ops.zeros_like(fake), fake, sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """L_S: the Distiller's loss plus the weighted generator loss."""
        total = super().compute_loss(x, y, y_pred, sample_weight, training)
        if not self.returns_features:
            return total
        y = self.mixed_labels(y, y_pred) if training else y  # D is conditioned on the labels of the mixed batch
        fake = self.discriminator(self.discriminator_input(y_pred["student"][OUTPUT], y), training=training)
        value = self._bce(ops.ones_like(fake), fake, sample_weight)
        batch_size = batch_size_of(x)
        self.adversarial_term.track(value, batch_size)
        if not training:  # in training, `train_step` logs the loss of D's own update
            self._track_discriminator(self.discriminator_loss(y_pred, y, sample_weight, False), batch_size)
        return total + self.adversarial_term.weighted(value)

    def train_step(self, data):
        # Keras' step (call + compute_loss, compile's optimizer) on the
        # student side, then D's step with its own optimizer on the same
        # forward pass: Keras' trainer knows one optimizer only.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)

        def student_total():
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            return self.optimizer.scale_loss(loss), (loss, y_pred)

        student_variables = self.student_side_variables
        gradients, (loss, y_pred) = gradients_and_aux(student_total, student_variables)
        if student_variables:  # none when the student is frozen
            with backend.no_grad():
                self.optimizer.apply(gradients, student_variables)
        batch_size = batch_size_of(x)
        track_batch_value(self._loss_tracker, loss, batch_size)

        labels = self.mixed_labels(y, y_pred)  # compute_metrics mixes `y` itself
        discriminator_variables = self.discriminator.trainable_variables
        gradients, discriminator_loss = gradients_and_aux(
            lambda: (value := self.discriminator_loss(y_pred, labels, sample_weight, True), value),
            discriminator_variables,
        )
        with backend.no_grad():
            self.discriminator_optimizer.apply(gradients, discriminator_variables)
        self._track_discriminator(discriminator_loss, batch_size)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def _track_discriminator(self, value, batch_size):
        track_batch_value(self.discriminator_loss_tracker, value, batch_size)

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
