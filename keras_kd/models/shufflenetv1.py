"""CIFAR ShuffleNet (Zhang et al., "ShuffleNet: An Extremely Efficient
Convolutional Neural Network for Mobile Devices", CVPR 2018) as in the CRD
benchmark (RepDistiller `models/ShuffleNetv1.py`, `ShuffleV1`: 3 groups).

Architecture: a 1x1 conv (24 filters) -> BN -> ReLU stem (`stem`), three
stages of (4, 8, 4) bottlenecks with (240, 480, 960) output channels, a
global average pool (`embedding`) and a linear classifier (`logits`). A
bottleneck with `mid = out / 4` is grouped 1x1 conv -> BN -> ReLU -> channel
shuffle -> 3x3 depthwise (stride 2 in a stage's first block) -> BN -> ReLU
-> grouped 1x1 conv -> BN, then added to the input, or in a stage's first
block concatenated with a 3x3 stride-2 average pool of it, then ReLU. The
first 1x1 conv after the 24-channel stem is not grouped. The reference's
average pool counts the zero padding (PyTorch's default); Keras'
`AveragePooling2D(padding="same")` does not, which only changes border values.

Feature names: the last block of stage `i` names its pre-ReLU sum
`stage{i}_preact` and its output `stage{i}`, as the reference's `preact`.
"""

import keras
from keras import layers

from keras_kd.models._layers import ChannelShuffle, bn, conv, conv_bn, depthwise


def _bottleneck(x, width, stride, groups, prefix, preact_name=None, out_name=None):
    in_width = x.shape[-1]
    mid = width // 4
    first_groups = 1 if in_width == 24 else groups
    out = conv_bn(x, mid, 1, f"{prefix}_pw1", groups=first_groups)
    out = layers.ReLU(name=f"{prefix}_relu1")(out)
    out = ChannelShuffle(first_groups, name=f"{prefix}_shuffle")(out)
    out = depthwise(3, f"{prefix}_dw_conv", strides=stride)(out)
    out = bn(f"{prefix}_dw_bn")(out)
    out = layers.ReLU(name=f"{prefix}_relu2")(out)
    out = conv(width, 1, f"{prefix}_pw2_conv", groups=groups)(out)
    out = bn(f"{prefix}_pw2_bn")(out)
    merge_name = preact_name or f"{prefix}_merge"
    if stride == 2:
        shortcut = layers.AveragePooling2D(3, strides=2, padding="same", name=f"{prefix}_shortcut_pool")(x)
        out = layers.Concatenate(name=merge_name)([out, shortcut])
    else:
        out = layers.Add(name=merge_name)([out, x])
    return layers.ReLU(name=out_name or f"{prefix}_out")(out)


def shufflenetv1(input_shape, num_classes, widths=(240, 480, 960), blocks=(4, 8, 4), groups=3, name="shufflenetv1"):
    """A CIFAR ShuffleNet (v1).

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        widths: output channels of the three stages.
        blocks: bottlenecks per stage.
        groups: groups of the 1x1 convolutions.
        name: model name.
    """
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, 24, 1, "stem")
    x = layers.ReLU(name="stem")(x)
    for stage, (width, count) in enumerate(zip(widths, blocks), start=1):
        for block in range(1, count + 1):
            last = block == count
            first = block == 1
            x = _bottleneck(
                x,
                # A stage's first block concatenates its input back on.
                width - x.shape[-1] if first else width,
                2 if first else 1,
                groups,
                f"stage{stage}_block{block}",
                preact_name=f"stage{stage}_preact" if last else None,
                out_name=f"stage{stage}" if last else None,
            )
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
