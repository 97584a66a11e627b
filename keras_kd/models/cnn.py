"""Small plain CNNs for quick experiments on 8x8 digits, 28x28 MNIST and
32x32 CIFAR (no reference paper: sized to run on a CPU).

Architecture, per stage `i`: 3x3 `Conv2D` (no bias, `stage{i}_conv`, stride 1
in stage 1 and 2 afterwards) -> `BatchNormalization` (`stage{i}_preact`) ->
`ReLU` (`stage{i}`); then `GlobalAveragePooling2D` (`embedding`) -> `Dense`
logits (`logits`). Three stages take 8x8 inputs down to 2x2.
"""

import keras
from keras import layers

from keras_kd.models._layers import bn, conv


def cnn(input_shape, num_classes, widths=(32, 64), name="cnn"):
    """A conv-BN-ReLU stack, one conv per stage.

    Args:
        input_shape: `(H, W, C)`.
        num_classes: number of logits.
        widths: channels of each stage; stages after the first halve the
            spatial size.
        name: model name.
    """
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i, width in enumerate(widths, start=1):
        x = conv(width, 3, f"stage{i}_conv", strides=1 if i == 1 else 2)(x)
        x = bn(f"stage{i}_preact")(x)
        x = layers.ReLU(name=f"stage{i}")(x)
    x = layers.GlobalAveragePooling2D(name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
