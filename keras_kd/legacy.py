"""Distillation into tf_keras (Keras 2) students, the models that
tensorflow-model-optimization 0.8 can wrap for quantization- and
pruning-aware training.

tensorflow-model-optimization only wraps `tf_keras` models, and only when
`tf.keras` is `tf_keras`: set `TF_USE_LEGACY_KERAS=1` before TensorFlow is
first imported. `keras` (Keras 3) keeps working beside it, so the teacher
and the losses stay the Keras 3 ones:

    os.environ["TF_USE_LEGACY_KERAS"] = "1"      # before importing tensorflow
    from keras_kd import legacy, optimization
    student_2 = legacy.to_tf_keras(student)       # same layers, names and weights
    qat_student = optimization.quantization_aware(student_2)
    distiller = legacy.Distiller(teacher, qat_student, terms=[Term(KDLoss(4.0), weight=0.9)],
                                 student_loss_weight=0.1)
    distiller.compile(tf_keras.optimizers.Adam(1e-4),
                      tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    distiller.fit(train_ds, epochs=2)

`Distiller` here is the same step as `keras_kd.Distiller` written as a
`tf_keras.Model`: the teacher runs once in inference mode outside the
gradient, the student once in training mode, and the loss is
`student_loss_weight * compiled_loss + sum(weight_i * term_i)`, each term
through `keras_kd.bound_term.term_value` as in the Keras 3 step (labels,
`sample_weight` for per-sample losses only, float32), scaled per replica
under `tf.distribute`. TensorFlow only: on another Keras backend the
Distiller and `to_tf_keras` raise `keras_kd.backend.require_tensorflow`'s
error. It supports the losses without weights of their own (every method
except VID, factor transfer and CRD) and terms without connectors; features
are found by layer name, also under the `quant_` / `prune_low_magnitude_`
names that tensorflow-model-optimization gives its wrappers.
"""

import inspect

import keras
import tensorflow as tf
from keras.src import tree

from keras_kd import backend, extras
from keras_kd.backend import regularization_loss, track_batch_value
from keras_kd.bound_term import term_value
from keras_kd.distiller import _as_list, _unique_names
from keras_kd.features import OUTPUT
from keras_kd.features import FeatureExtractor as _Extractor
from keras_kd.features import feature_keys as _keys
from keras_kd.features import gather as _gather
from keras_kd.sample_index import batch_size_of
from keras_kd.term import Term
from keras_kd.validation import validate_positive

tf_keras = extras.require("tf_keras", "keras_kd.legacy (tf_keras students, for tensorflow-model-optimization)")

WRAPPER_PREFIXES = ("", "quant_", "prune_low_magnitude_")
BASE_LAYER_ARGUMENTS = {"name", "trainable", "dtype", "dynamic", "activity_regularizer", "autocast"}


def _convert_setting(value):
    """A Keras 3 serialized initializer/regularizer/constraint, as tf_keras reads it."""
    if isinstance(value, dict) and "class_name" in value:
        return {"class_name": value["class_name"], "config": value.get("config", {})}
    return value


def _convert_layer(layer):
    cls = getattr(tf_keras.layers, type(layer).__name__, None)
    if cls is None or type(layer).__module__.startswith("keras_kd"):
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) has no tf_keras counterpart, so the model "
            "cannot be rebuilt for tensorflow-model-optimization. Build the student from standard layers."
        )
    config = dict(layer.get_config())
    config["dtype"] = layer.dtype_policy.name
    accepted = set(BASE_LAYER_ARGUMENTS)
    for base in cls.__mro__:  # subclasses pass options on to their bases through **kwargs
        if "__init__" in vars(base):
            accepted |= set(inspect.signature(base.__init__).parameters)
    for key in list(config):
        if key not in accepted:
            if config[key] in (None, False, 0):
                config.pop(key)  # a Keras 3 option left at its default (e.g. quantization_config)
                continue
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) sets {key}={config[key]!r}, a Keras 3 option "
                "that tf_keras does not have."
            )
        if key.endswith("_initializer"):
            config.pop(key)  # the weights are copied over, so initializers do not matter
        elif key.endswith(("_regularizer", "_constraint")):
            config[key] = _convert_setting(config[key])
    try:
        return cls.from_config(config)
    except Exception as error:
        raise ValueError(
            f"tf_keras cannot rebuild layer {layer.name!r} ({type(layer).__name__}) from its Keras 3 config: {error}"
        ) from error


def to_tf_keras(model):
    """Rebuilds a Keras 3 functional model as a `tf_keras.Model` with the
    same layers, layer names, connections and weights.

    Raises a ValueError naming the first layer that has no tf_keras
    counterpart (custom layers) or whose configuration tf_keras rejects.
    """
    backend.require_tensorflow("keras_kd.legacy.to_tf_keras (tf_keras, for tensorflow-model-optimization)")
    if isinstance(model, tf_keras.Model):
        return model
    if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
        raise ValueError(
            f"to_tf_keras needs a functional or Sequential keras.Model with known inputs. Received: {model!r}"
        )
    tensors = {}
    inputs = []
    for tensor in model.inputs:
        converted = tf_keras.Input(shape=tensor.shape[1:], dtype=tensor.dtype, name=tensor.name)
        tensors[id(tensor)] = converted
        inputs.append(converted)
    layers = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            operation = node.operation
            if isinstance(operation, keras.layers.InputLayer):
                continue
            if id(operation) not in layers:
                layers[id(operation)] = (operation, _convert_layer(operation))
            layer = layers[id(operation)][1]

            def lookup(value):
                return tensors[id(value)] if isinstance(value, keras.KerasTensor) else value

            args = tree.map_structure(lookup, node.arguments.args)
            kwargs = tree.map_structure(lookup, node.arguments.kwargs)
            outputs = layer(*args, **kwargs)
            for original, converted in zip(tree.flatten(node.outputs), tree.flatten(outputs)):
                tensors[id(original)] = converted
    outputs = [tensors[id(tensor)] for tensor in model.outputs]
    rebuilt = tf_keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name=model.name)
    for original, converted in layers.values():
        converted.set_weights(original.get_weights())
    return rebuilt


def find_layer(model, name):
    """`model`'s layer `name`, or its tensorflow-model-optimization wrapper."""
    available = [layer.name for layer in model.layers]
    for prefix in WRAPPER_PREFIXES:
        if prefix + name in available:
            return model.get_layer(prefix + name)
    raise ValueError(f"The model '{model.name}' has no layer named '{name}'. Available layers: {available}")


class _Features:
    """Calls a tf_keras model once and returns {feature key: tensor}."""

    def __init__(self, model, keys):
        outputs = {}
        for key in keys:
            outputs[key] = model.outputs[0] if key == OUTPUT else find_layer(model, key).output
        self.graph = tf_keras.Model(model.inputs, outputs, name=f"{model.name}_features")
        self.shapes = {key: tuple(tensor.shape) for key, tensor in outputs.items()}

    def __call__(self, x, training):
        return self.graph(x, training=training)


class Distiller(tf_keras.Model):
    """`keras_kd.Distiller` for a tf_keras student (see the module docstring).

    Each term's value comes from `keras_kd.bound_term.term_value`, the
    function the Keras 3 Distiller uses: labels to losses that need them,
    `sample_weight` to per-sample losses only (relational losses such as
    similarity preserving or RKD take none). Under `tf.distribute` each
    replica's loss is scaled to its share of the global batch as Keras
    scales it (the compiled loss by tf_keras, the terms by the Keras 3
    losses, the regularization-only student loss here) and the logged
    values are scaled back, so they read as on one device.

    Args:
        teacher: a built Keras 3 or tf_keras model; it never trains here
            (its `trainable` flag is left as it is).
        student: a built functional tf_keras model, possibly wrapped by
            `keras_kd.optimization.quantization_aware` or `pruning_aware`.
        terms: `keras_kd.Term`s (or bare losses, which compare outputs) whose
            losses own no weights and that have no connector.
        student_loss_weight: weight of the loss given to `compile(loss=...)`.
    """

    def __init__(self, teacher, student, terms=(), student_loss_weight=1.0, name="distiller", **kwargs):
        backend.require_tensorflow("keras_kd.legacy.Distiller (tf_keras, for tensorflow-model-optimization)")
        super().__init__(name=name, **kwargs)
        if not isinstance(student, tf_keras.Model) or not student.inputs:
            raise ValueError(
                "`student` must be a functional tf_keras.Model (use keras_kd.legacy.to_tf_keras). "
                f"Received: {type(student).__name__}"
            )
        if not isinstance(teacher, (keras.Model, tf_keras.Model)) or not teacher.built:
            raise ValueError(f"`teacher` must be a built keras.Model or tf_keras.Model. Received: {teacher!r}")
        self.terms = _unique_names([t if isinstance(t, Term) else Term(t) for t in _as_list(terms)])
        for term in self.terms:
            if term.connector is not None:
                raise ValueError(f"Term '{term.name}' has a connector; tf_keras students take terms without one.")
            if hasattr(term.loss, "make_layer"):
                raise ValueError(
                    f"Term '{term.name}' uses {type(term.loss).__name__}, which owns Keras 3 weights; "
                    "with a tf_keras student use a loss without weights (KD, DKD, DIST, FitNets with equal shapes, "
                    "AT, NST, SP, RKD, PKT, ...)."
                )
        self.student = student
        teacher_keys = sorted({k for term in self.terms for k in _keys(term.teacher_layer)})
        student_keys = sorted({OUTPUT} | {k for term in self.terms for k in _keys(term.student_layer)})
        # Outside tf_keras' tracking: a Keras 3 teacher is not a tf_keras layer, and it never trains.
        if isinstance(teacher, keras.Model):
            extractor = _Extractor(teacher, teacher_keys, "teacher")
        else:
            extractor = _Features(teacher, teacher_keys)
        object.__setattr__(self, "_teacher", teacher)
        object.__setattr__(self, "_teacher_extractor", extractor)
        self._student_extractor = _Features(student, student_keys)
        self._check_terms()
        validate_positive("student_loss_weight", student_loss_weight, allow_zero=True)
        self.student_loss_weight = tf.Variable(float(student_loss_weight), trainable=False, name="student_loss_weight")
        self.term_weights = {
            term.name: tf.Variable(float(term.weight), trainable=False, name=f"{term.name}_weight")
            for term in self.terms
        }
        self.total_tracker = tf_keras.metrics.Mean(name="loss")
        self.student_loss_tracker = tf_keras.metrics.Mean(name="student_loss")
        self.term_trackers = {term.name: tf_keras.metrics.Mean(name=term.name) for term in self.terms}

    @property
    def teacher(self):
        return self._teacher

    def _check_terms(self):
        teacher_shapes, student_shapes = self._teacher_extractor.shapes, self._student_extractor.shapes
        for term in self.terms:
            teacher_shape = _gather(teacher_shapes, term.teacher_layer)
            student_shape = _gather(student_shapes, term.student_layer)
            if hasattr(term.loss, "build") and teacher_shape is not None:
                try:
                    term.loss.build(teacher_shape, student_shape)
                except ValueError as error:
                    raise ValueError(
                        f"Term '{term.name}' ({type(term.loss).__name__}) cannot compare teacher shape "
                        f"{teacher_shape} with student shape {student_shape}: {error}"
                    ) from None

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    @property
    def metrics(self):
        # "loss" is the weighted total, as in keras_kd.Distiller (not tf_keras' compiled-loss mean).
        metrics = [self.total_tracker, self.student_loss_tracker, *self.term_trackers.values()]
        if self.compiled_metrics is not None:
            metrics += self.compiled_metrics.metrics
        return metrics

    def _step_losses(self, x, y, sample_weight, training):
        teacher_features = tree.map_structure(tf.stop_gradient, self._teacher_extractor(x, training=False))
        student_features = self._student_extractor(x, training=training)
        y_pred = student_features[OUTPUT]
        if y is not None and self.compiled_loss is not None:
            # tf_keras scales the compiled loss and the regularization per replica.
            student_loss = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.student.losses)
        else:
            student_loss = regularization_loss(self.student)  # scaled per replica as tf_keras scales it with labels
        values = {"student_loss": tf.cast(student_loss, "float32")}
        total = self.student_loss_weight * values["student_loss"]
        for term in self.terms:
            teacher = _gather(teacher_features, term.teacher_layer)
            student = _gather(student_features, term.student_layer)
            values[term.name] = term_value(
                term.loss, teacher, student, labels=y, sample_weight=sample_weight, name=term.name
            )
            total += self.term_weights[term.name] * values[term.name]
        return y_pred, values, total

    def _update(self, x, y, y_pred, sample_weight, values, total):
        # Each replica's values are its share of the global loss: the trackers
        # log them scaled back, weighted by the replica's examples.
        batch_size = tf.cast(batch_size_of(x), "float32")
        track_batch_value(self.total_tracker, total, batch_size)
        track_batch_value(self.student_loss_tracker, values["student_loss"], batch_size)
        for term in self.terms:
            track_batch_value(self.term_trackers[term.name], values[term.name], batch_size)
        if y is not None:
            self.compiled_metrics.update_state(y, y_pred, sample_weight)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred, values, total = self._step_losses(x, y, sample_weight, training=True)
        variables = self.student.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return self._update(x, y, y_pred, sample_weight, values, total)

    def test_step(self, data):
        x, y, sample_weight = tf_keras.utils.unpack_x_y_sample_weight(data)
        y_pred, values, total = self._step_losses(x, y, sample_weight, training=False)
        return self._update(x, y, y_pred, sample_weight, values, total)
