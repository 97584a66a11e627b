"""Learnable adapters from a student feature to the teacher's shape.

FitNets-style methods compare features channel by channel, so a thin student
needs a regressor in front of the loss. A connector trains with the student,
is owned by the `Distiller` and never becomes part of `distiller.student`.
"""

import keras

CONNECTOR_NAMES = ("auto", "conv1x1", "linear")


@keras.saving.register_keras_serializable(package="keras_kd")
class Conv1x1Connector(keras.layers.Layer):
    """1x1 convolution (no bias) followed by BatchNorm: maps a (B, H, W, C_s)
    student map to C_t channels, the regressor of the CRD benchmark's
    `ConvReg` for equal spatial sizes and of Heo et al.'s overhaul."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.conv = keras.layers.Conv2D(self.channels, 1, use_bias=False, name="conv")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build((*input_shape[:-1], self.channels))

    def call(self, inputs, training=None):
        return self.norm(self.conv(inputs), training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="keras_kd")
class LinearConnector(keras.layers.Layer):
    """A dense projection of flattened student features to the teacher's
    size, reshaped to the teacher's feature shape."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)
        units = 1
        for dim in self.target_shape:
            units *= dim
        self.flatten = keras.layers.Flatten(name="flatten")
        self.dense = keras.layers.Dense(units, name="dense")
        self.reshape = keras.layers.Reshape(self.target_shape, name="reshape")

    def build(self, input_shape):
        features = 1
        for dim in input_shape[1:]:
            features *= dim
        self.dense.build((input_shape[0], features))

    def call(self, inputs):
        return self.reshape(self.dense(self.flatten(inputs)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


def validate_connector(connector):
    """Accept None, a known name or a `keras.layers.Layer`, else raise."""
    if connector is None or isinstance(connector, keras.layers.Layer):
        return connector
    if isinstance(connector, str) and connector in CONNECTOR_NAMES:
        return connector
    raise ValueError(
        f"`connector` must be None, one of {list(CONNECTOR_NAMES)} or a "
        f"keras.layers.Layer. Received: connector={connector!r}"
    )


def make_connector(connector, student_shape, teacher_shape, name):
    """Build the connector layer for one term, or None.

    "auto" gives no connector when the shapes already agree (or two maps
    have the same channels: the losses pool space), "conv1x1" for two maps
    with different channels, "linear" otherwise.

    Args:
        connector: a name from `CONNECTOR_NAMES` or a `keras.layers.Layer`.
        student_shape, teacher_shape: feature shapes with the batch dim.
        name: the layer's name (the term's name + "_connector").
    """
    if connector == "auto":
        maps = len(student_shape) == len(teacher_shape) == 4
        if tuple(student_shape[1:]) == tuple(teacher_shape[1:]) or (
            maps and student_shape[-1] == teacher_shape[-1]
        ):
            return None
        connector = "conv1x1" if maps else "linear"
    if isinstance(connector, keras.layers.Layer):
        layer = connector
    elif connector == "conv1x1":
        if len(student_shape) != 4 or len(teacher_shape) != 4:
            raise ValueError(
                f"connector='conv1x1' maps (batch, H, W, C) feature maps; term "
                f"'{name}' has student shape {student_shape} and teacher shape "
                f"{teacher_shape}. Use connector='linear' for vectors."
            )
        layer = Conv1x1Connector(teacher_shape[-1], name=name)
    else:
        layer = LinearConnector(teacher_shape[1:], name=name)
    if not layer.built:
        layer.build(student_shape)
    return layer
