"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) as in the CRD benchmark (Tian et al., ICLR 2020; RepDistiller
`models/resnet.py`).

Depth `6n + 2` with BasicBlocks: a 3x3 stem conv -> BN -> ReLU (`stem`), then
three stages of `n` blocks with `channels[1:]` filters (strides 1, 2, 2), a
global average pool (`embedding`) and a linear classifier (`logits`). A block
is conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the shortcut, then ReLU; the
shortcut is a 1x1 conv + BN ("option B") where the stride or the width
changes, as in the reference code. resnet8..110 use channels
`(16, 16, 32, 64)`, resnet8x4 and resnet32x4 `(32, 64, 128, 256)`.

Feature names: the last block of stage `i` names its pre-ReLU sum (the
`Add`) `stage{i}_preact` and its output `stage{i}`, the reference's
`(f_i, f_i_pre)`.
"""

import keras
from keras import layers

from keras_kd.models._layers import conv_bn


def _basic_block(x, width, stride, prefix, add_name, out_name):
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = conv_bn(x, width, 1, f"{prefix}_shortcut", strides=stride)
    out = conv_bn(x, width, 3, f"{prefix}_1", strides=stride)
    out = layers.ReLU(name=f"{prefix}_1_relu")(out)
    out = conv_bn(out, width, 3, f"{prefix}_2")
    out = layers.Add(name=add_name)([out, shortcut])
    return layers.ReLU(name=out_name)(out)


def resnet(input_shape, num_classes, depth=20, channels=(16, 16, 32, 64), name="resnet"):
    """A CIFAR ResNet of depth `6n + 2`.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        depth: total depth, `6n + 2` (8, 14, 20, 32, 44, 56, 110, ...).
        channels: stem width and the widths of the three stages.
        name: model name.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...). Received: depth={depth!r}")
    if len(channels) != 4:
        raise ValueError(f"channels must give the stem and three stage widths. Received: channels={channels!r}")
    blocks = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, channels[0], 3, "stem")
    x = layers.ReLU(name="stem")(x)
    for stage, (width, stride) in enumerate(zip(channels[1:], (1, 2, 2)), start=1):
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            last = block == blocks
            x = _basic_block(
                x,
                width,
                stride if block == 1 else 1,
                prefix,
                add_name=f"stage{stage}_preact" if last else f"{prefix}_add",
                out_name=f"stage{stage}" if last else f"{prefix}_out",
            )
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
