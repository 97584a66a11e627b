"""Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via
Factor Transfer", NeurIPS 2018."""

import sys

import keras
import numpy as np
from keras import ops

from keras_kd.losses._learnable import LearnableLoss, torch_default_init
from keras_kd.losses.base import flatten, l2_normalize, match_spatial, require_rank
from keras_kd.validation import validate_positive, validate_positive_int

NEGATIVE_SLOPE = 0.1  # LeakyReLU slope of the reference's paraphraser and translator


def _conv_block(filters, use_bn, transpose=False):
    """3x3 'same' (transposed) convolution [+ BatchNorm] + LeakyReLU(0.1)."""
    conv_cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    block = [
        conv_cls(
            filters, 3, padding="same", kernel_initializer=torch_default_init(), dtype="float32"
        )
    ]
    if use_bn:
        # PyTorch BatchNorm2d constants (momentum 0.1 there is 0.9 here).
        block.append(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32"))
    block.append(keras.layers.LeakyReLU(NEGATIVE_SLOPE, dtype="float32"))
    return block


def _build_blocks(layers, input_shape):
    shape = tuple(input_shape)
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


def _run_blocks(layers, x, training):
    for layer in layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            x = layer(x, training=training)
        else:
            x = layer(x)
    return x


def factor_channels(teacher_channels, rate):
    """Channels of the factor: `int(teacher_channels * rate)`, as the reference."""
    return int(teacher_channels * rate)


@keras.saving.register_keras_serializable(package="keras_kd")
class Paraphraser(keras.layers.Layer):
    """Factor transfer's teacher-side autoencoder (the reference's `Paraphraser`).

    For teacher features (B, H, W, C) and `k = int(C * rate)` factor channels:

        encoder: conv3x3 C->C, conv3x3 C->k, conv3x3 k->k
        decoder: convT3x3 k->k, convT3x3 k->C, convT3x3 C->C

    each followed by [BatchNorm if `use_bn`] and LeakyReLU(0.1); stride 1,
    'same' padding. `encode(x)` gives the factor (B, H, W, k);
    `call(x)` returns `(factor, reconstruction)`.
    Train it with `pretrain_paraphraser` before distillation.

    Args:
        rate: factor channels / teacher channels (the paper's paraphrase rate).
        use_bn: BatchNorm after each convolution (reference default: False).
    """

    def __init__(self, rate=0.5, use_bn=False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rate = validate_positive("rate", rate)
        self.use_bn = bool(use_bn)

    def build(self, input_shape):
        channels = input_shape[-1]
        k = factor_channels(channels, self.rate)
        if k < 1:
            raise ValueError(
                f"Paraphraser with rate={self.rate} gives int({channels} * {self.rate}) = {k} "
                f"factor channels for input shape {tuple(input_shape)}; it needs at least 1."
            )
        self.encoder = (
            _conv_block(channels, self.use_bn)
            + _conv_block(k, self.use_bn)
            + _conv_block(k, self.use_bn)
        )
        self.decoder = (
            _conv_block(k, self.use_bn, transpose=True)
            + _conv_block(channels, self.use_bn, transpose=True)
            + _conv_block(channels, self.use_bn, transpose=True)
        )
        factor_shape = _build_blocks(self.encoder, input_shape)
        _build_blocks(self.decoder, factor_shape)

    def encode(self, x, training=None):
        return _run_blocks(self.encoder, x, training)

    def decode(self, factor, training=None):
        return _run_blocks(self.decoder, factor, training)

    def call(self, x, training=None):
        factor = self.encode(x, training=training)
        return factor, self.decode(factor, training=training)

    def compute_output_shape(self, input_shape):
        k = factor_channels(input_shape[-1], self.rate)
        return tuple(input_shape[:-1]) + (k,), tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "use_bn": self.use_bn}


@keras.saving.register_keras_serializable(package="keras_kd")
class Translator(keras.layers.Layer):
    """Factor transfer's student-side encoder (the reference's `Translator`).

    For student features (B, H, W, C_s): conv3x3 C_s->C_s, conv3x3
    C_s->k, conv3x3 k->k, each followed by [BatchNorm if `use_bn`] and
    LeakyReLU(0.1), where `k = factor_channels` matches the paraphraser's
    factor.

    Args:
        factor_channels: output channels `k`.
        use_bn: BatchNorm after each convolution (reference default: True).
    """

    def __init__(self, factor_channels, use_bn=True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.factor_channels = int(factor_channels)
        self.use_bn = bool(use_bn)

    def build(self, input_shape):
        k = self.factor_channels
        self.encoder = (
            _conv_block(input_shape[-1], self.use_bn)
            + _conv_block(k, self.use_bn)
            + _conv_block(k, self.use_bn)
        )
        _build_blocks(self.encoder, input_shape)

    def call(self, x, training=None):
        return _run_blocks(self.encoder, x, training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.factor_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "factor_channels": self.factor_channels,
            "use_bn": self.use_bn,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class FactorTransferHead(keras.layers.Layer):
    """The weights of `FactorTransferLoss`: a frozen `Paraphraser` (teacher
    side) and a trainable `Translator` (student side).

    `call((teacher, student))` returns `(teacher_factor, student_factor)`.
    The paraphraser is never trainable here, so a `Distiller` training
    `trainable_weights` leaves it alone; `pretrain_paraphraser` trains it.
    """

    def __init__(self, rate=0.5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rate = validate_positive("rate", rate)

    def build(self, teacher_shape, student_shape):
        self.paraphraser = Paraphraser(self.rate, use_bn=False, name="paraphraser")
        self.translator = Translator(
            factor_channels(teacher_shape[-1], self.rate), use_bn=True, name="translator"
        )
        self.paraphraser.build(teacher_shape)
        self.translator.build(student_shape)
        self.paraphraser.trainable = False

    def call(self, inputs):
        teacher, student = inputs
        teacher_factor = ops.stop_gradient(self.paraphraser.encode(teacher, training=False))
        # The translator only feeds this loss, so it always normalises with
        # batch statistics, as in the reference's training loop (train mode).
        student_factor = self.translator(student, training=True)
        return teacher_factor, student_factor

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@keras.saving.register_keras_serializable(package="keras_kd")
class FactorTransferLoss(LearnableLoss):
    """Factor transfer (Kim, Park & Kwak, "Paraphrasing Complex Network:
    Network Compression via Factor Transfer", NeurIPS 2018).

    Two stages. First a `Paraphraser` (convolutional autoencoder) is trained
    to reconstruct the teacher's feature map (`pretrain_paraphraser`); its
    encoder output is the teacher *factor*. Then, while the student trains,
    a `Translator` maps the student's feature map to a student factor with
    the same channels, and

        F = normalize(flatten(factor))      # unit L2 norm per example
        loss = mean over features of |F_s - F_t|^p

    with `p = 1` (the paper's and reference's choice). The value is one
    number per example; the batch mean equals the reference's `.mean()`. If
    the factors' spatial sizes differ the larger is average-pooled to the
    smaller, as the reference does. Features must be (B, H, W, C) maps.

    `layer` is a `FactorTransferHead` holding the paraphraser (never
    trainable there: the teacher side stays fixed during distillation, as in
    the reference where only the translator joins the optimiser) and the
    translator (trained with the student, BatchNorm in batch-statistics mode).

    Published setting (CRD benchmark, RepDistiller `scripts/run_cifar_distill.sh`
    and `train_student.py`): weight 200 (`--distill factor -a 0 -b 200`) on
    the last convolutional feature map before global pooling (`feat[-2]`),
    rate 0.5, paraphraser without BatchNorm, translator with BatchNorm;
    paraphraser pre-trained 30 epochs with an MSE reconstruction loss, SGD
    lr 0.01 (the reference's rate for ResNet/WRN students; 0.05 for VGG),
    momentum 0.9, weight decay 5e-4, batch 64 — the defaults of
    `pretrain_paraphraser`.

    Deviation: RepDistiller's `FactorTransfer.factor` uses
    `normalize(flatten(mean_c(x^2)))` (its `p1 = 2`: a channel-pooled,
    attention-map-like factor).
    This class follows the paper's definition, `normalize(flatten(x))`, the
    whole factor tensor. Keras' SGD weight decay is decoupled from the
    momentum, unlike PyTorch's (a small difference in pre-training only).

    Args:
        rate: paraphrase rate, factor channels / teacher channels (> 0).
        p: exponent of the factor distance (>= 1; 1 in the paper).
    """

    def __init__(self, rate=0.5, p=1, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.rate = validate_positive("rate", rate)
        p = validate_positive("p", p)
        if p < 1:
            raise ValueError(
                f"`p` must be >= 1 (|.|^p is not differentiable at 0 below). Received: p={p!r}"
            )
        self.p = p

    def check_shapes(self, teacher_shape, student_shape):
        require_rank(self, teacher_shape, student_shape, (4,))
        if teacher_shape[-1] is None or student_shape[-1] is None:
            raise ValueError(
                "FactorTransferLoss needs known channel counts to build its paraphraser "
                f"and translator. Received: teacher shape {teacher_shape} and student "
                f"shape {student_shape}."
            )
        if factor_channels(teacher_shape[-1], self.rate) < 1:
            raise ValueError(
                f"FactorTransferLoss(rate={self.rate}) gives no factor channels for "
                f"teacher shape {teacher_shape} (student shape {student_shape}); "
                "raise `rate`."
            )

    def make_layer(self, teacher_shape, student_shape):
        layer = FactorTransferHead(self.rate, name=f"{self.name}_head")
        layer.build(teacher_shape, student_shape)
        return layer

    @staticmethod
    def factor(x):
        """`normalize(flatten(x))`: the unit-L2-norm factor vector per example."""
        return l2_normalize(flatten(x))

    def call(self, teacher, student):
        teacher_factor, student_factor = self._layer((teacher, student))
        teacher_factor, student_factor = match_spatial(teacher_factor, student_factor)
        diff = ops.abs(self.factor(student_factor) - self.factor(teacher_factor))
        if self.p != 1:
            diff = ops.power(diff, self.p)
        return ops.mean(diff, axis=-1)

    def pretrain_paraphraser(
        self,
        teacher_features,
        epochs=30,
        optimizer=None,
        batch_size=64,
        shuffle=True,
        verbose=False,
    ):
        """Train this loss's paraphraser to reconstruct teacher features.

        Build the loss first (the `Distiller` does at construction, or call
        `build(teacher_shape, student_shape)`). See `pretrain_paraphraser`.
        Returns the mean reconstruction loss of each epoch.
        """
        if self._layer is None:
            raise ValueError(
                "FactorTransferLoss.pretrain_paraphraser needs a built loss: call "
                "`loss.build(teacher_shape, student_shape)` (the Distiller does at "
                "construction) first."
            )
        return pretrain_paraphraser(
            self._layer.paraphraser,
            teacher_features,
            epochs=epochs,
            optimizer=optimizer,
            batch_size=batch_size,
            shuffle=shuffle,
            verbose=verbose,
        )

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "p": self.p}


def pretrain_paraphraser(
    paraphraser,
    teacher_features,
    epochs=30,
    optimizer=None,
    batch_size=64,
    shuffle=True,
    verbose=False,
):
    """Train `paraphraser` to reconstruct teacher features (factor transfer's
    first stage), then leave it non-trainable.

    Loss: mean squared error between the reconstruction and the features
    (the reference's `nn.MSELoss`). Defaults follow the reference: 30 epochs,
    SGD(lr=0.01, momentum=0.9, weight_decay=5e-4), batch 64.

    Args:
        paraphraser: a `Paraphraser` (built from the data's shape if needed).
        teacher_features: a NumPy array (N, H, W, C) of teacher features, or
            a `tf.data.Dataset` of feature batches (B, H, W, C) (or of single
            (H, W, C) maps, then batched by `batch_size`).
        epochs: passes over the data (>= 1).
        optimizer: a Keras optimizer; None builds the reference's SGD.
        batch_size: batch size for arrays and unbatched datasets.
        shuffle: reshuffle an array every epoch.
        verbose: print the loss of each epoch.

    Returns:
        The list of per-epoch mean reconstruction losses.
    """
    epochs = validate_positive_int("epochs", epochs)
    batch_size = validate_positive_int("batch_size", batch_size)

    # A tf.data pipeline implies TensorFlow is loaded; arrays need no TensorFlow.
    tf = sys.modules.get("tensorflow")
    dataset = None
    if tf is not None and isinstance(teacher_features, tf.data.Dataset):
        dataset = teacher_features
        if len(dataset.element_spec.shape) == 3:
            dataset = dataset.batch(batch_size)
        feature_shape = tuple(dataset.element_spec.shape)
        dataset = dataset.map(lambda x: (tf.cast(x, "float32"),) * 2)
    else:
        features = np.asarray(teacher_features, dtype="float32")
        feature_shape = (None,) + features.shape[1:]
    if len(feature_shape) != 4:
        raise ValueError(
            "pretrain_paraphraser expects (N, H, W, C) teacher features. Received: "
            f"batches of shape {feature_shape}."
        )
    if not paraphraser.built:
        paraphraser.build(feature_shape)

    if optimizer is None:
        optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9, weight_decay=5e-4)
    callbacks = []
    if verbose:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: print(
                    f"paraphraser epoch {epoch + 1}/{epochs}: reconstruction loss {logs['loss']:.6f}"
                )
            )
        )
    paraphraser.trainable = True
    try:
        # Keras' own training loop, so pretraining runs on every backend; its
        # "loss" log is the epoch's mean of the batch losses weighted by batch size.
        model = _Reconstruction(paraphraser, name="paraphraser_reconstruction")
        model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())
        if dataset is None:
            fit_args = {"x": features, "y": features, "batch_size": batch_size, "shuffle": shuffle}
        else:
            fit_args = {"x": dataset, "shuffle": False}  # a pipeline shuffles itself
        history = model.fit(**fit_args, epochs=epochs, verbose=0, callbacks=callbacks)
    finally:
        paraphraser.trainable = False
    return [float(value) for value in history.history["loss"]]


class _Reconstruction(keras.Model):
    """The paraphraser's reconstruction of its input (the reference's
    `nn.MSELoss` target is the input itself), as a model `fit` trains."""

    def __init__(self, paraphraser, **kwargs):
        super().__init__(**kwargs)
        self.paraphraser = paraphraser

    def call(self, x, training=None):
        return self.paraphraser(x, training=training)[1]
