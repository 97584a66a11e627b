"""`Distiller`: a `keras.Model` whose `fit` distills a frozen teacher into a
student, with any combination of `keras_kd.losses` as terms.

The step is Keras' own, on every backend: `call` runs each network once and
returns every feature the terms read, `compute_loss` combines the terms.
"""

import contextlib
import copy
import sys
import warnings

import keras
from keras import ops

from keras_kd import backend, label_checks
from keras_kd.backend import regularization_loss, track_batch_value
from keras_kd.bound_term import BoundTerm, LoggedTerm
from keras_kd.callbacks import TeacherCache, TerminateOnNonFiniteTerm, WeightScheduler
from keras_kd.features import OUTPUT, FeatureExtractor, ensemble_logits, feature_keys, gather
from keras_kd.primary_output import PrimaryOutput
from keras_kd.sample_index import batch_size_of, split_index
from keras_kd.term import Term
from keras_kd.validation import validate_positive

__all__ = ["Distiller", "ensemble_logits", "OUTPUT"]


@keras.saving.register_keras_serializable(package="keras_kd")
class Distiller(PrimaryOutput, keras.Model):
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

    The step is Keras' own on TensorFlow, JAX and PyTorch: `call` runs each
    network once and returns their features, `compute_loss` combines the
    terms (override either to extend the step). Each term becomes one
    `BoundTerm` (`distiller.bound_terms`): the Distiller's own copy of the
    loss with its temperature variable, the connector, the weight variable
    and the tracker. Nothing the caller passed is modified: the loss objects
    keep their settings, and the teachers keep their `trainable` flag (the
    Distiller excludes their variables from its trainable ones instead).

    Args:
        teacher: a built `keras.Model`, frozen inside the Distiller; or
            several, as a list (keyed "teacher1", "teacher2", ...) or a dict
            of models. Each runs once per step; a term reads one teacher
            (`Term(teacher=key)`) or, for output terms, the ensemble.
        student: a built `keras.Model` to train.
        terms: a list of `keras_kd.Term`, or of bare losses (which compare
            the models' outputs).
        student_loss_weight: weight of the loss given to `compile(loss=...)`.
        stop_on_nan: stop `fit` with an error naming the term whose value
            became NaN or Inf; the update of that batch is skipped, so the
            student keeps finite weights (see `compile`).
        teacher_weights: with several teachers, the weight of each in the
            ensemble (a list in teacher order or a dict); uniform if None.
            An output term without `teacher=` compares the student with
            `ensemble_logits`: logits whose softmax at the term's temperature
            is the weighted average of the teachers' softened outputs.
        augmentation: None, a Keras layer or a callable, applied once per
            training batch inside `call` (`augment`), before the teacher and
            the student run, so both see the same view ("consistent
            teaching", Beyer et al. 2022; e.g. `keras_kd.augmentation.MixUp`).
            A layer is called `layer(x, training=True)`, a callable `fn(x)`.
            One with `mixes_labels = True` provides `draw(batch_size)`,
            `mix_inputs(x, mixing)` and `mix_labels(y, mixing)`: `call` mixes
            the inputs, `compute_loss` mixes floating labels (one-hot or soft)
            with the same draw. Integer labels are left as they are when the
            supervised loss is off (`student_loss_weight=0` or no compiled
            loss) and refused otherwise. Never applied in `evaluate` or
            `predict`. A Keras
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
        _check_no_tf_strategy()
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
        self.augmentation = _validate_augmentation(augmentation)
        # Set by keras_kd.callbacks.TeacherCache for one `fit`: replays the teacher's features.
        self.teacher_cache = None

        teacher_keys = {key: set() for key in self.teachers}
        for term in self.terms:
            for key in [term.teacher] if term.teacher is not None else self.teachers:
                teacher_keys[key] |= set(feature_keys(term.teacher_layer))
        student_keys = {OUTPUT} | {k for term in self.terms for k in feature_keys(term.student_layer)}
        self._teacher_extractors = {
            key: FeatureExtractor(model, sorted(teacher_keys[key]), "teacher") for key, model in self.teachers.items()
        }
        self._student_extractor = FeatureExtractor(student, sorted(student_keys), "student")

        teacher_shapes = self.teacher_feature_shapes()
        student_shapes = self._student_extractor.shapes
        self.bound_terms = [
            BoundTerm(
                term,
                gather(teacher_shapes[term.teacher or next(iter(self.teachers))], term.teacher_layer),
                gather(student_shapes, term.student_layer),
            )
            for term in self.terms
        ]
        self.scheme_terms = []
        # A variable, so schedules change the weight without re-tracing the step.
        self.student_loss_weight_variable = keras.Variable(
            self.student_loss_weight, trainable=False, name="student_loss_weight"
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.built = True

    # ----------------------------------------------------------------- state

    @property
    def trainable_weights(self):
        # The teachers stay frozen inside the Distiller without changing
        # their own `trainable` flag (a later `teacher.fit` still trains).
        frozen = self._teacher_variable_ids()
        return [v for v in super().trainable_weights if id(v) not in frozen]

    @property
    def non_trainable_weights(self):
        frozen = self._teacher_variable_ids()
        return super().non_trainable_weights + [v for v in super().trainable_weights if id(v) in frozen]

    @property
    def trainable_variables(self):
        frozen = self._teacher_variable_ids()
        return [v for v in super().trainable_variables if id(v) not in frozen]

    @property
    def non_trainable_variables(self):
        frozen = self._teacher_variable_ids()
        return super().non_trainable_variables + [v for v in super().trainable_variables if id(v) in frozen]

    def _teacher_variable_ids(self):
        return {id(v) for model in self.teachers.values() for v in model.variables}

    def bound_term(self, name):
        """The `BoundTerm` (or scheme term) logged under `name`: its `weight`
        and `temperature` variables, `loss`, `connector` and `tracker`."""
        for term in [*self.bound_terms, *self.scheme_terms]:
            if term.term_name == name:
                return term
        raise KeyError(f"No term named {name!r}. The terms are {[t.term_name for t in self.all_terms]}.")

    @property
    def all_terms(self):
        """The bound terms, then the terms a scheme added (`add_term`)."""
        return [*self.bound_terms, *self.scheme_terms]

    def add_term(self, name, weight):
        """Register a term a scheme computes itself (e.g. adversarial
        distillation's generator loss): it gets a weight variable that
        `WeightScheduler` can ramp and a tracker logged under `name`.
        Returns the `LoggedTerm`; the scheme's `compute_loss` adds
        `term.weighted(value)` to the total and calls `term.track`."""
        taken = {"loss", "student_loss", *(t.term_name for t in self.all_terms)}
        if name in taken:
            raise ValueError(f"A term named {name!r} exists already; taken: {sorted(taken)}.")
        term = LoggedTerm(name, validate_positive("weight", weight, allow_zero=True))
        self.scheme_terms.append(term)
        return term

    @property
    def term_weights(self):
        """{term name: weight variable}, a view of the bound terms."""
        return {term.term_name: term.weight for term in self.all_terms}

    @property
    def temperatures(self):
        """{term name: temperature variable} of the terms with a softmax temperature."""
        return {term.name: term.temperature for term in self.bound_terms if term.temperature is not None}

    @property
    def term_trackers(self):
        return {term.term_name: term.tracker for term in self.all_terms}

    @property
    def connectors(self):
        """{term name: connector layer} of the terms with one."""
        return {term.name: term.connector for term in self.bound_terms if term.connector is not None}

    @property
    def loss_layers(self):
        """{term name: layer} of the losses with learnable state (VID, CRD, ...)."""
        return {term.name: term.loss_layer for term in self.bound_terms if term.loss_layer is not None}

    # -------------------------------------------------------------- features

    def teacher_feature_shapes(self):
        """{teacher key: {feature key: static shape}} of what the terms read."""
        return {key: extractor.shapes for key, extractor in self._teacher_extractors.items()}

    def read_teacher_features(self, keys, teacher=None):
        """Also read the teacher features `keys` (layer names, or
        `keras_kd.features.OUTPUT`) in every step, for a scheme that compares
        more than its terms do. `teacher`: the teacher's key (default: all)."""
        for key in [teacher] if teacher is not None else list(self._teacher_extractors):
            self._teacher_extractors[key] = self._teacher_extractors[key].with_keys(keys)

    def teacher_features(self, x):
        """The teacher features the terms read, `{layer name: tensor}` (the
        output under "__output__"), computed in inference mode; with several
        teachers, `{teacher key: {layer name: tensor}}`. Useful for
        pre-training stages such as factor transfer's paraphraser."""
        features = self.compute_teacher_features(x)
        return next(iter(features.values())) if len(features) == 1 else features

    def compute_teacher_features(self, x):
        """{teacher key: {feature key: tensor}}: each teacher run once on
        `x`, in inference mode, outside the gradient."""
        with backend.no_grad():
            features = {key: extractor(x, training=False) for key, extractor in self._teacher_extractors.items()}
        return keras.tree.map_structure(ops.stop_gradient, features)

    def frozen_teacher_features(self, x, training=False):
        """The teacher features of a batch; in training, replayed from the
        `teacher_cache` when a `TeacherCache` set one."""
        if training and self.teacher_cache is not None:
            return self.teacher_cache.features(x, lambda: self.compute_teacher_features(x))
        return self.compute_teacher_features(x)

    def student_features(self, x, training):
        """{feature key: tensor} of one student forward pass."""
        return self._student_extractor(x, training=training)

    def teacher_feature(self, features, term):
        """What `term` compares on the teacher side: one teacher's feature,
        or, for an output term over several teachers, their ensemble."""
        if term.teacher is not None or len(self.teachers) == 1:
            return gather(features[term.teacher or next(iter(self.teachers))], term.teacher_layer)
        temperature = getattr(term.loss, "temperature", 1.0)
        return ensemble_logits(
            [features[key][OUTPUT] for key in self.teachers], list(self.teacher_weights.values()), temperature
        )

    # ------------------------------------------------------------------ step

    def call(self, inputs, training=None):
        """One forward pass of every network on `inputs`.

        Returns `{"teacher": {teacher key: {feature key: tensor}},
        "student": {feature key: tensor}}` (the student's output under
        `keras_kd.features.OUTPUT`); in training also `"inputs"`, the batch
        after `augmentation`, and `"mixing"` when a label-mixing
        augmentation ran. `predict` returns the student's output alone; use
        `distiller.student` to serve.
        """
        x, index = split_index(inputs)
        if self._outputs_only:
            return self.student(self._student_extractor.select_inputs(x), training=training)
        outputs = {}
        if training:
            # Before any network runs: an eager step (PyTorch) would otherwise
            # update the student's BatchNorm statistics on a batch that fails.
            for term in self.bound_terms:
                if getattr(term.loss, "requires_index", False):
                    _check_index(term, index)
            x, mixing = self.augment(x)
            if mixing is not None:
                outputs["mixing"] = mixing
            outputs["inputs"] = x  # the batch both networks saw (schemes that add samples start from it)
        outputs["teacher"] = self.frozen_teacher_features(x, training=bool(training))
        outputs["student"] = self.student_features(x, training=bool(training))
        return outputs

    def augment(self, x):
        """`(x, mixing)`: the batch through `augmentation` (training only),
        and the mixing drawn by a label-mixing one (else None)."""
        augmentation = self.augmentation
        if augmentation is None:
            return x, None
        if getattr(augmentation, "mixes_labels", False):
            mixing = augmentation.draw(batch_size_of(x))
            return augmentation.mix_inputs(x, mixing), mixing
        kwargs = {"training": True} if isinstance(augmentation, keras.layers.Layer) else {}
        return augmentation(x, **kwargs), None

    def mixed_labels(self, y, outputs):
        """The labels of the augmented batch: floating labels mixed as the
        inputs were; integer labels unchanged (refused while the supervised
        loss reads them)."""
        mixing = outputs.get("mixing")
        if mixing is None or y is None:
            return y
        if all(keras.backend.is_float_dtype(label.dtype) for label in keras.tree.flatten(y)):
            return self.augmentation.mix_labels(y, mixing)
        if self._compile_loss is not None and self.student_loss_weight > 0:
            raise ValueError(
                f"The augmentation {self.augmentation!r} mixes examples, but integer (sparse) labels cannot be "
                f"mixed while the supervised loss is on (student_loss_weight={self.student_loss_weight}). "
                "Feed one-hot labels with CategoricalCrossentropy, or set student_loss_weight=0 (function "
                "matching distils on the teacher alone)."
            )
        return y

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total `student_loss_weight * student_loss + sum_i weight_i *
        term_i` of one batch, from the features `call` returned (`y_pred`).
        Updates the `student_loss` and per-term trackers."""
        if self._outputs_only:  # Keras building the compiled loss on the student's output spec
            return self.student_loss(x, y, y_pred, sample_weight, training)
        outputs = y_pred
        inputs, index = split_index(x)
        y = self.mixed_labels(y, outputs) if training else y
        batch_size = batch_size_of(inputs)
        student_loss = self.student_loss(x, y, outputs["student"][OUTPUT], sample_weight, training)
        track_batch_value(self.student_loss_tracker, student_loss, batch_size)
        values = []
        for term in self.bound_terms:
            value = self.term_value(term, outputs, y, sample_weight, index if training else None, training)
            term.track(value, batch_size)
            values.append((term, value))
        return self.student_loss_weight_variable * student_loss + self.weighted_terms(values, training)

    def weighted_terms(self, values, training):
        """`sum_i weight_i * value_i` over `[(bound term, value), ...]`;
        a scheme that weighs terms per step (e.g. dropping teachers at
        random) overrides it."""
        total = ops.zeros((), "float32")
        for term, value in values:
            total = total + term.weighted(value)
        return total

    def student_loss(self, x, y, y_pred, sample_weight, training):
        """The compiled supervised loss plus the student's regularization
        losses, as float32 (only the regularization without labels)."""
        if y is not None and self._compile_loss is not None:
            return ops.cast(super().compute_loss(x, y, y_pred, sample_weight, training=training), "float32")
        return regularization_loss(self)

    def term_value(self, term, outputs, y, sample_weight, index, training):
        """One bound term's value on the features of `call`."""
        teacher = self.teacher_feature(outputs["teacher"], term)
        student = term.student_feature(outputs["student"], training)
        if getattr(term.loss, "requires_index", False) and training:
            _check_index(term, index)
        return term.compute(teacher, student, labels=y, index=index, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics of the student's output (on the mixed labels
        when floating labels were mixed)."""
        if not self._outputs_only:  # else `call` gave the student's output alone
            if "mixing" in y_pred and y is not None:
                if all(keras.backend.is_float_dtype(label.dtype) for label in keras.tree.flatten(y)):
                    y = self.augmentation.mix_labels(y, y_pred["mixing"])
            y_pred = y_pred["student"][OUTPUT]
        if y is None:
            logs = self._logs_without_labels()
        else:
            logs = super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return _multi_worker_logs(logs)

    def _logs_without_labels(self):
        """The losses' logs of a batch without labels: the compiled metrics
        (accuracy, ...) compare predictions with labels, so they are left out
        instead of failing unbuilt (`get_metrics_result` warns once)."""
        compiled = getattr(self, "_compile_metrics", None)
        logs = {}
        for metric in self.metrics:
            if metric is compiled:
                continue
            result = metric.result()
            logs.update(result if isinstance(result, dict) else {metric.name: result})
        return logs

    def get_metrics_result(self):
        compiled = getattr(self, "_compile_metrics", None)
        if compiled is not None and not compiled.built:  # trained or evaluated without labels
            names = (self.get_compile_config() or {}).get("metrics") or []
            if names and not getattr(self, "_warned_no_labels", False):
                self._warned_no_labels = True
                warnings.warn(
                    f"The data has no labels, so the compiled metrics {names} are not computed; the logs hold "
                    "the loss and the distillation terms.",
                    stacklevel=2,
                )
            return keras.tree.map_structure(keras.ops.convert_to_numpy, self._logs_without_labels())
        return super().get_metrics_result()

    @property
    def returns_features(self):
        """False while `call` returns the student's output alone (`predict`,
        and Keras building the compiled loss and metrics on its spec): a
        `compute_loss` override then has no features to read."""
        return not self._outputs_only

    def compile(self, optimizer="rmsprop", *args, **kwargs):
        """`keras.Model.compile`. With `stop_on_nan` (the default) the
        optimizer is wrapped in a `keras.optimizers.LossScaleOptimizer` at
        scale 1, which skips the update of a batch whose gradients are not
        finite: the step that makes a term NaN leaves the student's weights
        as they were, and `fit` then stops naming that term."""
        super().compile(optimizer, *args, **kwargs)
        if self.stop_on_nan and self.optimizer is not None:
            if not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
                # Scale 1 and no growth: the loss and gradients stay as they are, only the skip is used.
                self.optimizer = keras.optimizers.LossScaleOptimizer(
                    self.optimizer, initial_scale=1.0, dynamic_growth_steps=2**30
                )

    def compile_from_config(self, config):
        # Loading a saved Distiller compiles it as Keras does for a model
        # whose `compile` is its own (Keras skips an overridden `compile`).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, callbacks=None, **kwargs):
        if self.compiled and not self.terms and self._compile_loss is None:
            raise ValueError(
                "Nothing to train: the Distiller has no terms and compile() got "
                "no supervised `loss`. Give terms, a loss, or both."
            )
        if not self.terms and self.student_loss_weight == 0:
            raise ValueError(
                "Nothing to train: the Distiller has no terms and student_loss_weight=0, so the total loss is 0 "
                "whatever the student does. Give terms, or a student_loss_weight > 0."
            )
        if self.compiled and self._compile_loss is not None:
            label_checks.check_labels(
                label_checks.first_labels(args, kwargs), label_checks.num_classes(self.student), self.loss
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
            callbacks.append(TerminateOnNonFiniteTerm(["student_loss", *self.term_trackers]))
        try:
            with self._sync_on_error():
                return super().fit(*args, callbacks=callbacks, **kwargs)
        finally:
            for callback in callbacks:  # Keras skips on_train_end when fit raises
                if isinstance(callback, TeacherCache):
                    callback.release()

    def evaluate(self, *args, **kwargs):
        with self._sync_on_error():
            return super().evaluate(*args, **kwargs)

    def _purge_model_variables(self, *args, **kwargs):
        # JAX: Keras detaches every variable's value while `fit` runs (to save
        # memory) and reattaches them at the end, so an error or Ctrl-C in
        # between left the student and the caller's teacher without values.
        # The Distiller keeps them attached (the student and its optimizer
        # state are small next to the activations); `_sync_on_error` writes
        # back what the interrupted run had trained.
        return None

    @contextlib.contextmanager
    def _sync_on_error(self):
        try:
            yield
        except BaseException:
            if backend.name() == "jax" and getattr(self, "_jax_state", None):
                self.jax_state_sync()
                self._jax_state = None
            raise

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reads the shapes of the first distributed batch through
        # `strategy.reduce("MEAN", (x, y, ...))`. MultiWorkerMirroredStrategy
        # reduces single values only (MirroredStrategy maps over the nest), so
        # `fit` and `evaluate` failed before the first step ("Attempt to convert
        # a value (PerReplica...)"). Only shapes and dtypes are used: take the
        # first local replica's batch instead, with no collective.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is not None and strategy is not None and backend.is_tensorflow():
            import tensorflow as tf

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

    # ---------------------------------------------------------------- saving

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


def _check_no_tf_strategy():
    """A `tf.distribute` scope does nothing for Keras on JAX or PyTorch:
    refuse it rather than train on one device without a word."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and not backend.is_tensorflow() and tf.distribute.has_strategy():
        backend.require_tensorflow("A tf.distribute strategy (on JAX use keras.distribution.DataParallel)")


def _check_index(term, index):
    """A loss indexed by example needs one index per example in training."""
    if index is None:
        raise ValueError(
            f"Term '{term.name}' ({type(term.loss).__name__}) keeps one memory row per training "
            "example, so each batch must carry the examples' positions in the training set: wrap "
            "the training data with keras_kd.datasets.with_index(...) before shuffling and batching."
        )
    if len(index.shape) != 1:
        raise ValueError(
            f"Term '{term.name}' needs one index per example (shape (batch,)). Received: shape "
            f"{tuple(index.shape)}. Apply keras_kd.datasets.with_index before `batch`."
        )


def _validate_augmentation(augmentation):
    if augmentation is None:
        return None
    if not callable(augmentation):
        raise ValueError(
            "`augmentation` must be a Keras layer or a callable taking the input batch. "
            f"Received: augmentation={augmentation!r}"
        )
    if getattr(augmentation, "mixes_labels", False):
        missing = [m for m in ("draw", "mix_inputs", "mix_labels") if not callable(getattr(augmentation, m, None))]
        if missing:
            raise ValueError(
                f"The augmentation {augmentation!r} has `mixes_labels = True`, so it must provide draw(batch_size), "
                f"mix_inputs(x, mixing) and mix_labels(y, mixing) (as keras_kd.augmentation.MixUp does); "
                f"it lacks {missing}."
            )
    return augmentation


def _multi_worker_logs(logs):
    """The step's logs, each scalar as a vector of one under multi-worker
    `tf.distribute` (MultiWorkerMirroredStrategy across several workers).

    There Keras 3.15 averages the logs over the workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar
    ("Invalid reduction dimension 0 for input with 0 dimensions",
    tensorflow/tensorflow#72388); a vector of one reduces to the same scalar.
    Elsewhere the logs pass unchanged.
    """
    if not backend.is_tensorflow():
        return logs
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or not (
        in_multi_worker_mode and in_multi_worker_mode()
    ):
        return logs
    return keras.tree.map_structure(lambda v: tf.reshape(v, [1]) if len(v.shape) == 0 else v, logs)


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
