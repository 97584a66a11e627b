"""`Term`: one distillation loss bound to what it compares."""

import keras

from keras_kd.connectors import validate_connector
from keras_kd.validation import validate_positive


def _layer_names(value, argument):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(
        f"`{argument}` must be None (the model's output), a layer name or a "
        f"non-empty list of layer names. Received: {argument}={value!r}"
    )


@keras.saving.register_keras_serializable(package="keras_kd")
class Term:
    """One distillation term of a `Distiller`: `weight * loss(teacher, student)`.

    Args:
        loss: a `keras.losses.Loss`, usually from `keras_kd.losses`, called as
            `loss(teacher_feature, student_feature)`.
        teacher_layer, student_layer: what the loss compares. None means the
            model's output (logits); a layer name means that layer's output; a
            list of names gives the loss a tuple of maps (FSP takes two).
        weight: the term's weight, >= 0. The Distiller keeps it in a variable,
            so a `WeightScheduler` can change it without re-tracing.
        connector: None, "conv1x1" (1x1 conv + BatchNorm), "linear" (Dense),
            "auto" (whichever fits, none when the shapes agree), or any
            `keras.layers.Layer`, applied to the student's feature to
            reach the teacher's shape. It trains with the student.
        name: the key the term is logged under. Defaults to the loss's name;
            the Distiller makes repeated names unique (`kd_loss_1`, ...).
        teacher: with several teachers (`Distiller(teacher={"a": ..., "b": ...})`
            or a list, keyed "teacher1", ...), the one this term reads. None:
            the only teacher, or for an output term the weighted ensemble of
            all teachers' softened outputs.
    """

    def __init__(
        self,
        loss,
        teacher_layer=None,
        student_layer=None,
        weight=1.0,
        connector=None,
        name=None,
        teacher=None,
    ):
        if not isinstance(loss, keras.losses.Loss):
            raise ValueError(
                "`loss` must be a keras.losses.Loss instance such as "
                f"keras_kd.losses.KDLoss(). Received: loss={loss!r}"
            )
        self.loss = loss
        self.teacher_layer = _layer_names(teacher_layer, "teacher_layer")
        self.student_layer = _layer_names(student_layer, "student_layer")
        if (self.teacher_layer is None) != (self.student_layer is None):
            raise ValueError(
                "Give both `teacher_layer` and `student_layer`, or neither (to "
                f"compare the models' outputs). Received: teacher_layer="
                f"{teacher_layer!r}, student_layer={student_layer!r}"
            )
        self.weight = validate_positive("weight", weight, allow_zero=True)
        self.connector = validate_connector(connector)
        if isinstance(self.student_layer, tuple) and self.connector is not None:
            raise ValueError(
                "A connector adapts one student feature; this term compares "
                f"several ({list(self.student_layer)}). Use one term per layer."
            )
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"`name` must be a non-empty string. Received: name={name!r}")
        self.name = name or loss.name
        if teacher is not None and not (isinstance(teacher, str) and teacher):
            raise ValueError(f"`teacher` must be None or a teacher's key. Received: teacher={teacher!r}")
        self.teacher = teacher

    def __repr__(self):
        return (
            f"Term({type(self.loss).__name__}, teacher_layer={self.teacher_layer!r}, "
            f"student_layer={self.student_layer!r}, weight={self.weight}, name={self.name!r}"
            + (f", teacher={self.teacher!r})" if self.teacher else ")")
        )

    def get_config(self):
        as_list = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        connector = self.connector
        if isinstance(connector, keras.layers.Layer):
            connector = keras.saving.serialize_keras_object(connector)
        return {
            "loss": keras.saving.serialize_keras_object(self.loss),
            "teacher_layer": as_list(self.teacher_layer),
            "student_layer": as_list(self.student_layer),
            "weight": self.weight,
            "connector": connector,
            "name": self.name,
            "teacher": self.teacher,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        if isinstance(config["connector"], dict):
            config["connector"] = keras.saving.deserialize_keras_object(config["connector"])
        return cls(**config)
