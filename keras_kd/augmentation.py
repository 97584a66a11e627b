"""Augmentations the `Distiller` applies inside its step, once per batch, so
the teacher and the student see the same view ("consistent teaching", Beyer
et al., "Knowledge distillation: A good teacher is patient and consistent",
CVPR 2022).

    distiller = keras_kd.Distiller(teacher, student, terms,
                                   augmentation=keras_kd.augmentation.MixUp(alpha=1.0))

`MixUp` is written here rather than reusing `keras.layers.MixUp` (Keras 3.15):
that layer draws its ratio with `keras.random.beta`, whose TensorFlow kernel
(`StatelessRandomGammaV3`) has no XLA implementation, so a step compiled
with `jit_compile=True` (Keras' "auto" on a GPU) fails; it takes image
batches of rank 3 or 4 only; it mixes labels only when given a dict of
images and one-hot labels; and it pairs each image with a random permutation
of the batch (possibly itself) at a per-example ratio, where the authors'
code (big_vision `utils.mixup`, used by `trainers/proj/distill/distill.py`)
draws one ratio per batch and pairs each image with its neighbour.
"""

import math

import keras
from keras import ops

from keras_kd.validation import validate_positive

__all__ = ["MixUp", "beta_ratio"]

_GAMMA_TRIALS = 16  # Marsaglia-Tsang proposals per draw (each accepted with p >= 0.95)


def _log_gamma(shape, alpha, seed):
    """log of Gamma(alpha, 1) samples of `shape`, float32, with stateless ops
    that compile under XLA (keras.random.gamma does not, on TensorFlow).

    Marsaglia & Tsang (2000) for shape >= 1, vectorised over
    `_GAMMA_TRIALS` proposals (the first accepted one is kept; all rejected
    has probability below 0.05**16, then the mode is used); for alpha < 1,
    Gamma(alpha) = Gamma(alpha + 1) * U**(1 / alpha), in logs so that small
    alphas do not underflow.
    """
    boosted = alpha < 1.0
    a = alpha + 1.0 if boosted else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    trials = (_GAMMA_TRIALS, *shape)
    z = keras.random.normal(trials, dtype="float32", seed=seed)
    u = keras.random.uniform(trials, dtype="float32", seed=seed)
    v = (1.0 + c * z) ** 3
    safe_v = ops.maximum(v, 1e-30)
    accepted = ops.logical_and(
        v > 0.0, ops.log(ops.maximum(u, 1e-30)) < 0.5 * z * z + d - d * safe_v + d * ops.log(safe_v)
    )
    first = ops.argmax(ops.cast(accepted, "int32"), axis=0)
    chosen = ops.squeeze(ops.take_along_axis(safe_v, ops.expand_dims(first, 0), axis=0), 0)
    chosen = ops.where(ops.any(accepted, axis=0), chosen, 1.0)
    log_gamma = math.log(d) + ops.log(chosen)
    if boosted:
        # 1 - U lies in (0, 1]: its log is finite.
        boost = 1.0 - keras.random.uniform(shape, dtype="float32", seed=seed)
        log_gamma = log_gamma + ops.log(boost) / alpha
    return log_gamma


def beta_ratio(shape, alpha, seed=None):
    """Samples of Beta(alpha, alpha) of `shape` (float32), as G1 / (G1 + G2)
    for independent Gamma(alpha) draws, computed as a sigmoid of their log
    difference. `seed`: a `keras.random.SeedGenerator`, or an int or None
    outside a compiled function."""
    alpha = validate_positive("alpha", alpha)
    if not isinstance(seed, keras.random.SeedGenerator):
        # Every draw below needs its own seed; an int would repeat one (eager use only:
        # inside a compiled step pass a SeedGenerator made outside it, as MixUp does).
        seed = keras.random.SeedGenerator(seed)
    return ops.sigmoid(_log_gamma(shape, alpha, seed) - _log_gamma(shape, alpha, seed))


@keras.saving.register_keras_serializable(package="keras_kd")
class MixUp(keras.layers.Layer):
    """MixUp (Zhang et al., ICLR 2018) of a batch with itself, in the setting
    of function matching (Beyer et al., CVPR 2022).

    In training mode each example becomes `lam * x[i] + (1 - lam) * x[j]`
    with `j = (i + k) mod B` for a random shift `1 <= k < B` drawn per call
    (a partner other than itself whenever B > 1; the data's shuffling makes
    it a random one), and `lam = max(r, 1 - r)` for `r ~ Beta(alpha, alpha)`:
    the larger share goes to the example itself, as big_vision sorts its
    Dirichlet draw ("avoids destroying examples when the concentration ...
    is very small"). `per_example=False` (the authors' default, `fold_in=None`)
    draws one ratio per batch; `per_example=True` one per example. Any input
    rank (images, vectors, sequences) and nested inputs (a dict of features:
    every tensor mixed with the same ratio and partner). The mixing is
    float32 and cast back to the input's dtype; outside training (the
    default when called directly) the inputs pass unchanged.

    Labels: called as `mixup(x, y, training=True)` it returns `(x, y)` with
    floating labels (one-hot or soft, rank >= 2) mixed the same way, for a
    `CategoricalCrossentropy` supervised loss. Sparse integer labels cannot
    be mixed and raise a ValueError. Inside a `Distiller` (`mixes_labels`),
    `call` draws one mixing (`draw`) and mixes the inputs (`mix_inputs`);
    `compute_loss` mixes the labels with the same draw (`mix_labels`):
    floating labels are mixed; integer labels are left as they are when the
    supervised loss is off (`student_loss_weight=0`, or no compiled loss, as
    in function matching, which distils with KL at T=1 and no label loss),
    and the Distiller refuses them otherwise. Unmixed labels then only feed
    the training metrics, which read the dominant example's label on mixed
    views; `evaluate` and `predict` never augment.

    Args:
        alpha: the Beta concentration, > 0. 1.0 (a uniform ratio) is the
            FunMatch setting (big_vision `configs/proj/distill/bit_i1k.py`:
            `mixup = dict(p=1.0, n=2)`); 0.2 is the usual supervised mixup.
        per_example: one ratio per example instead of per batch.
        seed: an int for reproducible draws (a `keras.random.SeedGenerator`
            state, saved with the layer), or None.
    """

    mixes_labels = True  # the Distiller passes it the labels when they can be mixed

    def __init__(self, alpha=1.0, per_example=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.alpha = validate_positive("alpha", alpha)
        self.per_example = bool(per_example)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="mixup_seed")
        self.built = True

    def draw(self, batch_size):
        """(ratio of shape (B,) or (1,), partner indices (B,)) for one batch."""
        ratio = beta_ratio((batch_size,) if self.per_example else (1,), self.alpha, self.seed_generator)
        ratio = ops.maximum(ratio, 1.0 - ratio)
        size = ops.cast(batch_size, "float32")
        shift = 1 + ops.cast(
            ops.floor(keras.random.uniform((), dtype="float32", seed=self.seed_generator) * (size - 1.0)), "int32"
        )
        # A static Python int stays one: JAX's arange needs a concrete length under jit.
        if not isinstance(batch_size, int):
            batch_size = ops.cast(batch_size, "int32")
        partner = ops.mod(ops.arange(batch_size, dtype="int32") + shift, batch_size)
        return ratio, partner

    def mix_inputs(self, inputs, mixing):
        """`inputs` (any nest of floating tensors) mixed by `mixing`, a draw."""
        for leaf in keras.tree.flatten(inputs):
            if not _is_floating(leaf):
                raise ValueError(
                    f"MixUp mixes floating inputs. Received: a tensor of dtype {leaf.dtype} "
                    f"(shape {tuple(leaf.shape)}). Cast images to float first."
                )
        ratio, partner = mixing
        return keras.tree.map_structure(lambda t: _mix(t, ratio, partner), inputs)

    def mix_labels(self, labels, mixing):
        """One-hot or soft `labels` mixed as `mix_inputs` mixed their inputs."""
        for leaf in keras.tree.flatten(labels):
            if not _is_floating(leaf) or len(leaf.shape) < 2:
                raise ValueError(
                    f"MixUp mixes one-hot or soft labels (floating, rank >= 2). Received: labels of dtype "
                    f"{leaf.dtype} and shape {tuple(leaf.shape)}. Give one-hot labels with a "
                    "CategoricalCrossentropy loss, or leave the labels out (student_loss_weight=0, as in "
                    "function matching)."
                )
        ratio, partner = mixing
        return keras.tree.map_structure(lambda t: _mix(t, ratio, partner), labels)

    def call(self, inputs, labels=None, training=None):
        if not training:
            return inputs if labels is None else (inputs, labels)
        mixing = self.draw(ops.shape(keras.tree.flatten(inputs)[0])[0])
        mixed = self.mix_inputs(inputs, mixing)
        return mixed if labels is None else (mixed, self.mix_labels(labels, mixing))

    def compute_output_shape(self, input_shape, labels_shape=None):
        return input_shape if labels_shape is None else (input_shape, labels_shape)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "per_example": self.per_example, "seed": self.seed}


def _is_floating(tensor):
    return "float" in str(keras.backend.standardize_dtype(tensor.dtype))


def _mix(tensor, ratio, partner):
    """ratio * tensor + (1 - ratio) * tensor[partner], in float32."""
    values = ops.cast(tensor, "float32")
    ratio = ops.reshape(ratio, [-1] + [1] * (len(tensor.shape) - 1))
    mixed = ratio * values + (1.0 - ratio) * ops.take(values, partner, axis=0)
    return ops.cast(mixed, tensor.dtype)
