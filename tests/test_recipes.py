"""Every method trains inside a Distiller with its published setting."""

import math
import re

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import recipes
from tests import backend_utils
from tests.conftest import cnn, sparse_ce

LAYERS = {
    "logits": (None, None),
    "features": (["block1", "block2"], ["block1", "block2"]),
    "feature_pairs": (["block1", "block2"], ["block1", "block2"]),
    # ReviewKD: one term over every stage and the pooled feature, teacher pre-ReLU.
    "feature_list": (["bn1", "bn2", "pool"], ["block1", "block2", "pool"]),
    "embedding": ("pool", "pool"),
}
# XLA on TensorFlow and JAX. PyTorch has no XLA: Keras' jit_compile=True
# there means torch.compile, which is not this check (its steps run eagerly).
XLA = backend_utils.BACKEND in ("tensorflow", "jax")
EMBEDDING_METHODS = {"sp", "cc", "rkd", "pkt", "crd", "vid"}
PRE_RELU = {"ab": (["bn1", "bn2"], ["bn1", "bn2"]), "ofd": (["bn1", "bn2"], ["bn1", "bn2"])}


def indexed(name):
    """Whether method `name`'s loss keeps a memory row per training example (CRD)."""
    return recipes.needs_index(name)


def index_kwargs(name, num_data):
    """The loss arguments such a method needs: the training-set size."""
    return {"num_data": num_data} if indexed(name) else {}


def layers_for(name):
    if name in PRE_RELU:
        return PRE_RELU[name]
    if name in EMBEDDING_METHODS:
        return LAYERS["embedding"]
    return LAYERS[recipes.RECIPES[name].on]


@pytest.mark.parametrize("name", recipes.names())
def test_each_method_trains_in_a_distiller_under_xla(name, digits):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:192]
    teacher_layers, student_layers = layers_for(name)
    # FSP compares C_a x C_b matrices, so it needs equal widths (as in the paper).
    teacher, student = cnn(4 if name == "fsp" else 8, "teacher"), cnn(4, "student")
    distiller = recipes.distiller(name, teacher, student, teacher_layers, student_layers, **index_kwargs(name, 192))
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce(), jit_compile=XLA)
    before = [np.array(v) for v in student.trainable_weights]
    # CRD's batches carry each example's position (its memory row); the Distiller takes it out.
    data = keras_kd.datasets.with_index(images, y[:192]) if indexed(name) else (images, y[:192])
    history = distiller.fit(*data, epochs=2, batch_size=64, verbose=0)
    term_names = [term.name for term in distiller.terms]
    assert term_names and all(n in history.history for n in term_names)
    assert all(math.isfinite(v) for n in term_names for v in history.history[n])
    assert any(not np.array_equal(b, np.array(a)) for b, a in zip(before, student.trainable_weights))
    assert distiller.student_loss_weight == recipes.student_loss_weight(name)


def test_feature_recipe_builds_one_term_per_layer():
    terms = recipes.get("at", ["a", "b", "c"], ["a", "b", "c"])
    assert [t.teacher_layer for t in terms] == ["a", "b", "c"]
    assert all(t.weight == 1000.0 and t.loss.p == 2 for t in terms)


def test_fsp_recipe_pairs_consecutive_layers():
    terms = recipes.get("fsp", ["a", "b", "c"], ["x", "y", "z"])
    assert [t.teacher_layer for t in terms] == [("a", "b"), ("b", "c")]
    assert [t.student_layer for t in terms] == [("x", "y"), ("y", "z")]


def test_overrides():
    (term,) = recipes.get("kd", weight=0.5, temperature=8.0)
    assert term.weight == 0.5 and term.loss.temperature == 8.0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: recipes.get("attention"), r"Unknown method 'attention'.*'at'"),
        (lambda: recipes.get("at", ["a"], ["a", "b"]), "same length"),
        (lambda: recipes.get("at"), "same length"),
        (lambda: recipes.get("kd", "a", "a"), "takes no layers"),
        (lambda: recipes.get("fsp", ["a"], ["a"]), "at least two"),
    ],
)
def test_bad_recipe_requests(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_auto_connector_only_where_shapes_differ():
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    terms = [
        keras_kd.Term(
            keras_kd.losses.FitNetLoss(), teacher_layer="block1", student_layer="block1", connector="auto", name="maps"
        ),
        keras_kd.Term(
            keras_kd.losses.FitNetLoss(), teacher_layer="pool", student_layer="pool", connector="auto", name="vectors"
        ),
        keras_kd.Term(keras_kd.losses.FitNetLoss(), connector="auto", name="logits"),
    ]
    distiller = keras_kd.Distiller(teacher, student, terms)
    assert isinstance(distiller.connectors["maps"], keras_kd.connectors.Conv1x1Connector)
    assert isinstance(distiller.connectors["vectors"], keras_kd.connectors.LinearConnector)
    assert "logits" not in distiller.connectors


@pytest.mark.parametrize("name", recipes.names())
def test_layers_come_from_the_naming_convention(name):
    from keras_kd import models

    # FSP compares C_a x C_b matrices, so it needs equal widths (as in the paper).
    teacher = models.get("cnn_tiny" if name == "fsp" else "cnn_large", (8, 8, 1), 10)
    student = models.get("cnn_tiny", (8, 8, 1), 10)
    distiller = recipes.distiller(name, teacher, student, **index_kwargs(name, 100))
    expected = {
        "logits": [None],
        "stages": ["stage1", "stage2"],
        "middle_stage": ["stage2"],  # of two stages, the deeper
        "last_stage": ["stage2"],
        "preact": ["stage1_preact", "stage2_preact"],
        "embedding": ["embedding"],
    }
    recipe = recipes.get_recipe(name)
    points = "logits" if recipe.on == "logits" else recipe.points
    student_layers = [term.student_layer for term in distiller.terms]
    if recipe.on == "feature_pairs":
        assert [list(layers) for layers in student_layers] == [["stage1", "stage2"]]
    elif recipe.on == "feature_list":
        assert [list(layers) for layers in student_layers] == [["stage1", "stage2", "embedding"]]
        teacher_layers = [list(term.teacher_layer) for term in distiller.terms]
        assert teacher_layers == [["stage1_preact", "stage2_preact", "embedding"]]
    else:
        assert student_layers == expected[points]
    # cnn_large has three stages, cnn_tiny two: stages of equal spatial size pair up.
    if points in ("stages", "preact") and recipe.on != "feature_pairs":
        suffix = "_preact" if points == "preact" else ""
        assert [term.teacher_layer for term in distiller.terms] == [f"stage1{suffix}", f"stage2{suffix}"]


def test_layers_for_names_what_is_missing():
    inputs = keras.Input((8, 8, 1))
    plain = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)), name="plain")
    with pytest.raises(ValueError, match="plain.*naming convention"):
        recipes.distiller("at", plain, plain)
    assert recipes.layers_for("kd", plain, plain) == (None, None)


@pytest.mark.parametrize("name", recipes.names())
def test_describe_gives_paper_and_constants(name):
    info = recipes.describe(name)
    assert info["loss"] == recipes.RECIPES[name].loss.__name__
    assert re.search(r"(19|20)\d\d", info["paper"]), info["paper"]
    assert info["weight"] == recipes.RECIPES[name].weight
    for key, value in recipes.RECIPES[name].loss_kwargs.items():
        assert info["constants"][key] == value
    if name in ("dkd", "reviewkd"):
        assert info["schedule"].startswith("linear warm-up over the first 8.3% of epochs (20 of 240")
    else:
        assert info["schedule"] == "constant"


def test_pretrain_fits_factor_transfer_paraphrasers_only(digits):
    x, _ = digits
    images = x.reshape(-1, 8, 8, 1)[:128]
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    distiller = keras_kd.Distiller(
        teacher,
        student,
        recipes.get("ft", "block2", "block2") + recipes.get("at", "block1", "block1"),
    )
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student_before = [w.copy() for w in student.get_weights()]
    assert recipes.needs_pretraining(distiller)
    history = recipes.pretrain(distiller, images, epochs=6, batch_size=48)  # 3 chunks, one partial
    assert list(history) == [distiller.terms[0].name]
    losses = history[distiller.terms[0].name]
    assert len(losses) == 6 and losses[-1] < losses[0]
    for before, after in zip(teacher_before + student_before, teacher.get_weights() + student.get_weights()):
        np.testing.assert_array_equal(before, after)
    kd = recipes.distiller("kd", teacher, cnn(4, "s2"))
    assert not recipes.needs_pretraining(kd)
    assert recipes.pretrain(kd, images) == {}


@pytest.mark.parametrize("name", recipes.scheme_names())
def test_describe_scheme_gives_paper_entry_point_and_constants(name):
    info = recipes.describe_scheme(name)
    assert re.search(r"(19|20)\d\d", info["paper"]), info["paper"]
    assert info["build"].startswith("keras_kd.") and info["trains"]
    for key, value in recipes.get_scheme_recipe(name).constants.items():
        assert info["constants"][key] == value


def test_scheme_builds_with_published_constants_and_overrides():
    keras.utils.set_random_seed(1)
    peer_a = cnn(4, "peer_a")
    keras.utils.set_random_seed(2)
    peer_b = cnn(4, "peer_b")
    trainer = recipes.scheme("grafting", [peer_a, peer_b], c=100.0)
    assert isinstance(trainer, keras_kd.schemes.GraftingTrainer)
    assert (trainer.grafting.a, trainer.grafting.c, trainer.grafting.bins) == (0.4, 100.0, 10)
    noisy = recipes.scheme("noisy_student", cnn(4, "teacher"), lambda r: cnn(4, f"s{r}"), rounds=2)
    assert (noisy.rounds, noisy.threshold, noisy.pseudo_labels) == (2, 0.3, "soft")
    with pytest.raises(ValueError, match=r"Unknown scheme 'graft'.*'grafting'"):
        recipes.scheme("graft")


def test_mimic_distiller_regresses_the_teachers_logits(digits):
    x, y = digits
    teacher = cnn(8, "teacher")
    distiller = recipes.scheme("mimic", teacher, hidden_units=64, bottleneck=16)
    student = distiller.student
    assert student.input_shape[1:] == teacher.input_shape[1:] and student.output_shape[-1] == 10
    assert student.get_layer("bottleneck").units == 16 and student.get_layer("stage1_preact").units == 64
    assert [type(term.loss) for term in distiller.terms] == [keras_kd.losses.LogitMSELoss]
    assert distiller.student_loss_weight == 0.0
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    history = distiller.fit(x.reshape(-1, 8, 8, 1)[:256], y[:256], epochs=3, batch_size=64, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]


def _zoo_pair():
    from keras_kd import models

    return models.get("cnn_tiny", (8, 8, 1), 10, name="teacher"), models.get("cnn_tiny", (8, 8, 1), 10, name="student")


class _WeightRecorder(keras.callbacks.Callback):
    """The term's weight variable at the end of each epoch (the schedule
    sets it at the epoch's start, after this callback's own hook)."""

    def __init__(self, term):
        super().__init__()
        self.term, self.weights = term, []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(float(keras.ops.convert_to_numpy(self.model.term_weights[self.term])))


@pytest.mark.parametrize("name, term, weight", [("dkd", "dkd_loss", 1.0), ("reviewkd", "review_kd_loss", 5.0)])
def test_warm_up_ramps_the_weight_over_the_papers_share_of_fit(name, term, weight, digits):
    x, y = digits
    teacher, student = _zoo_pair()
    distiller = recipes.distiller(name, teacher, student)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    recorder = _WeightRecorder(term)
    # 20 of 240 epochs -> 3 of 36: epoch e (from 1) at min(e / 3, 1) * weight, as mdistiller.
    history = distiller.fit(
        x.reshape(-1, 8, 8, 1)[:32], y[:32], epochs=36, batch_size=32, callbacks=[recorder], verbose=0
    )
    expected = [weight / 3, 2 * weight / 3] + [weight] * 34
    np.testing.assert_allclose(recorder.weights, expected, rtol=1e-6)
    np.testing.assert_allclose(history.history[f"{term}_weight"], expected, rtol=1e-6)


def test_a_weight_scheduler_given_to_fit_replaces_the_warm_up(digits):
    x, y = digits
    distiller = recipes.distiller("dkd", *_zoo_pair())
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    recorder = _WeightRecorder("dkd_loss")
    constant = keras_kd.callbacks.WeightScheduler("dkd_loss", "constant", start=0.5)
    distiller.fit(x.reshape(-1, 8, 8, 1)[:32], y[:32], epochs=24, batch_size=32, callbacks=[constant, recorder], verbose=0)
    assert recorder.weights == [0.5] * 24
    distiller.schedule_callbacks = []  # constant at the term's weight
    recorder = _WeightRecorder("dkd_loss")
    distiller.fit(x.reshape(-1, 8, 8, 1)[:32], y[:32], epochs=24, batch_size=32, callbacks=[recorder], verbose=0)
    assert recorder.weights == [0.5] * 24  # the variable as the last fit left it: nothing ramps


@pytest.mark.parametrize("epochs, length", [(240, 20), (36, 3), (30, 3), (18, 2), (6, 1), (1, 1)])
def test_callbacks_size_the_warm_up_to_the_run(epochs, length):
    distiller = recipes.distiller("dkd", *_zoo_pair(), weight=2.0)
    (warmup,) = recipes.callbacks("dkd", distiller, epochs=epochs)
    assert isinstance(warmup, keras_kd.callbacks.WeightScheduler)
    assert (warmup.term, warmup.epochs, warmup.end) == ("dkd_loss", length, 2.0)  # ramps to the term's weight
    assert warmup.value_at(0) == pytest.approx(2.0 / length) and warmup.value_at(length - 1) == 2.0
    assert recipes.callbacks("kd+at", recipes.distiller("kd+at", *_zoo_pair()), epochs=epochs) == []


def test_combined_kd_at_takes_the_crd_benchmarks_kd_combination():
    teacher, student = _zoo_pair()
    combination = recipes.combined("kd+at", teacher, student)
    losses = [type(term.loss).__name__ for term in combination.terms]
    assert losses == ["KDLoss", "AttentionTransferLoss", "AttentionTransferLoss"]
    # RepDistiller's CRD+KD: -r 1 -a 1 -b <method's>; KD alone keeps -r 0.1 -a 0.9.
    assert [term.weight for term in combination.terms] == [1.0, 1000.0, 1000.0]
    assert combination.student_loss_weight == 1.0 == recipes.student_loss_weight("kd+at")
    assert combination.callbacks == []
    assert recipes.student_loss_weight("kd") == 0.1 and recipes.get("kd")[0].weight == 0.9
    assert recipes.student_loss_weight(["logit_mse", "kd"]) == 1.0  # labels stay on for KD
    distiller = recipes.distiller(["kd", "at"], teacher, student)
    assert [t.weight for t in distiller.terms] == [1.0, 1000.0, 1000.0] and distiller.student_loss_weight == 1.0


def test_combined_keeps_each_methods_schedule_and_temperature():
    teacher, student = _zoo_pair()
    combination = recipes.combined("dkd+at", teacher, student, temperature=2.0, epochs=240)
    assert combination.terms[0].loss.temperature == 2.0 and combination.student_loss_weight == 1.0
    (warmup,) = combination.callbacks
    assert (warmup.term, warmup.weight, warmup.epochs) == ("dkd_loss", 1.0, 20)
    distiller = recipes.distiller("at+dkd", teacher, student)
    assert [c.term for c in distiller.schedule_callbacks] == ["dkd_loss"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda t, s: recipes.combined("kd+kd", t, s), r"\['kd'\] given more than once"),
        (lambda t, s: recipes.combined("kd+", t, s), "empty method name"),
        (lambda t, s: recipes.combined("kd+attention", t, s), "Unknown method 'attention'"),
        (lambda t, s: recipes.combined("kd+at", t, s, temperature=0), "temperature=0"),
        (lambda t, s: recipes.distiller("kd+at", t, s, "stage1", "stage1"), "naming convention"),
        (lambda t, s: recipes.callbacks("dkd", t), "must be a keras_kd.Distiller"),
        (lambda t, s: keras_kd.callbacks.WeightWarmUp("dkd_loss", 1.0, fraction=0), "fraction=0"),
        (lambda t, s: keras_kd.callbacks.WeightWarmUp("dkd_loss", -1.0, fraction=0.5), "weight=-1.0"),
    ],
)
def test_bad_combinations_and_schedules(call, match):
    with pytest.raises(ValueError, match=match):
        call(*_zoo_pair())
