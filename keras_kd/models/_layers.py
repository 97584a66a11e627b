"""Building blocks shared by the zoo: conv/BN defaults and the two channel
layers ShuffleNets need (serializable, so their models round-trip through
`.keras` files)."""

import keras
from keras import layers, ops

# PyTorch's BatchNorm2d defaults (momentum 0.1 == Keras momentum 0.9, eps 1e-5),
# as in the reference code; Keras' 0.99 is too slow for short runs.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def conv(filters, kernel_size, name, strides=1, groups=1):
    """Bias-free 'same' convolution with He initialization."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        groups=groups,
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def depthwise(kernel_size, name, strides=1):
    """Bias-free 'same' depthwise convolution with He initialization."""
    return layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer="he_normal",
        name=name,
    )


def bn(name):
    return layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_bn(x, filters, kernel_size, prefix, strides=1, groups=1):
    """Conv -> BN, named `{prefix}_conv` and `{prefix}_bn`."""
    x = conv(filters, kernel_size, f"{prefix}_conv", strides=strides, groups=groups)(x)
    return bn(f"{prefix}_bn")(x)


@keras.saving.register_keras_serializable(package="keras_kd")
class ChannelShuffle(layers.Layer):
    """Channel shuffle of ShuffleNet (Zhang et al., 2018) for channels-last
    maps: view the C channels as (groups, C / groups), transpose, flatten.

    Same permutation as the reference `ShuffleBlock` (channels-first
    `view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)`).
    """

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be a positive int. Received: groups={groups!r}")
        self.groups = groups

    def build(self, input_shape):
        channels = input_shape[-1]
        if len(input_shape) != 4 or channels is None or channels % self.groups:
            raise ValueError(
                f"ChannelShuffle needs a (batch, H, W, C) input with C divisible by groups={self.groups}. "
                f"Received: input_shape={input_shape}"
            )

    def call(self, inputs):
        shape = ops.shape(inputs)
        height, width, channels = shape[1], shape[2], shape[3]
        x = ops.reshape(inputs, (-1, height, width, self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 1, 2, 4, 3))
        return ops.reshape(x, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="keras_kd")
class ChannelSplit(layers.Layer):
    """Splits channels-last maps into the first `int(C * ratio)` channels and
    the rest (the reference `SplitBlock` of ShuffleNetV2)."""

    def __init__(self, ratio=0.5, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must be in (0, 1). Received: ratio={ratio!r}")
        self.ratio = float(ratio)

    def _split_at(self, channels):
        return int(channels * self.ratio)

    def call(self, inputs):
        split = self._split_at(inputs.shape[-1])
        return inputs[..., :split], inputs[..., split:]

    def compute_output_shape(self, input_shape):
        split = self._split_at(input_shape[-1])
        head = (*input_shape[:-1], split)
        tail = (*input_shape[:-1], input_shape[-1] - split)
        return head, tail

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio}


@keras.saving.register_keras_serializable(package="keras_kd")
class StochasticDepth(layers.Layer):
    """Stochastic depth (Huang, Sun, Liu, Sedra & Weinberger, "Deep Networks
    with Stochastic Depth", ECCV 2016) on a residual branch: apply it to the
    branch `f(x)` before the residual sum `x + f(x)`.

    Training: each example's branch is kept with probability `1 - rate` and
    zeroed otherwise (one Bernoulli draw per example, shared by all its
    features), and kept branches are divided by `1 - rate`:

        out = f(x) * b / (1 - rate),  b ~ Bernoulli(1 - rate) per example,

    so `E[out] = f(x)`. Inference: the identity. This is the "inverted"
    convention of the Noisy Student code (`utils.stochastic_depth` in
    github.com/google-research/noisystudent) and of Keras/timm "drop path";
    Huang et al. instead leave the kept branch unscaled in training and
    multiply it by the survival probability at test time, which has the same
    expectation.

    Args:
        rate: drop probability in [0, 1) (the survival probability is
            `1 - rate`); 0 makes the layer the identity.
        seed: optional int seed of the per-example draws.
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"StochasticDepth `rate` must be a number in [0, 1). Received: rate={rate!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"StochasticDepth `seed` must be an int or None. Received: seed={seed!r}")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        draw = keras.random.uniform(shape, seed=self.seed_generator, dtype="float32")
        mask = ops.cast(ops.floor(keep + draw), inputs.dtype)  # 1 with probability `keep`
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
