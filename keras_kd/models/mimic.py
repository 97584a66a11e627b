"""Shallow "mimic" net with a linear bottleneck, after Ba & Caruana, "Do Deep
Nets Really Need to be Deep?", NeurIPS 2014.

Ba & Caruana train a shallow net (one wide non-linear hidden layer) to
regress a deep teacher's logits (`keras_kd.losses.LogitMSELoss`, the
`logit_mse` recipe: logits alone, no labels). To make the wide layer cheaper
and faster to train they factor its input weight matrix `W` (inputs x
hidden units) as `W = U V` through a linear layer of `k` units with no
non-linearity (their TIMIT SNN-MIMIC models use `k = 250`; the figure comes
from the issue and could not be checked against the paper offline, nor could
the paper's hidden-layer widths, so the defaults here are ours). The product
has rank at most `k`, and the first layer costs `k * (d + H)` weights
instead of `d * H`.

Architecture: `Flatten` (so image inputs work) -> `Dense(bottleneck,
use_bias=False)` (`bottleneck`: linear, `U`; no bias, so `U V` is exactly a
factorization of `W` and the wide layer's bias is the only one) ->
`Dense(hidden_units)` (`stage1_preact`: linear, `V`) -> `ReLU` (`stage1`,
also the embedding) -> `Dense` logits (`logits`). With `bottleneck=None`
the net is the same without the bottleneck: the plain wide shallow net.

Parameters, for `d` flattened inputs, `k` bottleneck units, `H` hidden
units and `C` classes: `d * k + (k * H + H) + (H * C + C)` (without
bottleneck: `(d * H + H) + (H * C + C)`).
"""

import math

import keras
from keras import layers

from keras_kd.validation import validate_positive_int


def mimic_student(input_shape, num_classes, hidden_units=2000, bottleneck=250, name="mimic"):
    """A one-hidden-layer ReLU net whose input weights are factored through a
    linear bottleneck (Ba & Caruana 2014).

    Args:
        input_shape: shape of one example (flattened first).
        num_classes: number of logits.
        hidden_units: width `H` of the non-linear hidden layer.
        bottleneck: units `k` of the linear bottleneck, fewer than both the
            flattened input size and `hidden_units` (else it adds weights
            without limiting the rank); `None` for no bottleneck.
        name: model name.

    Raises:
        ValueError: naming the argument, for a non-positive or non-integer
            size or a bottleneck that is not narrower than the input and the
            hidden layer.
    """
    hidden_units = validate_positive_int("hidden_units", hidden_units)
    if bottleneck is not None:
        bottleneck = validate_positive_int("bottleneck", bottleneck)
        inputs_size = math.prod(input_shape)
        if bottleneck >= min(inputs_size, hidden_units):
            raise ValueError(
                "`bottleneck` must be smaller than both the flattened input size and `hidden_units`, or the "
                "factorization W = U V does not constrain the rank of W. Received: "
                f"bottleneck={bottleneck}, hidden_units={hidden_units}, input size {inputs_size} "
                f"(input_shape={tuple(input_shape)}). Pass bottleneck=None for no bottleneck."
            )
    inputs = keras.Input(input_shape, name="inputs")
    x = layers.Flatten(name="flatten")(inputs)
    if bottleneck is not None:
        x = layers.Dense(bottleneck, use_bias=False, name="bottleneck")(x)  # linear: no activation
    x = layers.Dense(hidden_units, name="stage1_preact")(x)
    x = layers.ReLU(name="stage1")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
