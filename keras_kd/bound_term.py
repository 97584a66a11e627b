"""What a `Distiller` owns for each of its terms, in one record.

A `Term` is the user's description (which loss, which layers, what weight).
Binding it to a Distiller creates the state the step needs: the Distiller's
own copy of the loss (its temperature variable and any learnable layer), the
connector, the weight variable and the tracker that logs the term. Nothing is
written back to the caller's `Term` or loss, so one loss object can serve in
several terms or Distillers without them sharing a schedule.
"""

import keras
from keras import ops

from keras_kd.backend import track_batch_value
from keras_kd.connectors import make_connector
from keras_kd.features import gather


@keras.saving.register_keras_serializable(package="keras_kd")
class LoggedTerm(keras.layers.Layer):
    """A weighted part of a Distiller's total loss, logged under `name`.

    Holds `weight`, a non-trainable variable (schedules assign it without
    re-tracing the step), and `tracker`, the mean of the term's value over
    the epoch. Schemes that add a term of their own (adversarial distillation,
    boundary-supporting samples) register one with `Distiller.add_term`.
    """

    def __init__(self, name, weight, **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.term_name = name
        self.weight = keras.Variable(float(weight), trainable=False, name=f"{name}_weight", dtype="float32")
        self.tracker = keras.metrics.Mean(name=name)
        self.built = True

    def weighted(self, value):
        """`weight * value` in float32."""
        return self.weight * ops.cast(value, "float32")

    def track(self, value, batch_size):
        """Adds one batch's value to the epoch mean (unscaled by replicas)."""
        track_batch_value(self.tracker, value, batch_size)

    def get_config(self):
        return {"name": self.term_name, "weight": float(keras.ops.convert_to_numpy(self.weight))}


@keras.saving.register_keras_serializable(package="keras_kd")
class BoundTerm(LoggedTerm):
    """A `Term` bound to one Distiller's teacher and student.

    Args:
        term: the `keras_kd.Term` (already given its unique log name).
        teacher_shape, student_shape: the static shapes of the compared
            features (None for a subclassed model's output: then the loss
            checks them on its first call).
    """

    def __init__(self, term, teacher_shape=None, student_shape=None):
        super().__init__(term.name, term.weight)
        self.spec = term
        self.teacher_layer = term.teacher_layer
        self.student_layer = term.student_layer
        self.teacher = term.teacher
        self.loss = _own_copy(term.loss)
        self.connector = None
        if term.connector is not None:
            self.connector = make_connector(term.connector, student_shape, teacher_shape, f"{term.name}_connector")
            if self.connector is not None and student_shape is not None:
                student_shape = tuple(self.connector.compute_output_shape(student_shape))
        if teacher_shape is not None and student_shape is not None and hasattr(self.loss, "build"):
            try:
                self.loss.build(teacher_shape, student_shape)
            except ValueError as error:
                raise ValueError(
                    f"Term '{term.name}' ({type(self.loss).__name__}) cannot compare "
                    f"teacher {_describe(term.teacher_layer)} of shape {teacher_shape} "
                    f"with student {_describe(term.student_layer)} of shape "
                    f"{student_shape}: {error}"
                ) from None
        # Tracked here, so the loss's weights train and save with the Distiller.
        self.loss_layer = getattr(self.loss, "layer", None)
        # A variable, so a TemperatureScheduler changes it without re-tracing the step.
        self.temperature = None
        if getattr(self.loss, "schedulable_temperature", False):
            if not isinstance(self.loss.temperature, keras.Variable):
                self.loss.temperature = keras.Variable(
                    float(self.loss.temperature), trainable=False, name=f"{term.name}_temperature", dtype="float32"
                )
            self.temperature = self.loss.temperature

    def student_feature(self, student_features, training):
        """The student side of the term: its feature(s), through the connector."""
        student = gather(student_features, self.student_layer)
        if self.connector is not None:
            student = self.connector(student, training=training)
        return student

    def compute(self, teacher, student, labels=None, index=None, sample_weight=None):
        """The term's value (float32 scalar) on one batch (see `term_value`)."""
        return term_value(
            self.loss, teacher, student, labels=labels, index=index, sample_weight=sample_weight, name=self.name
        )

    def get_config(self):
        # The Distiller rebuilds its bound terms from `terms`; alone, a bound
        # term round-trips through its Term (shapes are checked on first use).
        return {"term": keras.saving.serialize_keras_object(self.spec)}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["term"]))


def term_value(loss, teacher, student, labels=None, index=None, sample_weight=None, name=None):
    """The value (float32 scalar) of one term's `loss` on one batch: the
    step of `keras_kd.Distiller` and of `keras_kd.legacy.Distiller` alike.

    `labels` go to losses with `requires_labels`, `index` (each example's
    position in the training set, or None in evaluation) to losses with
    `requires_index`; `sample_weight` only to per-sample losses (a
    relational loss, `per_sample = False`, relates the examples of the
    batch to each other and takes none). `name` names the term in errors.
    """
    if getattr(loss, "requires_labels", False):
        if labels is None:
            raise ValueError(
                f"Term '{name or loss.name}' ({type(loss).__name__}) needs the labels, but the data has none. "
                "Feed (x, y) batches."
            )
        teacher = (teacher, labels)
    if getattr(loss, "requires_index", False) and index is not None:
        teacher = (teacher, index)
    per_sample = getattr(loss, "per_sample", True)
    value = loss(teacher, student, sample_weight=sample_weight if per_sample else None)
    return ops.cast(value, "float32")


def _own_copy(loss):
    """A shallow copy of the caller's loss: state the Distiller creates (a
    temperature variable, a loss layer built here) lands on the copy, while
    state the caller built before (a pre-trained paraphraser, a variable
    temperature) stays shared by reference. (Not `copy.copy`: Keras objects
    copy through their config, which would drop that state.)"""
    duplicate = object.__new__(type(loss))
    duplicate.__dict__.update(loss.__dict__)
    return duplicate


def _describe(layer):
    return "output" if layer is None else f"layer {layer!r}"
