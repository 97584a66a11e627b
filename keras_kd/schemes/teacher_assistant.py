"""Mirzadeh, Farajtabar, Li, Levine, Matsukawa & Ghasemzadeh, "Improved
Knowledge Distillation via Teacher Assistant", AAAI 2020 (TAKD); and Son,
Na, Choi & Hwang, "Densely Guided Knowledge Distillation using Multiple
Teacher Assistants", ICCV 2021 (DGKD).

When the student is much smaller than the teacher, plain KD can leave it
worse than training it alone (the capacity gap; Cho & Hariharan, "On the
Efficacy of Knowledge Distillation", ICCV 2019). TAKD distils the teacher
into an intermediate-size teacher assistant first, then the assistant into
the student; DGKD lets every larger model of the chain teach each smaller
one, dropping teachers at random per mini-batch. `TeacherAssistant` runs
either chain with one `keras_kd.Distiller` per stage. The early-stopping
remedies of Cho & Hariharan are callbacks: `keras_kd.callbacks.
TeacherCheckpoints` (an early checkpoint of the teacher) and
`keras_kd.callbacks.WeightScheduler.early_stop` (the KD term switched off
after a fraction of the student's training).
"""

import keras
from keras import ops

from keras_kd import recipes
from keras_kd.distiller import Distiller
from keras_kd.term import Term
from keras_kd.validation import is_int, validate_positive

# The paper's settings, for reference and for the docstrings.
TAKD_TEMPERATURES = (1, 2, 5, 10, 15, 20)  # search_space.json of the TAKD code: T per stage
TAKD_LAMBDA_RANGE = (0.05, 1.0)  # and lambda (the KD share), searched per stage in steps of 0.05
DGKD_DROP_COUNT = 1  # DGKD: "for each mini-batch, a teacher or a teacher assistant is randomly dropped"


@keras.saving.register_keras_serializable(package="keras_kd")
class StochasticTeachersDistiller(Distiller):
    """A `Distiller` with several teachers whose terms are dropped at random,
    one draw per training step (DGKD's stochastic teaching, Son et al.,
    ICCV 2021): the total loss of a step is

        student_loss_weight * CE + sum_i keep_i * weight_i * term_i,

    where `keep_i` is 0 or 1 for the teacher that term `i` reads
    (`Term(teacher=key)`), the same for the whole batch. With `drop_rate=p`
    every teacher is dropped independently with probability `p`; with
    `drop_count=k`, exactly `min(k, n - 1)` of the `n` teachers (chosen
    uniformly) are dropped, so one always teaches (DGKD drops one teacher per
    mini-batch, `k = 1`). Kept terms are not rescaled (DGKD sums the kept KD
    terms as they are). Terms without `teacher=` (the ensemble) are never
    dropped; evaluation drops nothing. The draw runs inside the compiled
    step (`compute_loss`) from a `keras.random.SeedGenerator`: no
    re-tracing, no Python loop over the batch. The logged term values are
    the undropped values; `loss` is the total actually minimised.

    Args:
        teacher, student, terms, **kwargs: as `keras_kd.Distiller`
            (`teacher` a list or dict of models).
        drop_rate: probability in [0, 1] that a teacher's terms are dropped
            from a step (1 drops them all, leaving the supervised loss).
        drop_count: instead of `drop_rate`, the number of teachers dropped
            per step (an int >= 1; at most `n - 1` are).
        seed: int seed of the draws.
    """

    def __init__(self, teacher, student, terms=(), drop_rate=0.0, drop_count=None, seed=None, **kwargs):
        super().__init__(teacher, student, terms, **kwargs)
        self.drop_rate, self.drop_count = _validate_drop(drop_rate, drop_count)
        if seed is not None and not is_int(seed):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self._teacher_keys = list(self.teachers)
        self._seed_generator = keras.random.SeedGenerator(seed)

    @property
    def drops(self):
        """Whether any term can be dropped."""
        return self.drop_count is not None or self.drop_rate > 0

    def keep_mask(self):
        """One draw: a float32 vector of 0/1 per teacher (in `teachers` order)."""
        count = len(self._teacher_keys)
        draws = keras.random.uniform((count,), seed=self._seed_generator)
        if self.drop_count is not None:
            # Rank of each draw; the `dropped` smallest are dropped: a uniform choice of that many teachers.
            dropped = min(self.drop_count, count - 1)
            return ops.cast(ops.argsort(ops.argsort(draws)) >= dropped, "float32")
        return ops.cast(draws >= self.drop_rate, "float32")  # draws lie in [0, 1): rate 0 keeps, rate 1 drops all

    def weighted_terms(self, values, training):
        """The Distiller's weighted sum, where in training each term whose
        teacher this step's `keep_mask` drops counts 0."""
        if not training or not self.drops:
            return super().weighted_terms(values, training)
        keep = self.keep_mask()
        total = ops.zeros((), "float32")
        for term, value in values:
            weighted = term.weighted(value)
            if term.teacher is not None:
                weighted = keep[self._teacher_keys.index(term.teacher)] * weighted
            total = total + weighted
        return total

    def get_config(self):
        return {**super().get_config(), "drop_rate": self.drop_rate, "drop_count": self.drop_count, "seed": self.seed}


def _validate_drop(drop_rate, drop_count):
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, (int, float)) or not 0.0 <= drop_rate <= 1.0:
        raise ValueError(f"`drop_rate` must be a probability in [0, 1]. Received: drop_rate={drop_rate!r}")
    if drop_count is not None and (not is_int(drop_count) or drop_count < 1):
        raise ValueError(f"`drop_count` must be None or an int >= 1. Received: drop_count={drop_count!r}")
    if drop_count is not None and drop_rate:
        raise ValueError(
            f"Give `drop_rate` or `drop_count`, not both. Received: drop_rate={drop_rate!r}, drop_count={drop_count!r}"
        )
    return float(drop_rate), None if drop_count is None else int(drop_count)


class TeacherAssistant:
    """Distillation through a chain of teacher assistants (TAKD, Mirzadeh et
    al., AAAI 2020) or densely guided by every larger model (DGKD, Son et
    al., ICCV 2021).

    The chain is `[teacher, *assistants, student]`, largest first. Stage
    `s = 1 .. len(assistants) + 1` trains model `chain[s]` with a
    `keras_kd.Distiller`, the same terms, loss, optimizer settings and
    epochs in every stage (TAKD trains every model of the chain with the same
    recipe, 160 epochs on CIFAR in the authors' code):

    - `dense=False` (TAKD): its one teacher is `chain[s - 1]`, the model
      trained in the stage before (the first stage reads the teacher);
    - `dense=True` (DGKD): its teachers are all of `chain[:s]`, the teacher
      and every assistant already trained; each teacher gets its own copy
      of the terms (named `<term>_<key>`, keys "teacher", "assistant1",
      ...), summed as DGKD's `(1 - lambda) CE + lambda T^2 sum_i KL_i`
      (with the `kd` recipe: `0.1 CE + 0.9 sum_i KD_i`, `T^2` inside
      `KDLoss`). With `drop_rate` or `drop_count`, a stage with two or more
      teachers drops teachers' terms at random per mini-batch
      (`StochasticTeachersDistiller`); DGKD drops one teacher per
      mini-batch (`drop_count=1`, `DGKD_DROP_COUNT`).

    A model trained in a stage is frozen when it teaches the next one (the
    Distiller leaves its variables out of training) and runs in inference
    mode there. The teacher
    must already be trained; the assistants and the student are trained
    here, from their current weights.

    Constants: TAKD's code searched the temperature in {1, 2, 5, 10, 15, 20}
    and the KD share lambda in [0.05, 1] per stage (`TAKD_TEMPERATURES`,
    `TAKD_LAMBDA_RANGE`); there is no single published value, so the
    default terms are the `kd` recipe (T = 4, 0.9 KD + 0.1 CE, the CRD
    scripts').

    Args:
        teacher: the trained teacher, a built `keras.Model` with logits.
        assistants: one built `keras.Model` or a non-empty list of them,
            each between the teacher and the student in size, largest
            first.
        student: the built student `keras.Model`.
        terms: a method name of `keras_kd.recipes` (layers from the zoo's
            naming convention for each pair; default "kd"); a list of
            `keras_kd.Term` (copied for every stage and teacher, through
            their config: fresh loss state each time); or a callable
            `terms(teacher_model, model) -> list of Term`.
        student_loss_weight: weight of the supervised loss in every stage;
            None: the recipe's for a method name, else 1.
        dense: DGKD's dense guidance (see above).
        drop_rate, drop_count: DGKD's stochastic teaching (only with
            `dense=True`): per mini-batch, each teacher of a stage dropped
            with probability `drop_rate`, or exactly `drop_count` of them
            (at most all but one).
        seed: int seed of the drops.

    Example:

    ```python
    chain = TeacherAssistant(teacher, [assistant], student)  # TAKD, kd recipe
    history = chain.fit(train_ds, epochs=60, optimizer=lambda stage: keras.optimizers.Adam(3e-3),
                        metrics=["accuracy"], validation_data=test_ds)
    [record["model"] for record in history]  # ["assistant1", "student"]
    dgkd = TeacherAssistant(teacher, [big_ta, small_ta], student, dense=True, drop_count=1)
    ```
    """

    def __init__(
        self,
        teacher,
        assistants,
        student,
        terms="kd",
        student_loss_weight=None,
        dense=False,
        drop_rate=0.0,
        drop_count=None,
        seed=None,
    ):
        if isinstance(assistants, keras.Model):
            assistants = [assistants]
        if not isinstance(assistants, (list, tuple)) or not assistants:
            raise ValueError(
                f"`assistants` must be a keras.Model or a non-empty list of them. Received: assistants={assistants!r}"
            )
        roles = [("teacher", teacher), *((f"assistant{i}", a) for i, a in enumerate(assistants, 1))]
        roles.append(("student", student))
        for role, model in roles:
            if not isinstance(model, keras.Model):
                raise ValueError(f"The {role} must be a keras.Model. Received: {role}={model!r}")
            if not model.built:
                raise ValueError(f"The {role} '{model.name}' is not built; create it with keras.Input.")
        if len({id(model) for _, model in roles}) != len(roles):
            raise ValueError(f"The teacher, assistants and student must be distinct models. Received: {roles!r}")
        self.keys = [role for role, _ in roles]  # "teacher", "assistant1", ..., "student"
        self.chain = [model for _, model in roles]
        self.teacher, self.assistants, self.student = teacher, list(assistants), student
        if isinstance(terms, str):
            recipes.get_recipe(terms)  # a ValueError lists the methods
        elif not callable(terms):
            if not isinstance(terms, (list, tuple)) or not all(isinstance(t, Term) for t in terms):
                raise ValueError(
                    "`terms` must be a recipe name, a list of keras_kd.Term or a callable (teacher, model) -> terms. "
                    f"Received: terms={terms!r}"
                )
            bound = [t.name for t in terms if t.teacher is not None]
            if bound:
                raise ValueError(f"The chain chooses each term's teacher; terms {bound} name one (teacher=...).")
        self.terms = terms
        if student_loss_weight is None:
            student_loss_weight = recipes.student_loss_weight(terms) if isinstance(terms, str) else 1.0
        self.student_loss_weight = validate_positive("student_loss_weight", student_loss_weight, allow_zero=True)
        if not isinstance(dense, bool):
            raise ValueError(f"`dense` must be a bool. Received: dense={dense!r}")
        self.dense = dense
        self.drop_rate, self.drop_count = _validate_drop(drop_rate, drop_count)
        if not dense and (self.drop_rate or self.drop_count is not None):
            raise ValueError(
                "Dropping teachers is DGKD's stochastic teaching of a dense chain: pass dense=True, or "
                f"drop_rate=0 and drop_count=None. Received: drop_rate={drop_rate!r}, drop_count={drop_count!r}"
            )
        if seed is not None and not is_int(seed):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.distillers = []

    @property
    def num_stages(self):
        return len(self.chain) - 1

    def teachers(self, stage):
        """{key: model} teaching stage `stage` (1-based)."""
        if not is_int(stage) or not 1 <= stage <= self.num_stages:
            raise ValueError(f"`stage` must be an int in [1, {self.num_stages}]. Received: stage={stage!r}")
        indices = range(stage) if self.dense else [stage - 1]
        return {self.keys[i]: self.chain[i] for i in indices}

    def _terms_for(self, teacher, model):
        if isinstance(self.terms, str):
            teacher_layers, student_layers = recipes.layers_for(self.terms, teacher, model)
            return recipes.get(self.terms, teacher_layers, student_layers, teacher=teacher)
        if callable(self.terms):
            terms = list(self.terms(teacher, model))
            if not all(isinstance(t, Term) for t in terms):
                raise ValueError(f"`terms({teacher.name}, {model.name})` must return keras_kd.Term objects: {terms!r}")
            return terms
        return [keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(t)) for t in self.terms]

    def distiller(self, stage):
        """A new `Distiller` for stage `stage` (1-based): `chain[stage]` learns
        from `teachers(stage)`."""
        teachers = self.teachers(stage)
        model = self.chain[stage]
        if len(teachers) == 1:
            (teacher,) = teachers.values()
            return Distiller(teacher, model, self._terms_for(teacher, model), self.student_loss_weight)
        terms = []
        for key, teacher in teachers.items():
            for term in self._terms_for(teacher, model):
                config = term.get_config()
                config.update(teacher=key, name=f"{term.name}_{key}")
                terms.append(Term.from_config(config))
        options = dict(student_loss_weight=self.student_loss_weight, name=f"stage{stage}_distiller")
        if self.drop_rate or self.drop_count is not None:
            seed = None if self.seed is None else self.seed + stage
            return StochasticTeachersDistiller(
                teachers, model, terms, drop_rate=self.drop_rate, drop_count=self.drop_count, seed=seed, **options
            )
        return Distiller(teachers, model, terms, **options)

    def fit(self, x=None, y=None, epochs=1, optimizer="adam", loss=None, metrics=None, callbacks=None, **fit_kwargs):
        """Trains every stage in turn, each `epochs` epochs on the same data.

        Args:
            x, y, **fit_kwargs: as `keras.Model.fit` (e.g. a `tf.data`
                dataset, `validation_data`, `batch_size`, `verbose`).
            optimizer: a callable `stage -> optimizer` (a fresh one per
                stage, e.g. with its own learning-rate schedule), an
                optimizer name, or an optimizer instance (copied from its
                config for each stage).
            loss: the supervised loss; default sparse categorical
                cross-entropy on logits.
            metrics: as `compile` (names are safest: shared metric objects
                carry state between stages).
            callbacks: a list used in every stage, or a callable
                `stage -> list`.

        Returns a list with one record per stage: `{"stage", "model",
        "teachers", "history"}` (`history` as `History.history`).
        """
        loss = loss if loss is not None else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.distillers, records = [], []
        for stage in range(1, self.num_stages + 1):
            distiller = self.distiller(stage)
            self.distillers.append(distiller)
            distiller.compile(optimizer=_stage_optimizer(optimizer, stage), loss=loss, metrics=metrics)
            stage_callbacks = callbacks(stage) if callable(callbacks) else callbacks
            history = distiller.fit(x, y, epochs=epochs, callbacks=stage_callbacks, **fit_kwargs)
            records.append(
                {
                    "stage": stage,
                    "model": self.keys[stage],
                    "teachers": list(self.teachers(stage)),
                    "history": {k: [float(v) for v in values] for k, values in history.history.items()},
                }
            )
        return records


def _stage_optimizer(optimizer, stage):
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    if callable(optimizer):
        return optimizer(stage)
    return optimizer
