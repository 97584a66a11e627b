"""Every method trains inside a Distiller with its published setting."""

import math
import re

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import recipes
from tests.conftest import cnn, sparse_ce

LAYERS = {
    "logits": (None, None),
    "features": (["block1", "block2"], ["block1", "block2"]),
    "feature_pairs": (["block1", "block2"], ["block1", "block2"]),
    # ReviewKD: one term over every stage and the pooled feature, teacher pre-ReLU.
    "feature_list": (["bn1", "bn2", "pool"], ["block1", "block2", "pool"]),
    "embedding": ("pool", "pool"),
}
EMBEDDING_METHODS = {"sp", "cc", "rkd", "pkt", "crd", "vid"}
PRE_RELU = {"ab": (["bn1", "bn2"], ["bn1", "bn2"]), "ofd": (["bn1", "bn2"], ["bn1", "bn2"])}


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
    distiller = recipes.distiller(name, teacher, student, teacher_layers, student_layers)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce(), jit_compile=True)
    before = [np.array(v) for v in student.trainable_weights]
    history = distiller.fit(images, y[:192], epochs=2, batch_size=64, verbose=0)
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
    distiller = recipes.distiller(name, teacher, student)
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
    history = recipes.pretrain(distiller, images, epochs=6, batch_size=48)  # 3 chunks, one partial
    assert list(history) == [distiller.terms[0].name]
    losses = history[distiller.terms[0].name]
    assert len(losses) == 6 and losses[-1] < losses[0]
    for before, after in zip(teacher_before + student_before, teacher.get_weights() + student.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert recipes.pretrain(recipes.distiller("kd", teacher, cnn(4, "s2")), images) == {}


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
