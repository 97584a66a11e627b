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

Optional model noise, as the students of Noisy Student (Xie, Luong, Hovy &
Le, CVPR 2020: stochastic depth with survival probability 0.8 for the final
layer and Huang et al.'s linear decay for the others, dropout 0.5 before the
final classification layer). Both are off by default, and the model is then
exactly the plain ResNet (same layers, names and weights):

- `dropout`: a `Dropout` layer named `dropout` between `embedding` and
  `logits`.
- `stochastic_depth`: the drop rate of the LAST block; block `i` of the `L`
  blocks (`i = 1..L` counted through all stages) drops its residual branch
  with rate `stochastic_depth * i / L`, i.e. survival `1 - rate * i / L`
  (Huang et al.'s linear decay rule `p_i = 1 - i / L * (1 - p_L)`). A
  `StochasticDepth` layer named `{prefix}_drop_path` sits on the residual
  branch of every block (also those with a projection shortcut, whose
  shortcut then carries the block alone), before the `Add`; it rescales
  kept branches by `1 / survival` in training and is the identity at
  inference (see `StochasticDepth`). The Noisy Student code
  (`efficientnet_model.py`) counts blocks from 0 (`rate * idx / L`, so its
  last block gets `rate * (L - 1) / L`) and noises only identity-shortcut
  blocks; here the last block gets exactly `stochastic_depth`, as in the
  paper's text.
"""

import keras
from keras import layers

from keras_kd.models._layers import StochasticDepth, conv_bn


def _basic_block(x, width, stride, prefix, add_name, out_name, drop_rate=0.0):
    shortcut = x
    if stride != 1 or x.shape[-1] != width:
        shortcut = conv_bn(x, width, 1, f"{prefix}_shortcut", strides=stride)
    out = conv_bn(x, width, 3, f"{prefix}_1", strides=stride)
    out = layers.ReLU(name=f"{prefix}_1_relu")(out)
    out = conv_bn(out, width, 3, f"{prefix}_2")
    if drop_rate:
        out = StochasticDepth(drop_rate, name=f"{prefix}_drop_path")(out)
    out = layers.Add(name=add_name)([out, shortcut])
    return layers.ReLU(name=out_name)(out)


def _rate(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def resnet(
    input_shape, num_classes, depth=20, channels=(16, 16, 32, 64), name="resnet", dropout=0.0, stochastic_depth=0.0
):
    """A CIFAR ResNet of depth `6n + 2`.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        depth: total depth, `6n + 2` (8, 14, 20, 32, 44, 56, 110, ...).
        channels: stem width and the widths of the three stages.
        name: model name.
        dropout: dropout rate in [0, 1) before the `logits` layer (the
            Noisy Student paper: 0.5); 0 adds no layer.
        stochastic_depth: drop rate in [0, 1) of the last block's residual
            branch, decaying linearly to `stochastic_depth / L` for the
            first of the `L` blocks (the paper: 0.2, i.e. survival 0.8);
            0 adds no layer.
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...). Received: depth={depth!r}")
    if len(channels) != 4:
        raise ValueError(f"channels must give the stem and three stage widths. Received: channels={channels!r}")
    dropout = _rate("dropout", dropout)
    stochastic_depth = _rate("stochastic_depth", stochastic_depth)
    blocks = (depth - 2) // 6
    total, index = 3 * blocks, 0
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn(inputs, channels[0], 3, "stem")
    x = layers.ReLU(name="stem")(x)
    for stage, (width, stride) in enumerate(zip(channels[1:], (1, 2, 2)), start=1):
        for block in range(1, blocks + 1):
            prefix = f"stage{stage}_block{block}"
            last = block == blocks
            index += 1
            x = _basic_block(
                x,
                width,
                stride if block == 1 else 1,
                prefix,
                add_name=f"stage{stage}_preact" if last else f"{prefix}_add",
                out_name=f"stage{stage}" if last else f"{prefix}_out",
                drop_rate=stochastic_depth * index / total,
            )
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
