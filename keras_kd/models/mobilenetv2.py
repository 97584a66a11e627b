"""CIFAR MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and
Linear Bottlenecks", CVPR 2018) as in the CRD benchmark (RepDistiller
`models/mobilenetv2.py`, `mobile_half`: expansion T = 6, width 0.5).

Architecture: a 3x3 stride-2 conv -> BN -> ReLU stem (`stem`), seven groups
of inverted residual blocks (expansion t, channels c * width, n blocks,
first stride s):

    (1, 16, 1, 1), (T, 24, 2, 1), (T, 32, 3, 2), (T, 64, 4, 2),
    (T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1)

a 1x1 conv -> BN -> ReLU to 1280 channels (`head`; `1280 * width` when
width > 1), a global average pool (`embedding`) and a linear classifier
(`logits`). A block is 1x1 expand -> BN -> ReLU -> 3x3 depthwise -> BN ->
ReLU -> 1x1 project -> BN, plus the input when the stride is 1 and the width
is unchanged. A 32x32 input ends at 2x2 before pooling.

Feature names: `stage1..stage4` are the outputs of groups 2, 3, 5 and 7, the
points RepDistiller returns as `f1..f4`. Those outputs are linear
bottlenecks (no ReLU follows them), so there are no `stage{i}_preact` layers.
"""

import keras
from keras import layers

from keras_kd.models._layers import bn, conv, depthwise

_SETTING = (  # (expansion or None for T, channels, blocks, first stride)
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)
# Group index (0-based) -> stage name of its output.
_STAGES = {1: "stage1", 2: "stage2", 4: "stage3", 6: "stage4"}


def _inverted_residual(x, width, stride, expansion, prefix, out_name):
    in_width = x.shape[-1]
    out = conv(in_width * expansion, 1, f"{prefix}_expand_conv")(x)
    out = bn(f"{prefix}_expand_bn")(out)
    out = layers.ReLU(name=f"{prefix}_expand_relu")(out)
    out = depthwise(3, f"{prefix}_depthwise_conv", strides=stride)(out)
    out = bn(f"{prefix}_depthwise_bn")(out)
    out = layers.ReLU(name=f"{prefix}_depthwise_relu")(out)
    out = conv(width, 1, f"{prefix}_project_conv")(out)
    if stride == 1 and in_width == width:
        out = bn(f"{prefix}_project_bn")(out)
        return layers.Add(name=out_name or f"{prefix}_add")([x, out])
    return bn(out_name or f"{prefix}_project_bn")(out)


def mobilenetv2(input_shape, num_classes, expansion=6, width_mult=0.5, name="mobilenetv2"):
    """A CIFAR MobileNetV2.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        expansion: expansion factor T of the inverted residual blocks.
        width_mult: channel multiplier (0.5 is the CRD benchmark's student).
        name: model name.
    """
    if not isinstance(expansion, int) or expansion < 1:
        raise ValueError(f"expansion must be a positive int. Received: expansion={expansion!r}")
    if not width_mult > 0:
        raise ValueError(f"width_mult must be positive. Received: width_mult={width_mult!r}")
    inputs = keras.Input(input_shape, name="image")
    x = conv(int(32 * width_mult), 3, "stem_conv", strides=2)(inputs)
    x = bn("stem_bn")(x)
    x = layers.ReLU(name="stem")(x)
    for group, (t, channels, blocks, first_stride) in enumerate(_SETTING):
        width = int(channels * width_mult)
        for block in range(blocks):
            last = block == blocks - 1
            x = _inverted_residual(
                x,
                width,
                first_stride if block == 0 else 1,
                t or expansion,
                f"group{group}_block{block}",
                out_name=_STAGES.get(group) if last else None,
            )
    last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = conv(last_channel, 1, "head_conv")(x)
    x = bn("head_bn")(x)
    x = layers.ReLU(name="head")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
