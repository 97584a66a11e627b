"""Published settings of each method, one line to use.

    terms = keras_kd.recipes.get("at", teacher_layers=["stage1", "stage2", "stage3"],
                                 student_layers=["stage1", "stage2", "stage3"])
    distiller = keras_kd.Distiller(teacher, student, terms,
                                   student_loss_weight=keras_kd.recipes.student_loss_weight("at"))

or `keras_kd.recipes.distiller("at", teacher, student)`, which picks the
layers itself for models that follow the `keras_kd.models` layer-name
convention (`stage1..N`, `stage{i}_preact`, `embedding`), at the points
RepDistiller's scripts use (`Recipe.points`). Term weights
and the supervised weight follow the CRD benchmark's CIFAR-100 scripts
(RepDistiller `scripts/run_cifar_distill.sh`: `-r` cross-entropy, `-a` KD,
`-b` the method's term) unless the method is not in it (DKD and DIST follow
mdistiller / the authors' code). Where a recipe takes several layers it
builds one term per layer (pairs of consecutive layers for FSP), so each is
logged on its own. OFD (authors' code) weighs its per-stage terms
`1e-3 * 2^(i - n)` (`Recipe.layer_decay`) and reads per-channel margins from
the teacher's BatchNorms (`Recipe.from_teacher`), so `get("ofd", ...)` takes
`teacher=`; Gram matching has no published setting (its weight is ours).

A recipe also carries its schedule (`Recipe.warmup`): DKD and ReviewKD ramp
their weight up linearly over the first 20 of 240 epochs (mdistiller),
which `recipes.distiller` applies in `fit` over the same share of the run
(`callbacks`, a `keras_kd.callbacks.WeightWarmUp` per term). Several methods
train together as `distiller("kd+at", ...)` or `combined(["kd", "at"], ...)`,
weighted as the CRD benchmark combines them (see `combined`).
"""

import collections
import dataclasses

from keras_kd import losses
from keras_kd.callbacks import WeightWarmUp
from keras_kd.distiller import Distiller
from keras_kd.term import Term


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A method's published setting."""

    loss: type
    weight: float
    student_loss_weight: float = 1.0
    on: str = "features"  # "logits", "features", "feature_pairs" or "feature_list" (one term, all layers)
    # Where `layers_for` takes features, after RepDistiller's `feat` indices:
    # "stages" (feat[1:-1]), "middle_stage" (feat[2], FitNets' hint layer),
    # "last_stage" (feat[-2]), "preact" (pre-ReLU stages), "embedding" (feat[-1]) or
    # "stages_and_embedding" (ReviewKD's feat[1:]: the teacher's pre-ReLU stages where it has them).
    points: str = "stages"
    connector: str = None
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    source: str = "RepDistiller scripts/run_cifar_distill.sh"
    # Of n per-layer terms, term i (0 = shallowest) weighs `weight * layer_decay ** (n - 1 - i)`.
    layer_decay: float = 1.0
    # (teacher model, teacher layer name) -> loss kwargs read from the teacher
    # (OFD's margins); `get` then needs the teacher.
    from_teacher: object = None
    # (warm-up epochs, epochs) of the published run, e.g. (20, 240): the weight ramps up linearly over the
    # same share of any run (`keras_kd.callbacks.WeightWarmUp`); None trains at a constant weight.
    warmup: tuple = None
    # Term and supervised weight when combined with other methods (`combined`); None keeps `weight` and
    # `student_loss_weight`.
    combined_weight: float = None
    combined_student_loss_weight: float = None
    # () -> the augmentation `distiller` gives the Distiller (applied once per batch to teacher and student alike).
    augmentation: object = None
    # The method's paper when it is not the loss's (function matching trains with Hinton's KDLoss).
    paper: str = None

    @property
    def warmup_fraction(self):
        """The share of the run the weight warms up over, or None."""
        return None if self.warmup is None else self.warmup[0] / self.warmup[1]


def _function_matching_mixup():
    """Function matching (Beyer et al., "Knowledge distillation: A good
    teacher is patient and consistent", CVPR 2022): the teacher and the
    student see the same aggressively augmented view of each image, the
    student matches the teacher's outputs with KL at T=1 and no label loss,
    for long schedules. The authors' ImageNet run (big_vision
    `configs/proj/distill/bit_i1k.py`): mixup `p=1.0, n=2` (a uniform
    Beta(1, 1) ratio, one per batch, each image mixed with its neighbour)
    on Inception crops and flips, `distance='kl', t=1.0`, Adam lr 0.03,
    weight decay 3e-4, gradient clipping 1.0, cosine decay after 5000
    warm-up steps, batch 4096, 1200 epochs ("a good middle ground"; the
    paper goes to 9600). The recipe gives the loss and the mixup; crops,
    optimizer and the length of the schedule are the caller's."""
    from keras_kd.augmentation import MixUp

    return MixUp(alpha=1.0)


def _ofd_margins(teacher, layer):
    """OFD's per-channel margins, from the teacher's BatchNorm before `layer`."""
    return {"margin": losses.ofd.teacher_margins(teacher, layer)}


RECIPES = {
    "function_matching": Recipe(
        losses.KDLoss,
        1.0,
        0.0,
        "logits",
        loss_kwargs={"temperature": 1.0},
        augmentation=_function_matching_mixup,
        paper='Beyer et al., "Knowledge distillation: A good teacher is patient and consistent", CVPR 2022.',
        source="Beyer et al. 2022, function matching (big_vision configs/proj/distill/bit_i1k.py: mixup p=1.0 on "
        "both models, distance kl t=1.0, no label loss); long schedules are the caller's",
    ),
    # Combined with another method: RepDistiller's CRD+KD `-r 1 -a 1 -b 0.8` (KD's weight `-a` 1, CE `-r` 1).
    "kd": Recipe(
        losses.KDLoss,
        0.9,
        0.1,
        "logits",
        loss_kwargs={"temperature": 4.0},
        combined_weight=1.0,
        combined_student_loss_weight=1.0,
    ),
    "logit_mse": Recipe(losses.LogitMSELoss, 1.0, 0.0, "logits", source="Ba & Caruana 2014 (logit regression alone)"),
    "dkd": Recipe(
        losses.DKDLoss,
        1.0,
        1.0,
        "logits",
        loss_kwargs={"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
        source="mdistiller configs/cifar100/dkd (DKD.WARMUP 20 of SOLVER.EPOCHS 240: linear warm-up of the weight)",
        warmup=(20, 240),
    ),
    "dist": Recipe(
        losses.DISTLoss,
        1.0,
        1.0,
        "logits",
        loss_kwargs={"beta": 1.0, "gamma": 1.0, "temperature": 1.0},
        source="Huang et al. 2022, ImageNet setting of the authors' code",
    ),
    "fitnet": Recipe(losses.FitNetLoss, 100.0, connector="auto", points="middle_stage"),
    "at": Recipe(losses.AttentionTransferLoss, 1000.0, loss_kwargs={"p": 2}),
    "fsp": Recipe(losses.FSPLoss, 50.0, on="feature_pairs"),
    "nst": Recipe(losses.NSTLoss, 50.0),
    "gram": Recipe(
        losses.GramLoss,
        50.0,
        connector="auto",
        # No published KD weight: GramLoss has FSPLoss's normalization (the Gram matrix is the FSP matrix
        # of a layer with itself), so it takes FSP's (and NST's) -b 50 of the CRD scripts. On digits
        # (trained cnn_large -> cnn_tiny) each weighted term then starts near the cross-entropy (~2.5 vs 2.3).
        source="keras_kd's choice (no published KD setting): FSP's weight, see GramLoss",
    ),
    "ab": Recipe(losses.ABLoss, 1.0, connector="auto", points="preact", loss_kwargs={"margin": 1.0}),
    "ofd": Recipe(
        losses.OFDLoss,
        1e-3,
        points="preact",
        connector="conv1x1",
        layer_decay=0.5,
        from_teacher=_ofd_margins,
        source="Heo et al. 2019 CIFAR-100 code (train_with_distillation.py: / batch_size / 1000, stage i of n "
        "weighted 2^(i-n)); mdistiller configs OFD.LOSS.FEAT_WEIGHT 0.001",
    ),
    "sp": Recipe(losses.SimilarityPreservingLoss, 3000.0, points="last_stage"),
    "cc": Recipe(losses.CorrelationCongruenceLoss, 0.02, connector="linear", points="embedding"),
    "rkd": Recipe(losses.RKDLoss, 1.0, points="embedding"),
    "pkt": Recipe(losses.PKTLoss, 30000.0, points="embedding"),
    "vid": Recipe(losses.VIDLoss, 1.0),
    # Pre-train the paraphraser first: term.loss.pretrain_paraphraser(features).
    "ft": Recipe(losses.FactorTransferLoss, 200.0, points="last_stage", loss_kwargs={"rate": 0.5, "p": 1}),
    "crd": Recipe(losses.CRDLoss, 0.8, points="embedding"),
    "reviewkd": Recipe(
        losses.ReviewKDLoss,
        5.0,
        1.0,
        on="feature_list",
        points="stages_and_embedding",
        source="ReviewKD CIFAR-100/script/reviewKD.sh and mdistiller configs/cifar100/reviewkd.yaml, resnet32x4 -> "
        "resnet8x4 (REVIEWKD.WARMUP_EPOCHS 20 of 240: linear warm-up of the weight)",
        warmup=(20, 240),
    ),
}


def names():
    """The method names `get` accepts."""
    return sorted(RECIPES)


def get_recipe(name):
    """The `Recipe` of method `name`; a ValueError lists the valid names."""
    if name not in RECIPES:
        raise ValueError(f"Unknown method {name!r}. Available methods: {names()}")
    return RECIPES[name]


def _method_names(spec):
    """The methods of `spec` (one name, several joined by "+" or a list), each checked and given once."""
    methods = spec.split("+") if isinstance(spec, str) else spec
    if not isinstance(methods, (list, tuple)) or not all(isinstance(n, str) for n in methods):
        raise ValueError(f"Give a method name, several joined by '+' or a list of names. Received: {spec!r}")
    methods = [n.strip() for n in methods]
    if not methods or "" in methods:
        raise ValueError(f"An empty method name in {spec!r}. Available methods: {names()}")
    for name in methods:
        get_recipe(name)
    repeated = sorted({n for n in methods if methods.count(n) > 1})
    if repeated:
        raise ValueError(f"Method(s) {repeated} given more than once in {spec!r}.")
    return methods


def _as_list(layers):
    return [layers] if isinstance(layers, str) else list(layers or [])


def get(name, teacher_layers=None, student_layers=None, weight=None, teacher=None, **loss_kwargs):
    """Terms for method `name` with its published constants.

    Args:
        name: one of `names()`.
        teacher_layers, student_layers: for feature methods, a layer name or
            a list of names (same length on both sides). Logit methods
            compare the outputs and take none.
        weight: overrides the published term weight (of the deepest layer,
            for recipes whose weights decay towards the input, e.g. OFD).
        teacher: the teacher model, for methods whose constants are read
            from it (`Recipe.from_teacher`: OFD's margins); ignored otherwise.
        **loss_kwargs: override the loss's constructor arguments.
    """
    recipe = get_recipe(name)
    kwargs = {**recipe.loss_kwargs, **loss_kwargs}
    weight = recipe.weight if weight is None else weight
    if recipe.on == "logits":
        if teacher_layers or student_layers:
            raise ValueError(f"Method {name!r} compares the models' outputs; it takes no layers.")
        return [Term(recipe.loss(**kwargs), weight=weight)]
    teacher_layers, student_layers = _as_list(teacher_layers), _as_list(student_layers)
    if not teacher_layers or len(teacher_layers) != len(student_layers):
        raise ValueError(
            f"Method {name!r} compares features: give teacher_layers and student_layers "
            f"of the same length. Received: teacher_layers={teacher_layers}, "
            f"student_layers={student_layers}"
        )
    if recipe.on == "feature_list":
        return [Term(recipe.loss(**kwargs), teacher_layer=teacher_layers, student_layer=student_layers, weight=weight)]
    if recipe.on == "feature_pairs":
        if len(teacher_layers) < 2:
            raise ValueError(f"Method {name!r} compares pairs of layers: give at least two.")
        pairs = zip(zip(teacher_layers, teacher_layers[1:]), zip(student_layers, student_layers[1:]))
        return [
            Term(recipe.loss(**kwargs), teacher_layer=list(t), student_layer=list(s), weight=weight) for t, s in pairs
        ]
    if recipe.from_teacher is not None and teacher is None:
        raise ValueError(
            f"Method {name!r} reads constants from the teacher's layers: pass teacher= (the teacher "
            "model), or use recipes.distiller, which does."
        )

    def loss(teacher_layer):
        from_teacher = recipe.from_teacher(teacher, teacher_layer) if recipe.from_teacher else {}
        return recipe.loss(**{**from_teacher, **kwargs})

    depth = len(teacher_layers)
    return [
        Term(
            loss(t),
            teacher_layer=t,
            student_layer=s,
            weight=weight * recipe.layer_decay ** (depth - 1 - i),
            connector=recipe.connector,
        )
        for i, (t, s) in enumerate(zip(teacher_layers, student_layers))
    ]


def describe(name):
    """Method `name`'s loss, paper, published weights and default constants."""
    import inspect
    import sys

    recipe = get_recipe(name)
    paper = recipe.paper or " ".join((sys.modules[recipe.loss.__module__].__doc__ or "").split("\n\n")[0].split())
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(recipe.loss.__init__).parameters.items()
        if parameter.default is not inspect.Parameter.empty and key not in ("name", "reduction", "dtype")
    }
    features = "outputs (logits)" if recipe.on == "logits" else recipe.points.replace("_", " ")
    return {
        "loss": recipe.loss.__name__,
        "paper": paper,
        "weight": recipe.weight,
        "student_loss_weight": recipe.student_loss_weight,
        "constants": {**defaults, **recipe.loss_kwargs},
        "features": features,
        "connector": recipe.connector,
        "source": recipe.source,
        "schedule": schedule(name),
        "combined_weight": _combined(recipe)[0],
        "combined_student_loss_weight": _combined(recipe)[1],
    }


def schedule(name):
    """Method `name`'s weight schedule in words: "constant", or its warm-up."""
    recipe = get_recipe(name)
    if recipe.warmup is None:
        return "constant"
    warm, total = recipe.warmup
    return (
        f"linear warm-up over the first {100 * warm / total:.1f}% of epochs ({warm} of {total} in the paper), "
        "then constant"
    )


def layers_for(name, teacher, student):
    """(teacher_layers, student_layers) where method `name` reads features,
    for models that follow the `keras_kd.models` layer-name convention.

    Stage lists of different lengths pair stages of the same spatial size
    (else the deepest ones). Returns `(None, None)` for methods that
    compare outputs.
    """
    from keras_kd.models import feature_layers  # the zoo imports nothing from here

    recipe = get_recipe(name)
    if recipe.on == "logits":
        return None, None
    found = {}
    for role, model in (("teacher", teacher), ("student", student)):
        features = feature_layers(model)
        key = "preact" if recipe.points == "preact" else "stages"
        if recipe.points == "embedding":
            found[role] = [features["embedding"]] if features["embedding"] else []
        else:
            found[role] = features[key]
        if not found[role]:
            wanted = {
                "preact": "`stage{i}_preact` layers beside every `stage{i}`",
                "embedding": "an `embedding` layer or `stage{i}` layers",
            }.get(recipe.points, "layers named `stage1`, `stage2`, ...")
            raise ValueError(
                f"Method {name!r} needs the {role} model {model.name!r} to have {wanted} "
                "(the keras_kd.models naming convention), or pass teacher_layers and student_layers."
            )
    teacher_layers, student_layers = _pair_stages(teacher, found["teacher"], student, found["student"])
    depth = len(student_layers)
    if recipe.points == "middle_stage":
        middle = (depth - 1) // 2 if depth > 2 else depth - 1
        return [teacher_layers[middle]], [student_layers[middle]]
    if recipe.points == "last_stage":
        return teacher_layers[-1:], student_layers[-1:]
    if recipe.points == "stages_and_embedding":
        return _review_layers(teacher, teacher_layers, student, student_layers)
    return teacher_layers, student_layers


def _review_layers(teacher, teacher_layers, student, student_layers):
    """ReviewKD reads every stage and the pooled feature: the teacher's
    pre-ReLU stages (`stage{i}_preact`, where it has one for every stage),
    the student's stages, then both `embedding` layers if both have one."""
    teacher_names = {layer.name for layer in teacher.layers}
    preact = [f"{name}_preact" for name in teacher_layers]
    if all(name in teacher_names for name in preact):
        teacher_layers = preact
    if "embedding" in teacher_names and "embedding" in {layer.name for layer in student.layers}:
        return teacher_layers + ["embedding"], student_layers + ["embedding"]
    return teacher_layers, student_layers


def _pair_stages(teacher, teacher_layers, student, student_layers):
    """Equal-length lists pair in order. Otherwise each student stage takes
    the deepest teacher stage of the same spatial size if every one has
    such a match, else the deepest stages of both pair up."""
    if len(teacher_layers) == len(student_layers):
        return teacher_layers, student_layers

    def spatial(model, name):
        return tuple(model.get_layer(name).output.shape[1:-1])

    matched = []
    for name in student_layers:
        same = [t for t in teacher_layers if spatial(teacher, t) == spatial(student, name)]
        matched.append(same[-1] if same else None)
    if None not in matched and len(set(matched)) == len(matched):
        return matched, student_layers
    depth = min(len(teacher_layers), len(student_layers))
    return teacher_layers[-depth:], student_layers[-depth:]


def student_loss_weight(name):
    """The published weight of the supervised loss for method `name`, or
    of several combined ("kd+at" or a list; the rule of `combined`)."""
    methods = _method_names(name)
    if len(methods) == 1:
        return get_recipe(methods[0]).student_loss_weight
    return max(_combined(get_recipe(method))[1] for method in methods)


def _combined(recipe):
    """(term weight, supervised weight) of `recipe` in a combination."""
    weight = recipe.weight if recipe.combined_weight is None else recipe.combined_weight
    supervised = recipe.student_loss_weight
    if recipe.combined_student_loss_weight is not None:
        supervised = recipe.combined_student_loss_weight
    return weight, supervised


class Combination(
    collections.namedtuple("Combination", ["terms", "student_loss_weight", "callbacks", "augmentation"], defaults=[None])
):
    """What `combined` returns: the terms, the supervised weight, the
    schedule callbacks and the in-step augmentation of a set of methods."""

    def distiller(self, teacher, student):
        """A `Distiller` with these terms, supervised weight and augmentation
        (pass `callbacks` to its `fit`)."""
        return Distiller(
            teacher,
            student,
            self.terms,
            student_loss_weight=self.student_loss_weight,
            augmentation=self.augmentation,
        )


def needs_index(names):
    """Whether any of methods `names` keeps a memory row per training
    example (CRD): its `Distiller` must be fit on batches that carry each
    example's position (`keras_kd.datasets.with_index`, or
    `datasets.load(..., index=True)`) and built with `num_data=`."""
    return any(get_recipe(name).loss.requires_index for name in _method_names(names))


def combined(names, teacher, student, temperature=None, epochs=None, num_data=None):
    """Terms, supervised weight and schedule of several methods trained
    together, e.g. `combined("kd+at", teacher, student)`.

    RepDistiller's `train_student.py` sums `-r` x cross-entropy, `-a` x KD
    and `-b` x the method's term; its one published combination, CRD+KD, is
    `-r 1 -a 1 -b 0.8` (`scripts/run_cifar_distill.sh`; KD alone is
    `-r 0.1 -a 0.9`, CRD alone `-r 1 -a 0 -b 0.8`). The rule:

    - each method's terms keep its recipe's weight (its `-b`), except a
      recipe with a `combined_weight`: KD's `-a 1`;
    - the supervised weight is the largest of the methods' (their
      `combined_student_loss_weight` where given: KD's `-r 1`). Every method
      that trains on labels keeps `-r 1` alongside another (RepDistiller;
      DKD and DIST use cross-entropy weight 1), and a label-free one
      (`logit_mse`, 0) does not switch the labels off for the others;
    - each method keeps its schedule: `callbacks` holds a
      `keras_kd.callbacks.WeightWarmUp` per DKD or ReviewKD term.

    A single method is its own recipe (`get`, `student_loss_weight`). The
    layers come from `layers_for` (the `keras_kd.models` naming convention).

    Args:
        names: methods joined by "+" ("kd+at") or a list.
        teacher, student: the models.
        temperature: overrides the softmax temperature of the methods that
            have one (KD, DKD, DIST).
        epochs: the run's length, for the warm-ups; None takes `fit`'s.
        num_data: the number of training examples, for methods that keep a
            memory row per example (CRD; see `needs_index`).

    Returns:
        `Combination(terms, student_loss_weight, callbacks, augmentation)`:
        `augmentation` is the in-step augmentation of the one method that
        has one (function matching's mixup), or None.
    """
    methods = _method_names(names)
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0
    ):
        raise ValueError(f"`temperature` must be a positive number. Received: temperature={temperature!r}")
    terms = []
    for method in methods:
        recipe = get_recipe(method)
        kwargs = {}
        if temperature is not None and "temperature" in recipe.loss_kwargs:
            kwargs["temperature"] = float(temperature)
        if len(methods) > 1 and recipe.combined_weight is not None:
            kwargs["weight"] = recipe.combined_weight
        if recipe.loss.requires_index:
            kwargs["num_data"] = num_data
        teacher_layers, student_layers = layers_for(method, teacher, student)
        terms += get(method, teacher_layers, student_layers, teacher=teacher, **kwargs)
    augmented = [method for method in methods if get_recipe(method).augmentation is not None]
    if len(augmented) > 1:
        raise ValueError(f"At most one method may bring an in-step augmentation; {augmented} each do.")
    augmentation = get_recipe(augmented[0]).augmentation() if augmented else None
    return Combination(terms, student_loss_weight(methods), _warmups(methods, terms, epochs), augmentation)


def callbacks(names, distiller, epochs=None):
    """The callbacks that apply the schedule of methods `names` ("dkd",
    "kd+dkd" or a list) to `distiller`'s terms: a
    `keras_kd.callbacks.WeightWarmUp` to the term's weight for every term
    of a method with a warm-up (DKD and ReviewKD: the first 20 of 240
    epochs in the papers, the same share of this run); none for methods
    trained at a constant weight.

    `recipes.distiller` sets them as `distiller.schedule_callbacks`, which
    `Distiller.fit` applies (a `WeightScheduler` passed to `fit` for the
    same term replaces it); pass them to `fit` yourself for a Distiller
    built from `get`'s terms.

    Args:
        names: the methods.
        distiller: the `keras_kd.Distiller` (its terms, as it named them).
        epochs: the run's length; None takes `fit`'s `epochs`.
    """
    if not isinstance(getattr(distiller, "terms", None), list):
        raise ValueError(f"`distiller` must be a keras_kd.Distiller. Received: distiller={distiller!r}")
    return _warmups(_method_names(names), distiller.terms, epochs)


def _warmups(methods, terms, epochs=None):
    warmups = []
    for method in methods:
        recipe = get_recipe(method)
        if recipe.warmup is not None:
            warmups += [
                WeightWarmUp(term.name, term.weight, recipe.warmup_fraction, epochs)
                for term in terms
                if isinstance(term.loss, recipe.loss)
            ]
    return warmups


def needs_pretraining(distiller):
    """True when `pretrain` has a stage to run for `distiller` (a factor-transfer
    term), so a caller reads the training images only then."""
    return any(isinstance(term.loss, losses.FactorTransferLoss) for term in distiller.bound_terms)


def pretrain(distiller, x, epochs=10, batch_size=256):
    """Runs the first stage some methods need before the student trains.

    Factor transfer (Kim et al. 2018) first trains each `FactorTransferLoss`
    paraphraser to reconstruct the teacher's features on inputs `x` (the
    training images), `epochs` epochs. Terms of other methods are left
    alone, so this is safe to call on any Distiller.

    Returns `{term name: reconstruction loss per epoch}` of the terms it trained.
    """
    import keras
    import numpy as np

    history = {}
    for term in distiller.bound_terms:
        # The Distiller's own copy of the loss: it holds the paraphraser the step uses.
        if isinstance(term.loss, losses.FactorTransferLoss):
            teacher = term.teacher or next(iter(distiller.teachers))
            # In chunks: every hooked teacher layer is computed, not only this one.
            features = np.concatenate(
                [
                    keras.ops.convert_to_numpy(
                        distiller.compute_teacher_features(x[i : i + batch_size])[teacher][term.teacher_layer]
                    )
                    for i in range(0, len(x), batch_size)
                ]
            )
            history[term.name] = term.loss.pretrain_paraphraser(features, epochs=epochs)
    return history


def distiller(name, teacher, student, teacher_layers=None, student_layers=None, **kwargs):
    """A `Distiller` with method `name`'s terms, supervised weight and
    schedule; the layers default to `layers_for(name, teacher, student)`.

    `name` may join several methods ("kd+at", or a list): `combined` builds
    them (layers from the naming convention; `temperature=` the one
    override). The schedule (DKD's and ReviewKD's warm-up, `callbacks`) is
    `distiller.schedule_callbacks`, which `fit` applies over its `epochs`;
    set it to `[]` to train at constant weights.
    """
    methods = _method_names(name)
    if len(methods) > 1:
        if teacher_layers is not None or student_layers is not None:
            raise ValueError(
                f"Combined methods {methods} take their layers from the naming convention (`layers_for`). "
                "For other layers build the terms with recipes.get and a keras_kd.Distiller."
            )
        model = combined(methods, teacher, student, **kwargs).distiller(teacher, student)
    else:
        if teacher_layers is None and student_layers is None:
            teacher_layers, student_layers = layers_for(methods[0], teacher, student)
        terms = get(methods[0], teacher_layers, student_layers, teacher=teacher, **kwargs)
        augmentation = get_recipe(methods[0]).augmentation
        model = Distiller(
            teacher,
            student,
            terms,
            student_loss_weight=student_loss_weight(methods[0]),
            augmentation=augmentation() if augmentation else None,
        )
    model.schedule_callbacks = callbacks(methods, model)
    return model


# ---------------------------------------------------------------- schemes


@dataclasses.dataclass(frozen=True)
class SchemeRecipe:
    """A training scheme's published setting: `build(*args, **constants)`
    makes it (a class or function of `keras_kd.schemes`, or `mimic_distiller`)."""

    build: object
    constants: dict = dataclasses.field(default_factory=dict)  # published values that differ from `build`'s defaults
    trains: str = ""  # the models it needs and what it trains
    source: str = "the paper's setting (the defaults of `build`)"


def mimic_distiller(teacher, hidden_units=2000, bottleneck=250, name="mimic"):
    """Mimic learning (Ba & Caruana 2014): a `Distiller` that trains a fresh
    shallow mimic net (`keras_kd.models.get("mimic", ...)`, a wide ReLU layer
    behind a linear bottleneck) to regress `teacher`'s logits with the
    `logit_mse` recipe (no labels), for the teacher's input shape and class
    count."""
    from keras_kd import models

    student = models.get(
        "mimic",
        tuple(teacher.input_shape[1:]),
        int(teacher.output_shape[-1]),
        hidden_units=hidden_units,
        bottleneck=bottleneck,
        name=name,
    )
    return distiller("logit_mse", teacher, student)


def _scheme_recipes():
    from keras_kd import schemes

    return {
        "mimic": SchemeRecipe(
            mimic_distiller,
            trains="a teacher -> a new shallow mimic net, on the teacher's logits alone",
            source="Ba & Caruana 2014 (logit regression); k=250 as their TIMIT SNN-MIMIC (not checked offline), "
            "hidden width ours",
        ),
        "mutual": SchemeRecipe(schemes.MutualLearning, trains="K >= 2 peers, all trained"),
        "self_distillation": SchemeRecipe(schemes.SelfDistillation, trains="one network with auxiliary heads"),
        "teacher_free": SchemeRecipe(schemes.virtual_teacher_distiller, trains="a student, no teacher (virtual)"),
        "adversarial": SchemeRecipe(schemes.AdversarialDistiller, trains="teacher -> student, plus a discriminator"),
        "boundary": SchemeRecipe(schemes.BoundarySupportingDistiller, trains="teacher -> student, plus BSS samples"),
        "grafting": SchemeRecipe(
            schemes.GraftingTrainer,
            trains="K >= 2 peers of one architecture from different seeds",
            source="Meng et al. 2020 reference code (fxmeng/filter-grafting: --a 0.4 --c 500, entropy of 10 bins)",
        ),
        "noisy_student": SchemeRecipe(
            schemes.NoisyStudent,
            constants={"pseudo_labels": "soft", "temperature": 1.0, "threshold": 0.3, "balance": True, "rounds": 3},
            trains="teacher -> equal-or-larger noised students (dropout 0.5, stochastic depth 0.2), in rounds",
            source="Xie et al. 2020, google-research/noisystudent (ImageNet: soft labels at T=1, --min_threshold=0.3, "
            "class balancing, 3 rounds)",
        ),
        "teacher_assistant": SchemeRecipe(
            schemes.TeacherAssistant,
            trains="teacher -> assistant(s) -> student, each stage distilled from the one before, same terms and epochs",
            source="Mirzadeh et al. 2020 (TAKD); their code searches T in {1, 2, 5, 10, 15, 20} and lambda in "
            "[0.05, 1] per stage (no single published value), so the stages use the kd recipe (T=4, 0.9 KD + 0.1 CE)",
        ),
        "dgkd": SchemeRecipe(
            schemes.TeacherAssistant,
            constants={"dense": True, "drop_count": 1},
            trains="teacher -> assistant(s) -> student, each model taught by every larger one, one teacher dropped "
            "per mini-batch",
            source="Son et al. 2021 (DGKD): stochastic teaching drops a teacher or teacher assistant per mini-batch; "
            "the kd recipe per teacher, summed",
        ),
    }


def scheme_names():
    """The training schemes `scheme` accepts."""
    return sorted(_scheme_recipes())


def get_scheme_recipe(name):
    """The `SchemeRecipe` of scheme `name`; a ValueError lists the valid names."""
    recipes = _scheme_recipes()
    if name not in recipes:
        raise ValueError(f"Unknown scheme {name!r}. Available schemes: {sorted(recipes)}")
    return recipes[name]


def scheme(name, *args, **overrides):
    """Scheme `name` at its published setting: `build(*args, **constants)`,
    with `overrides` replacing constants, e.g.
    `scheme("noisy_student", teacher, student_fn, noise="shift")` or
    `scheme("grafting", [peer_a, peer_b])`."""
    recipe = get_scheme_recipe(name)
    return recipe.build(*args, **{**recipe.constants, **overrides})


def describe_scheme(name):
    """Scheme `name`'s entry point, paper, what it trains and its constants."""
    import inspect
    import sys

    recipe = get_scheme_recipe(name)
    paper = " ".join((sys.modules[recipe.build.__module__].__doc__ or "").split("\n\n")[0].split())
    if recipe.build is mimic_distiller:  # the paper is the mimic net's
        paper = " ".join(sys.modules["keras_kd.models.mimic"].__doc__.split("\n\n")[0].split())
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(recipe.build).parameters.items()
        if parameter.default is not inspect.Parameter.empty
        and not isinstance(parameter.default, (list, tuple))
        and parameter.default is not None
        and key not in ("name", "dtype", "stop_on_nan")
    }
    return {
        "build": f"{recipe.build.__module__}.{recipe.build.__qualname__}",
        "paper": paper,
        "trains": recipe.trains,
        "constants": {**defaults, **recipe.constants},
        "source": recipe.source,
    }
