"""Wide ResNets WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks",
BMVC 2016) as in the CRD benchmark (RepDistiller `models/wrn.py`).

Pre-activation network of depth `6n + 4` and widening factor `k`: a 3x3
stem conv (`stem`, 16 filters, no BN), three stages of `n` blocks with
`16k, 32k, 64k` filters (strides 1, 2, 2), a final BN -> ReLU, a global
average pool (`embedding`) and a linear classifier (`logits`). A block is
BN -> ReLU -> conv3x3 -> BN -> ReLU -> (dropout) -> conv3x3, added to the
input, or to a 1x1 conv of the pre-activated input where the width changes
(the reference's `convShortcut`).

Feature names: `stage{i}` is the output (the `Add`) of stage `i`'s last
block, the reference's `f_i`. Block outputs are not followed by a ReLU of
their own, so, as RepDistiller's `preact=True` does, `stage{i}_preact` is
the BatchNormalization the next layer applies to `stage{i}` before its ReLU:
the first BN of stage `i + 1`'s first block for stages 1 and 2, the final BN
for stage 3. It has the shape of `stage{i}`.
"""

import keras
from keras import layers

from keras_kd.models._layers import bn, conv


def _block(x, width, stride, prefix, dropout, bn_name, out_name):
    pre = bn(bn_name or f"{prefix}_bn1")(x)
    pre = layers.ReLU(name=f"{prefix}_relu1")(pre)
    if stride != 1 or x.shape[-1] != width:
        shortcut = conv(width, 1, f"{prefix}_shortcut_conv", strides=stride)(pre)
    else:
        shortcut = x
    out = conv(width, 3, f"{prefix}_conv1", strides=stride)(pre)
    out = bn(f"{prefix}_bn2")(out)
    out = layers.ReLU(name=f"{prefix}_relu2")(out)
    if dropout:
        out = layers.Dropout(dropout, name=f"{prefix}_dropout")(out)
    out = conv(width, 3, f"{prefix}_conv2")(out)
    return layers.Add(name=out_name)([shortcut, out])


def wrn(input_shape, num_classes, depth=40, widen_factor=2, dropout=0.0, name="wrn"):
    """A Wide ResNet WRN-`depth`-`widen_factor`.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        depth: total depth, `6n + 4` (10, 16, 22, 28, 40, ...).
        widen_factor: width multiplier `k` of the three stages.
        dropout: dropout rate between a block's two convs (0 in the CRD
            benchmark).
        name: model name.
    """
    if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1 (10, 16, 22, ...). Received: depth={depth!r}")
    if not isinstance(widen_factor, int) or widen_factor < 1:
        raise ValueError(f"widen_factor must be a positive int. Received: widen_factor={widen_factor!r}")
    blocks = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    inputs = keras.Input(input_shape, name="image")
    x = conv(16, 3, "stem")(inputs)
    for stage, (width, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            last = block == blocks
            # The first BN of a stage reads the previous stage's output.
            bn_name = f"stage{stage - 1}_preact" if block == 1 and stage > 1 else None
            x = _block(
                x,
                width,
                stride if block == 1 else 1,
                prefix,
                dropout,
                bn_name=bn_name,
                out_name=f"stage{stage}" if last else f"{prefix}_out",
            )
    x = bn("stage3_preact")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
