"""CIFAR ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for
Efficient CNN Architecture Design", ECCV 2018) as in the CRD benchmark
(RepDistiller `models/ShuffleNetv2.py`, `ShuffleV2`: net size 1).

Architecture: a 1x1 conv (24 filters) -> BN -> ReLU stem (`stem`; no
max-pool on CIFAR), three stages of one down-sampling block followed by
(3, 7, 3) basic blocks with (116, 232, 464) channels, a 1x1 conv -> BN ->
ReLU to 1024 channels (`head`), a global average pool (`embedding`) and a
linear classifier (`logits`). 32x32 inputs end at 4x4 before pooling.

- Down-sampling block: left branch 3x3 depthwise (stride 2) -> BN -> 1x1
  conv -> BN -> ReLU; right branch 1x1 conv -> BN -> ReLU -> 3x3 depthwise
  (stride 2) -> BN -> 1x1 conv -> BN -> ReLU; concatenated, then shuffled.
- Basic block: split the channels in halves; the second goes through 1x1
  conv -> BN -> ReLU -> 3x3 depthwise -> BN -> 1x1 conv -> BN -> ReLU;
  concatenated with the first half, then shuffled (`ChannelShuffle`, 2
  groups). Here the last ReLU is applied after the concatenation, which is
  the same function: the untouched half is already non-negative.

Feature names: the last basic block of stage `i` is `stage{i}` (after the
shuffle) and, as in the reference, `stage{i}_preact` is the concatenation
of the untouched half with the last BN before its ReLU (not shuffled: same
shape as `stage{i}`, channels in concatenation order).
"""

import keras
from keras import layers

from keras_kd.models._layers import (
    ChannelShuffle,
    ChannelSplit,
    bn,
    conv,
    conv_bn,
    depthwise,
)

CONFIGS = {  # net size -> (stage channels + head channels, basic blocks per stage)
    0.5: ((48, 96, 192, 1024), (3, 7, 3)),
    1: ((116, 232, 464, 1024), (3, 7, 3)),
    1.5: ((176, 352, 704, 1024), (3, 7, 3)),
    2: ((224, 488, 976, 2048), (3, 7, 3)),
}


def _down_block(x, width, prefix):
    mid = width // 2
    left = depthwise(3, f"{prefix}_left_dw_conv", strides=2)(x)
    left = bn(f"{prefix}_left_dw_bn")(left)
    left = conv_bn(left, mid, 1, f"{prefix}_left_pw")
    left = layers.ReLU(name=f"{prefix}_left_relu")(left)
    right = conv_bn(x, mid, 1, f"{prefix}_right_pw1")
    right = layers.ReLU(name=f"{prefix}_right_relu1")(right)
    right = depthwise(3, f"{prefix}_right_dw_conv", strides=2)(right)
    right = bn(f"{prefix}_right_dw_bn")(right)
    right = conv_bn(right, mid, 1, f"{prefix}_right_pw2")
    right = layers.ReLU(name=f"{prefix}_right_relu2")(right)
    out = layers.Concatenate(name=f"{prefix}_concat")([left, right])
    return ChannelShuffle(2, name=f"{prefix}_shuffle")(out)


def _basic_block(x, prefix, preact_name=None, out_name=None):
    kept, x2 = ChannelSplit(0.5, name=f"{prefix}_split")(x)
    width = x2.shape[-1]
    out = conv_bn(x2, width, 1, f"{prefix}_pw1")
    out = layers.ReLU(name=f"{prefix}_relu1")(out)
    out = depthwise(3, f"{prefix}_dw_conv")(out)
    out = bn(f"{prefix}_dw_bn")(out)
    out = conv_bn(out, width, 1, f"{prefix}_pw2")
    # The reference computes concat([kept, relu(out)]); `kept` is already
    # non-negative (every block input is built from ReLU outputs), so
    # relu(concat([kept, out])) is the same tensor and keeps the pre-ReLU
    # concatenation (RepDistiller's `preact`) on the model's path.
    out = layers.Concatenate(name=preact_name or f"{prefix}_concat")([kept, out])
    out = layers.ReLU(name=f"{prefix}_relu2")(out)
    return ChannelShuffle(2, name=out_name or f"{prefix}_shuffle")(out)


def shufflenetv2(input_shape, num_classes, net_size=1, name="shufflenetv2"):
    """A CIFAR ShuffleNetV2.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        net_size: one of `CONFIGS` (0.5, 1, 1.5, 2); 1 in the CRD benchmark.
        name: model name.
    """
    if net_size not in CONFIGS:
        raise ValueError(f"net_size must be one of {sorted(CONFIGS)}. Received: net_size={net_size!r}")
    channels, blocks = CONFIGS[net_size]
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, 24, 1, "stem")
    x = layers.ReLU(name="stem")(x)
    for stage, (width, count) in enumerate(zip(channels[:3], blocks), start=1):
        x = _down_block(x, width, f"stage{stage}_down")
        for block in range(1, count + 1):
            last = block == count
            x = _basic_block(
                x,
                f"stage{stage}_block{block}",
                preact_name=f"stage{stage}_preact" if last else None,
                out_name=f"stage{stage}" if last else None,
            )
    x = conv(channels[3], 1, "head_conv")(x)
    x = bn("head_bn")(x)
    x = layers.ReLU(name="head")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
