"""`Distiller`: a `keras.Model` whose `fit` distills a frozen teacher into a
student, with any combination of `keras_kd.losses` as terms."""

import copy
import warnings

import keras
import tensorflow as tf

from keras_kd.callbacks import TeacherCache, TerminateOnNonFiniteTerm, WeightScheduler
from keras_kd.connectors import make_connector
from keras_kd.losses.base import num_replicas, validate_positive
from keras_kd.sample_index import split_index
from keras_kd.term import Term

OUTPUT = "__output__"  # feature key of a model's own output


class _Extractor:
    """Calls a model once and returns {feature key: tensor}.

    Kept outside Keras' attribute tracking on purpose: it shares its layers
    with the teacher or student, which the Distiller already tracks.
    """

    def __init__(self, model, keys, role):
        self.model = model
        self.role = role
        self.keys = tuple(keys)
        layer_names = [key for key in self.keys if key != OUTPUT]
        if not layer_names:
            self.graph = None
            return
        if not getattr(model, "inputs", None):
            raise ValueError(
                f"The {role} '{model.name}' is not a functional or Sequential "
                f"model with known inputs, so the outputs of its layers "
                f"{layer_names} cannot be read in the same forward pass. Build "
                "it with keras.Input, or distill its outputs only."
            )
        available = [layer.name for layer in model.layers]
        outputs = {}
        for key in self.keys:
            if key == OUTPUT:
                outputs[key] = _model_output(model)
            elif key not in available:
                raise ValueError(
                    f"The {role} '{model.name}' has no layer named '{key}'. "
                    f"Available layers: {available}"
                )
            else:
                outputs[key] = model.get_layer(key).output
        self.graph = keras.Model(model.inputs, outputs, name=f"{model.name}_features")

    @property
    def shapes(self):
        """{key: static shape}; None for the output of a subclassed model."""
        if self.graph is None:
            return {OUTPUT: _static_output_shape(self.model)}
        return {key: tuple(tensor.shape) for key, tensor in self.graph.output.items()}

    def __call__(self, x, training):
        if self.graph is None:
            return {OUTPUT: self.model(self.select_inputs(x), training=training)}
        return self.graph(self.select_inputs(x), training=training)

    def select_inputs(self, x):
        """From a dict batch, the model's own inputs by name: a teacher may
        read privileged features that the student never sees."""
        if not isinstance(x, dict) or not getattr(self.model, "inputs", None):
            return x
        names = [tensor.name for tensor in self.model.inputs]
        missing = [name for name in names if name not in x]
        if missing:
            raise ValueError(
                f"The {self.role} '{self.model.name}' takes inputs {names}, but the batch holds {sorted(x)} "
                f"(missing {missing})."
            )
        selected = [x[name] for name in names]
        return selected[0] if len(selected) == 1 else selected


def _model_output(model):
    outputs = model.outputs
    return outputs[0] if len(outputs) == 1 else outputs


def _static_output_shape(model):
    if getattr(model, "outputs", None):
        output = _model_output(model)
        return tuple(output.shape) if not isinstance(output, list) else None
    return None


def _keys(layer):
    if layer is None:
        return (OUTPUT,)
    return layer if isinstance(layer, tuple) else (layer,)


def _gather(features, layer):
    if isinstance(layer, tuple):
        return tuple(features[key] for key in layer)
    return features[OUTPUT if layer is None else layer]


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(keras.Model):
    """Distills a frozen `teacher` into `student` with one `fit()`.

    The step runs the teacher once (inference mode, outside the gradient,
    BatchNorm statistics untouched) and the student once (training mode,
    reading every feature the terms need from that one pass), then minimises

        student_loss_weight * compiled_loss(y, student(x))
            + sum_i weight_i * term_i.loss(teacher_feature_i,
                                           connector_i(student_feature_i))

    Every term is logged under its name next to `student_loss` and the total
    `loss`. `distiller.student` stays a plain Keras model; connectors and the
    weights of learnable losses live in the Distiller only.

    Args:
        teacher: a built `keras.Model`, frozen (`trainable = False`); or
            several, as a list (keyed "teacher1", "teacher2", ...) or a dict
            of models. Each runs once per step; a term reads one teacher
            (`Term(teacher=key)`) or, for output terms, the ensemble.
        student: a built `keras.Model` to train.
        terms: a list of `keras_kd.Term`, or of bare losses (which compare
            the models' outputs).
        student_loss_weight: weight of the loss given to `compile(loss=...)`.
        stop_on_nan: stop `fit` with an error naming the term whose value
            became NaN or Inf.
        teacher_weights: with several teachers, the weight of each in the
            ensemble (a list in teacher order or a dict); uniform if None.
            An output term without `teacher=` compares the student with
            `ensemble_logits`: logits whose softmax at the term's temperature
            is the weighted average of the teachers' softened outputs.
        augmentation: None, a Keras layer or a callable, applied once per
            training batch inside the step (`transfer_batch`), before the
            teacher and the student run, so both see the same view
            ("consistent teaching", Beyer et al. 2022; e.g.
            `keras_kd.augmentation.MixUp`). A layer is called
            `layer(x, training=True)`, a callable `fn(x)`; one with
            `mixes_labels = True` is called `(x, y)` and returns `(x, y)` when
            the labels are floating (one-hot or soft). Integer labels are
            left as they are when the supervised loss is off
            (`student_loss_weight=0` or no compiled loss) and refused
            otherwise. Never applied in `evaluate` or `predict`. A Keras
            layer is saved with the Distiller; a plain callable is not
            (saving warns, and the loaded Distiller has none: pass it again).

    Example:

    ```python
    distiller = keras_kd.Distiller(
        teacher, student,
        terms=[keras_kd.Term(keras_kd.losses.KDLoss(temperature=4), weight=0.9),
               keras_kd.Term(keras_kd.losses.AttentionTransferLoss(),
                             teacher_layer="block3", student_layer="block3",
                             weight=1000.0)],
        student_loss_weight=0.1)
    distiller.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    distiller.fit(train_ds, epochs=30)
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        terms=(),
        student_loss_weight=1.0,
        stop_on_nan=True,
        teacher_weights=None,
        augmentation=None,
        name="distiller",
        **kwargs,
    ):
        if isinstance(student, keras.Model):
            # compile() then wraps the optimizer for loss scaling as Keras
            # does for a mixed_float16 model.
            kwargs.setdefault("dtype", student.dtype_policy)
        super().__init__(name=name, **kwargs)
        self.teachers = _as_teachers(teacher)
        for role, model in [*((f"teacher {key!r}", t) for key, t in self.teachers.items()), ("student", student)]:
            if not isinstance(model, keras.Model):
                raise ValueError(f"`{role}` must be a keras.Model. Received: {role}={model!r}")
            if not model.built:
                raise ValueError(
                    f"The {role} '{model.name}' is not built. Create it with "
                    "keras.Input or call it on a batch before distilling."
                )
            if model is student and role != "student":
                raise ValueError("`teacher` and `student` must be different models.")
        self.teacher = teacher
        self.student = student
        for model in self.teachers.values():
            model.trainable = False
        self.teacher_weights = _teacher_weights(teacher_weights, self.teachers)
        self.terms = _unique_names([t if isinstance(t, Term) else Term(t) for t in _as_list(terms)])
        for term in self.terms:
            if term.teacher is not None and term.teacher not in self.teachers:
                raise ValueError(
                    f"Term '{term.name}' reads teacher {term.teacher!r}; the teachers are {list(self.teachers)}."
                )
            if term.teacher is None and len(self.teachers) > 1 and term.teacher_layer is not None:
                raise ValueError(
                    f"Term '{term.name}' compares teacher layer {term.teacher_layer!r}: with several teachers, "
                    f"name the teacher (Term(..., teacher=...), one of {list(self.teachers)})."
                )
        self.student_loss_weight = validate_positive(
            "student_loss_weight", student_loss_weight, allow_zero=True
        )
        self.stop_on_nan = bool(stop_on_nan)
        # Callbacks `fit` adds to every run, e.g. a recipe's warm-up (`recipes.distiller` sets them).
        self.schedule_callbacks = []
        if augmentation is not None and not callable(augmentation):
            raise ValueError(
                "`augmentation` must be a Keras layer or a callable taking the input batch. "
                f"Received: augmentation={augmentation!r}"
            )
        self.augmentation = augmentation

        teacher_keys = {key: set() for key in self.teachers}
        for term in self.terms:
            for key in [term.teacher] if term.teacher is not None else self.teachers:
                teacher_keys[key] |= set(_keys(term.teacher_layer))
        student_keys = {OUTPUT} | {k for term in self.terms for k in _keys(term.student_layer)}
        self._teacher_extractors = {
            key: _Extractor(model, sorted(teacher_keys[key]), "teacher") for key, model in self.teachers.items()
        }
        self._student_features = _Extractor(student, sorted(student_keys), "student")

        self.connectors = {}
        self.loss_layers = {}
        self._build_terms()
        # Variables, so schedules change weights without re-tracing the step.
        self.term_weights = {
            term.name: keras.Variable(term.weight, trainable=False, name=f"{term.name}_weight")
            for term in self.terms
        }
        self.student_loss_weight_variable = keras.Variable(
            self.student_loss_weight, trainable=False, name="student_loss_weight"
        )
        # Softmax temperatures too (KD, DKD, DIST): a TemperatureScheduler assigns them.
        self.temperatures = {}
        for term in self.terms:
            if not getattr(term.loss, "schedulable_temperature", False):
                continue
            if not isinstance(term.loss.temperature, keras.Variable):
                term.loss.temperature = keras.Variable(
                    float(term.loss.temperature), trainable=False, name=f"{term.name}_temperature"
                )
            self.temperatures[term.name] = term.loss.temperature
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.term_trackers = {term.name: keras.metrics.Mean(name=term.name) for term in self.terms}
        self.built = True

    def _teacher_features(self, x, training=False):
        """{teacher key: {feature key: tensor}}, each teacher run once."""
        return {key: extractor(x, training=training) for key, extractor in self._teacher_extractors.items()}

    def _teacher_feature(self, features, term):
        """What `term` compares on the teacher side: one teacher's feature,
        or, for an output term over several teachers, their ensemble."""
        if term.teacher is not None or len(self.teachers) == 1:
            return _gather(features[term.teacher or next(iter(self.teachers))], term.teacher_layer)
        temperature = getattr(term.loss, "temperature", 1.0)
        return ensemble_logits(
            [features[key][OUTPUT] for key in self.teachers], list(self.teacher_weights.values()), temperature
        )

    def _build_terms(self):
        """Create connectors and loss state, and check every term's shapes."""
        teacher_shapes = {key: extractor.shapes for key, extractor in self._teacher_extractors.items()}
        student_shapes = self._student_features.shapes
        for term in self.terms:
            teacher_shape = _gather(teacher_shapes[term.teacher or next(iter(self.teachers))], term.teacher_layer)
            student_shape = _gather(student_shapes, term.student_layer)
            if term.connector is not None:
                connector = make_connector(
                    term.connector, student_shape, teacher_shape, f"{term.name}_connector"
                )
                if connector is not None:
                    self.connectors[term.name] = connector
                    student_shape = tuple(connector.compute_output_shape(student_shape))
            if teacher_shape is None or student_shape is None:
                continue  # subclassed model: the loss checks shapes on first call
            if not hasattr(term.loss, "build"):
                continue
            try:
                term.loss.build(teacher_shape, student_shape)
            except ValueError as error:
                raise ValueError(
                    f"Term '{term.name}' ({type(term.loss).__name__}) cannot compare "
                    f"teacher {_describe(term.teacher_layer)} of shape {teacher_shape} "
                    f"with student {_describe(term.student_layer)} of shape "
                    f"{student_shape}: {error}"
                ) from None
            if getattr(term.loss, "layer", None) is not None:
                self.loss_layers[term.name] = term.loss.layer

    def teacher_features(self, x):
        """The teacher features the terms read, `{layer name: tensor}` (the
        output under "__output__"), computed in inference mode; with several
        teachers, `{teacher key: {layer name: tensor}}`. Useful for
        pre-training stages such as factor transfer's paraphraser."""
        features = self._teacher_features(x, training=False)
        return next(iter(features.values())) if len(features) == 1 else features

    def call(self, inputs, training=None):
        inputs, _ = split_index(inputs)
        return self.student(self._student_features.select_inputs(inputs), training=training)

    def fit(self, *args, callbacks=None, **kwargs):
        if self.compiled and not self.terms and self._compile_loss is None:
            raise ValueError(
                "Nothing to train: the Distiller has no terms and compile() got "
                "no supervised `loss`. Give terms, a loss, or both."
            )
        callbacks = list(callbacks or [])
        # A recipe's schedule (`recipes.distiller` sets it), unless a callback given here schedules that term.
        given = {callback.term for callback in callbacks if isinstance(callback, WeightScheduler)}
        callbacks += [c for c in self.schedule_callbacks if c.term not in given]
        for callback in callbacks:
            if isinstance(callback, TeacherCache):
                if self.augmentation is not None:
                    raise ValueError(
                        "TeacherCache replays the teacher's outputs of the first epoch, but `augmentation` "
                        "draws a new view of every batch at every step: drop one of them."
                    )
                x = args[0] if args else kwargs.get("x")
                callback.attach(self, x, kwargs)
        if self.stop_on_nan:
            names = ["student_loss", *self.term_trackers]
            callbacks.append(TerminateOnNonFiniteTerm(names))
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reads the shapes of the first distributed batch through
        # `strategy.reduce("MEAN", (x, y, ...))`. MultiWorkerMirroredStrategy
        # reduces single values only (MirroredStrategy maps over the nest), so
        # `fit` and `evaluate` failed before the first step ("Attempt to convert
        # a value (PerReplica...)"). Only shapes and dtypes are used: take the
        # first local replica's batch instead, with no collective.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: (
                        strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_losses(self, x, y, sample_weight, teacher_features, student_features, training, index=None):
        """Return ({name: value}, total) for one batch of features.

        `index` holds each example's position in the training set (see
        `keras_kd.datasets.with_index`), for losses with `requires_index`.
        """
        y_pred = student_features[OUTPUT]
        if y is not None and self._compile_loss is not None:
            student_loss = self.compute_loss(x, y, y_pred, sample_weight, training=training)
        else:
            # The student's regularization losses alone, scaled per replica as
            # Keras scales the compiled loss (replica gradients are summed).
            student_loss = tf.add_n([tf.constant(0.0)] + [tf.cast(v, "float32") for v in self.student.losses])
            student_loss = student_loss / num_replicas()
        values = {"student_loss": tf.cast(student_loss, "float32")}
        total = self.student_loss_weight_variable * values["student_loss"]
        for term in self.terms:
            teacher = self._teacher_feature(teacher_features, term)
            student = _gather(student_features, term.student_layer)
            if term.name in self.connectors:
                student = self.connectors[term.name](student, training=training)
            if getattr(term.loss, "requires_labels", False):
                if y is None:
                    raise ValueError(
                        f"Term '{term.name}' ({type(term.loss).__name__}) needs the "
                        "labels, but the data has none. Feed (x, y) batches."
                    )
                teacher = (teacher, y)
            if getattr(term.loss, "requires_index", False):
                teacher = self._with_index(term, teacher, index, training)
            per_sample = getattr(term.loss, "per_sample", True)
            value = term.loss(teacher, student, sample_weight=sample_weight if per_sample else None)
            values[term.name] = tf.cast(value, "float32")
            total = total + self.term_weights[term.name] * values[term.name]
        return values, total

    def _with_index(self, term, teacher, index, training):
        """`(teacher, index)` for a loss indexed by example; in evaluation
        the loss gets no index (it reads its memory, writes nothing)."""
        if not training:
            return teacher
        if index is None:
            raise ValueError(
                f"Term '{term.name}' ({type(term.loss).__name__}) keeps one memory row per training "
                "example, so each batch must carry the examples' positions in the training set: wrap "
                "the training data with keras_kd.datasets.with_index(...) before shuffling and batching."
            )
        if index.shape.rank != 1:
            raise ValueError(
                f"Term '{term.name}' needs one index per example (shape (batch,)); received shape "
                f"{index.shape}. Apply keras_kd.datasets.with_index before `batch`."
            )
        return teacher, index

    def _update_trackers(self, x, y, y_pred, sample_weight, values, total):
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        replicas = num_replicas()
        self._loss_tracker.update_state(total * replicas, sample_weight=batch_size)
        self.student_loss_tracker.update_state(values["student_loss"] * replicas, sample_weight=batch_size)
        for name, tracker in self.term_trackers.items():
            tracker.update_state(values[name] * replicas, sample_weight=batch_size)
        if y is None:
            return self.get_metrics_result()
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def transfer_batch(self, x, y, sample_weight):
        """The batch the step distills on: the training batch, through
        `augmentation` if one was given (once, so teacher and student see the
        same view). Schemes that add samples to the transfer set (e.g.
        boundary-supporting samples) override it. Runs inside the compiled
        step, in training only."""
        x, y = self.augment(x, y)
        return x, y, sample_weight

    def augment(self, x, y):
        """(x, y) through `augmentation` (see the class docstring)."""
        augmentation = self.augmentation
        if augmentation is None:
            return x, y
        kwargs = {"training": True} if isinstance(augmentation, keras.layers.Layer) else {}
        if getattr(augmentation, "mixes_labels", False) and y is not None:
            if all(tf.as_dtype(label.dtype).is_floating for label in tf.nest.flatten(y)):
                return augmentation(x, y, **kwargs)
            if self._compile_loss is not None and self.student_loss_weight > 0:
                raise ValueError(
                    f"The augmentation {augmentation!r} mixes examples, but integer (sparse) labels cannot be "
                    f"mixed while the supervised loss is on (student_loss_weight={self.student_loss_weight}). "
                    "Feed one-hot labels with CategoricalCrossentropy, or set student_loss_weight=0 (function "
                    "matching distils on the teacher alone)."
                )
        return augmentation(x, **kwargs), y

    def frozen_teacher_features(self, x):
        """The teacher features of a training batch: inference mode, no
        gradient; replayed from a `TeacherCache` after its first epoch."""

        def compute():
            return tf.nest.map_structure(tf.stop_gradient, self._teacher_features(x, training=False))

        cache = getattr(self, "_teacher_cache", None)
        return compute() if cache is None else cache.features(x, compute)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, index = split_index(x)
        x, y, sample_weight = self.transfer_batch(x, y, sample_weight)
        teacher_features = self.frozen_teacher_features(x)
        with tf.GradientTape() as tape:
            student_features = self._student_features(x, training=True)
            values, total = self.compute_losses(
                x, y, sample_weight, teacher_features, student_features, training=True, index=index
            )
            scaled_total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        return _multi_worker_logs(self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total))

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x, _ = split_index(x)
        teacher_features = self._teacher_features(x, training=False)
        student_features = self._student_features(x, training=False)
        values, total = self.compute_losses(
            x, y, sample_weight, teacher_features, student_features, training=False
        )
        return _multi_worker_logs(self._update_trackers(x, y, student_features[OUTPUT], sample_weight, values, total))

    def get_config(self):
        return {
            "name": self.name,
            "teacher": _serialize_teacher(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "terms": [keras.saving.serialize_keras_object(term) for term in self.terms],
            "student_loss_weight": self.student_loss_weight,
            "stop_on_nan": self.stop_on_nan,
            "teacher_weights": self.teacher_weights if len(self.teachers) > 1 else None,
            **self._augmentation_config(),
        }

    def _augmentation_config(self):
        """{"augmentation": config} for a Keras layer; {} when there is none,
        and, with a warning, for a plain callable (not serializable)."""
        if self.augmentation is None:
            return {}
        if not isinstance(self.augmentation, keras.layers.Layer):
            warnings.warn(
                f"The Distiller's augmentation {self.augmentation!r} is a plain callable and is not saved: the "
                "loaded Distiller has augmentation=None. Pass it again (Distiller(..., augmentation=...)), or use "
                "a serializable Keras layer (e.g. keras_kd.augmentation.MixUp).",
                stacklevel=3,
            )
            return {}
        return {"augmentation": keras.saving.serialize_keras_object(self.augmentation)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = _deserialize_teacher(config["teacher"])
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["terms"] = [keras.saving.deserialize_keras_object(t) for t in config["terms"]]
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        return cls(**config)


def _multi_worker_logs(logs):
    """The step's logs, each scalar as a vector of one under multi-worker
    `tf.distribute` (MultiWorkerMirroredStrategy across several workers).

    There Keras 3.15 averages the logs over the workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar
    ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388); a vector of one reduces to the same scalar.
    Elsewhere the logs pass unchanged.
    """
    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not (
        in_multi_worker_mode and in_multi_worker_mode()
    ):
        return logs
    return keras.tree.map_structure(lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)


def _as_teachers(teacher):
    """{key: model}: one model is {"teacher": model}; a list is keyed
    teacher1, teacher2, ...; a dict keeps its keys."""
    if isinstance(teacher, dict):
        if not teacher or not all(isinstance(key, str) and key for key in teacher):
            raise ValueError(f"A dict of teachers needs non-empty string keys. Received: {list(teacher)}")
        return dict(teacher)
    if isinstance(teacher, (list, tuple)):
        if not teacher:
            raise ValueError("`teacher` is an empty list; give at least one model.")
        return {f"teacher{i + 1}": model for i, model in enumerate(teacher)}
    return {"teacher": teacher}


def _teacher_weights(weights, teachers):
    """Ensemble weights per teacher, normalised to sum to one (uniform by default)."""
    if weights is None:
        return {key: 1.0 / len(teachers) for key in teachers}
    if isinstance(weights, dict):
        if set(weights) != set(teachers):
            raise ValueError(f"`teacher_weights` keys {sorted(weights)} must be the teachers {sorted(teachers)}.")
        weights = [weights[key] for key in teachers]
    weights = [float(w) for w in weights]
    if len(weights) != len(teachers) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(
            f"`teacher_weights` must give one non-negative weight per teacher ({len(teachers)}), not all zero. "
            f"Received: {weights}"
        )
    return {key: w / sum(weights) for key, w in zip(teachers, weights)}


def ensemble_logits(logits, weights, temperature=1.0):
    """Logits whose softmax at `temperature` is the weighted average of the
    teachers' softened outputs: `T * log(sum_i w_i softmax(z_i / T))`
    (Hinton et al. 2015 average the soft targets of an ensemble)."""
    temperature = tf.cast(temperature, "float32")
    log_probabilities = tf.stack(
        [tf.nn.log_softmax(tf.cast(z, "float32") / temperature, axis=-1) for z in logits], axis=0
    )
    log_weights = tf.reshape(tf.math.log(tf.constant(weights, "float32")), [-1] + [1] * (log_probabilities.shape.rank - 1))
    return temperature * tf.reduce_logsumexp(log_probabilities + log_weights, axis=0)


def _serialize_teacher(teacher):
    if isinstance(teacher, dict):
        return {"teachers": {key: keras.saving.serialize_keras_object(t) for key, t in teacher.items()}}
    if isinstance(teacher, (list, tuple)):
        return {"teacher_list": [keras.saving.serialize_keras_object(t) for t in teacher]}
    return keras.saving.serialize_keras_object(teacher)


def _deserialize_teacher(config):
    if "teachers" in config:
        return {key: keras.saving.deserialize_keras_object(t) for key, t in config["teachers"].items()}
    if "teacher_list" in config:
        return [keras.saving.deserialize_keras_object(t) for t in config["teacher_list"]]
    return keras.saving.deserialize_keras_object(config)


def _as_list(terms):
    if terms is None:
        return []
    if isinstance(terms, (Term, keras.losses.Loss)):
        return [terms]
    if not isinstance(terms, (list, tuple)):
        raise ValueError(f"`terms` must be a list of keras_kd.Term. Received: terms={terms!r}")
    return list(terms)


def _unique_names(terms):
    """Copies of `terms` with log names made unique (`kd_loss`, `kd_loss_1`).

    Shallow copies: the caller's Terms keep their names, while the losses
    (and any variables or pre-trained weights they hold) stay shared.
    """
    taken = {"loss", "student_loss"}
    unique = []
    for term in terms:
        name, count = term.name, 0
        while name in taken:
            count += 1
            name = f"{term.name}_{count}"
        taken.add(name)
        term = copy.copy(term)
        term.name = name
        unique.append(term)
    return unique


def _describe(layer):
    return "output" if layer is None else f"layer {layer!r}"
