"""Fully connected nets of Hinton, Vinyals & Dean, "Distilling the Knowledge
in a Neural Network" (2015), MNIST experiments.

Architecture: `Flatten` (so image inputs work) -> per hidden layer
`Dense` (linear, named `stage{i}_preact`) -> `ReLU` (`stage{i}`) -> optional
`Dropout` -> `Dense` logits (`logits`). The last hidden stage doubles as the
embedding.

The paper's teacher has two hidden layers of 1200 ReLU units, "strongly
regularized using dropout and weight-constraints" (the recipe of Hinton et
al. 2012: 50% dropout on hidden units, 20% on the inputs, inputs jittered by
up to two pixels); its student has two layers of 800 units and no
regularization. On 784 inputs and 10 classes they have 2,395,210 and
1,276,810 parameters.
"""

import keras
from keras import layers


def mlp(input_shape, num_classes, hidden=(1200, 1200), dropout=0.0, name="mlp"):
    """A ReLU MLP with named stages.

    Args:
        input_shape: shape of one example (flattened first).
        num_classes: number of logits.
        hidden: units of each hidden layer.
        dropout: dropout rate after each hidden layer (0 for none).
        name: model name.
    """
    inputs = keras.Input(input_shape, name="inputs")
    x = layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden, start=1):
        x = layers.Dense(units, name=f"stage{i}_preact")(x)
        x = layers.ReLU(name=f"stage{i}")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"stage{i}_dropout")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
