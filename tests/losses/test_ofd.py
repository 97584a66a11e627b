import math
import re

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import models, recipes
from keras_kd.losses.ofd import OFDLoss, find_batch_norm, margin_from_bn, teacher_margins
from tests import backend_utils, loss_checks
from tests.conftest import cnn, sparse_ce
from tests.losses.feature_reference import pool_larger

rng = np.random.default_rng(11)
MARGIN = [-0.8, -0.3]
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 2)).astype("float32")


def per_example_reference(teacher, student, margin=MARGIN):
    """The authors' distillation_loss, summed per example, in float64."""
    teacher, student = pool_larger(teacher, student) if teacher.ndim == 4 else (teacher, student)
    s, t = np.asarray(student, "float64"), np.asarray(teacher, "float64")
    target = np.maximum(t, np.asarray(margin, "float64"))
    loss = (s - target) ** 2 * ((s > target) | (target > 0))
    return loss.reshape(len(loss), -1).sum(-1)


def reference(teacher, student, margin=MARGIN):
    return per_example_reference(teacher, student, margin).mean()


def truncated_mean(mean, std):
    """E[x | x < 0] for x ~ N(mean, std^2), by numerical integration."""
    x = np.linspace(mean - 12 * std, 0.0, 200001)
    density = np.exp(-0.5 * ((x - mean) / std) ** 2)
    density[[0, -1]] /= 2  # the trapezoidal rule
    return float((x * density).sum() / density.sum())


def bn_model(gamma, beta, name="bn"):
    """Input -> BatchNormalization(gamma, beta, moving mean 0, variance 1) -> ReLU."""
    inputs = keras.Input((len(gamma),))
    layer = keras.layers.BatchNormalization(name=name)
    model = keras.Model(inputs, keras.layers.ReLU()(layer(inputs)), name="teacher")
    layer.set_weights(
        [
            np.asarray(gamma, "float32"),
            np.asarray(beta, "float32"),
            np.zeros(len(gamma)),
            np.full(len(gamma), 1.0 - layer.epsilon),
        ]
    )
    return model


# Margins


def test_margin_of_a_standard_normal_is_minus_sqrt_two_over_pi():
    np.testing.assert_allclose(
        margin_from_bn([1.0, 2.0], [0.0, 0.0]), [-math.sqrt(2 / math.pi), -2 * math.sqrt(2 / math.pi)], rtol=1e-12
    )


@pytest.mark.parametrize("gamma, beta", [(1.0, 0.0), (0.5, 1.0), (2.0, -1.0), (-1.5, 0.5), (1.0, 3.0), (0.1, -2.0)])
def test_margin_matches_the_truncated_normal_mean(gamma, beta):
    # The closed form beta - |gamma| phi(beta/|gamma|) / Phi(-beta/|gamma|) against numerical integration.
    np.testing.assert_allclose(margin_from_bn([gamma], [beta]), [truncated_mean(beta, abs(gamma))], rtol=1e-6)


def test_margin_falls_back_to_three_sigma_where_negatives_are_rare():
    # Phi(-4) = 3.2e-5 <= 0.001: the authors' -3 |gamma|; Phi(-3) = 1.3e-3 still uses the closed form.
    got = margin_from_bn([1.0, -2.0, 1.0], [4.0, 10.0, 3.0])
    np.testing.assert_allclose(got[:2], [-3.0, -6.0])
    np.testing.assert_allclose(got[2], truncated_mean(3.0, 1.0), rtol=1e-6)


def test_margin_of_a_constant_channel_is_its_negative_part():
    np.testing.assert_array_equal(margin_from_bn([0.0, 0.0], [-0.7, 0.4]), [-0.7, 0.0])


def test_margins_match_a_monte_carlo_estimate_from_a_batch_norm_layer():
    gamma, beta = [1.0, 0.5, 2.0, -1.5], [0.0, 1.0, -1.0, 0.5]
    model = bn_model(gamma, beta)
    inputs = np.random.default_rng(0).standard_normal((200_000, 4)).astype("float32")
    outputs = backend_utils.numpy(model.get_layer("bn")(inputs, training=False)).astype("float64")
    negative = np.where(outputs < 0, outputs, np.nan)
    estimate = np.nanmean(negative, axis=0)
    standard_error = np.nanstd(negative, axis=0) / np.sqrt(np.sum(outputs < 0, axis=0))
    margins = teacher_margins(model, "bn")
    assert np.all(np.abs(margins - estimate) < 5 * standard_error), (margins, estimate, standard_error)
    np.testing.assert_allclose(margins, margin_from_bn(gamma, beta), rtol=1e-6)


def test_teacher_margins_without_scale_or_center():
    inputs = keras.Input((3,))
    layer = keras.layers.BatchNormalization(scale=False, center=False, name="bn")
    model = keras.Model(inputs, layer(inputs))
    np.testing.assert_allclose(teacher_margins(model, "bn"), [-math.sqrt(2 / math.pi)] * 3, rtol=1e-12)


def test_finds_the_residual_branch_batch_norm_of_a_resnet_block():
    model = models.get("resnet8", (8, 8, 3), 10)
    # stage2's only block has a projection shortcut (conv + BN): take the residual branch's bn2.
    assert find_batch_norm(model, "stage2_preact").name == "stage2_block1_2_bn"
    assert find_batch_norm(model, "stage1_preact").name == "stage1_block1_2_bn"  # identity shortcut
    assert find_batch_norm(models.get("cnn_tiny", (8, 8, 1), 10), "stage1_preact").name == "stage1_preact"


def test_margins_need_a_batch_norm_before_the_layer():
    model = models.get("cnn_tiny", (8, 8, 1), 10)
    with pytest.raises(ValueError, match=r"'stage1' \(ReLU\).*neither a BatchNormalization"):
        teacher_margins(model, "stage1")
    mlp = models.get("mlp_tiny", (8,), 10)
    with pytest.raises(ValueError, match=r"'stage1_preact' \(Dense\)"):
        teacher_margins(mlp, "stage1_preact")
    with pytest.raises(ValueError, match="has no layer 'nope'"):
        teacher_margins(model, "nope")
    with pytest.raises(ValueError, match="must be a keras.Model"):
        teacher_margins("teacher", "stage1_preact")


def test_margins_need_a_channels_last_batch_norm():
    inputs = keras.Input((3, 4, 4))
    model = keras.Model(inputs, keras.layers.BatchNormalization(axis=1, name="bn")(inputs))
    with pytest.raises(ValueError, match="'bn' normalizes axis 1"):
        teacher_margins(model, "bn")


# The loss


def test_zero_when_student_matches_the_margin_transformed_teacher():
    target = np.maximum(TEACHER, np.asarray(MARGIN, "float32"))
    np.testing.assert_allclose(loss_checks.value(OFDLoss(MARGIN), TEACHER, target), 0.0, atol=1e-12)
    # Below a non-positive target costs nothing either (the partial L2).
    below = np.where(target <= 0, target - np.abs(STUDENT), target)
    np.testing.assert_allclose(loss_checks.value(OFDLoss(MARGIN), TEACHER, below), 0.0, atol=1e-12)
    # The raw teacher is not the target where it lies below the margin.
    assert loss_checks.value(OFDLoss(MARGIN), TEACHER, np.minimum(TEACHER, -2.0)) > 0


def test_hand_computed_case():
    # margin -1; teacher [2, -3, -0.5, -0.5, -3] -> target [2, -1, -0.5, -0.5, -1]
    # student [1, -2, 0.5, -1, 0]: (1-2)^2 [t' > 0] + 0 [s <= t' <= 0] + (0.5+0.5)^2 [s > t']
    # + 0 [s <= t'] + (0+1)^2 [s > t'] = 3.
    teacher = np.array([[2.0, -3.0, -0.5, -0.5, -3.0]], "float32")
    student = np.array([[1.0, -2.0, 0.5, -1.0, 0.0]], "float32")
    np.testing.assert_allclose(loss_checks.value(OFDLoss([-1.0] * 5), teacher, student), 3.0, rtol=1e-6)


def test_matches_reference_formula():
    got = loss_checks.value(OFDLoss(MARGIN), TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT), rtol=1e-5)


@pytest.mark.parametrize("teacher_shape, student_shape", [((3, 4, 4, 2), (3, 2, 2, 2)), ((3, 2, 2, 2), (3, 4, 4, 2))])
def test_pools_larger_map_to_smaller(teacher_shape, student_shape):
    teacher = rng.normal(size=teacher_shape).astype("float32")
    student = rng.normal(size=student_shape).astype("float32")
    got = loss_checks.value(OFDLoss(MARGIN), teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student), rtol=1e-5)


def test_vectors():
    teacher, student = TEACHER.reshape(-1, 2), STUDENT.reshape(-1, 2)
    np.testing.assert_allclose(
        loss_checks.value(OFDLoss(MARGIN), teacher, student), reference(teacher, student), rtol=1e-5
    )


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(OFDLoss(MARGIN), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss = OFDLoss(MARGIN)
    compiled = backend_utils.compiled(lambda t, s: loss(t, s), unknown_batch=True)
    np.testing.assert_allclose(float(compiled(TEACHER, STUDENT)), reference(TEACHER, STUDENT), rtol=1e-5)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(OFDLoss(MARGIN), TEACHER, STUDENT)


def test_gradient_is_zero_where_the_partial_l2_skips():
    # d/ds (s - t')^2 = 2 (s - t'): 2 * (1 - 2) = -2 where t' > 0; 0 where s <= t' <= 0.
    _, grad = loss_checks.student_value_and_gradient(
        OFDLoss([-1.0, -1.0]), np.array([[2.0, -3.0]], "float32"), np.array([[1.0, -2.0]], "float32")
    )
    np.testing.assert_allclose(grad, [[-2.0, 0.0]])


def test_serialization_round_trip():
    loss = OFDLoss(np.array([-0.25, -1.5]), name="ofd")
    assert loss.get_config()["margin"] == [-0.25, -1.5]
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(OFDLoss(MARGIN), TEACHER, STUDENT)


@pytest.mark.parametrize("margin", [[], [0.5], [-1.0, float("nan")], "-1", None, -1.0, [[-1.0]], [True], ["-1"]])
def test_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match=r"`margin` must.*Received: margin=" + re.escape(repr(margin))):
        OFDLoss(margin)


@pytest.mark.parametrize(
    "teacher_shape, student_shape, match",
    [
        ((3, 4, 4, 2), (3, 4, 4, 5), r"\(3, 4, 4, 2\).*\(3, 4, 4, 5\).*conv1x1"),
        ((3, 4, 4, 2), (3, 32), r"\(3, 4, 4, 2\).*\(3, 32\)"),
        ((3, 5, 2), (3, 4, 2), r"\(3, 5, 2\).*\(3, 4, 2\)"),
    ],
)
def test_rejects_incomparable_shapes(teacher_shape, student_shape, match):
    with pytest.raises(ValueError, match=match):
        OFDLoss(MARGIN).check_shapes(teacher_shape, student_shape)


def test_rejects_margins_of_another_layer():
    with pytest.raises(ValueError, match=r"3 margins.*\(3, 4, 4, 2\) \(2 channels\)"):
        OFDLoss([-1.0] * 3)(TEACHER, STUDENT)


def test_default_name_is_keras_style():
    assert OFDLoss(MARGIN).name == "ofd_loss"


def test_from_teacher_reads_the_layer_margins():
    model = bn_model([1.0, 0.5], [0.0, 1.0])
    loss = OFDLoss.from_teacher(model, "bn", name="x")
    assert loss.name == "x"
    np.testing.assert_allclose(loss.margin, margin_from_bn([1.0, 0.5], [0.0, 1.0]))


# In a Distiller


def test_recipe_on_zoo_resnets_reads_margins_from_the_teacher():
    teacher = models.get("resnet20", (32, 32, 3), 10)
    teacher.get_layer("stage3_block3_2_bn").gamma.assign(np.linspace(0.5, 2.0, 64))
    teacher.get_layer("stage3_block3_2_bn").beta.assign(np.linspace(-1.0, 1.0, 64))
    distiller = recipes.distiller("ofd", teacher, models.get("resnet8", (32, 32, 3), 10))
    terms = distiller.terms
    assert [t.teacher_layer for t in terms] == [f"stage{i}_preact" for i in (1, 2, 3)]
    assert [t.student_layer for t in terms] == [f"stage{i}_preact" for i in (1, 2, 3)]
    # 1e-3 / 2^(n - i): the authors' "/ 1000" and per-stage halving.
    assert [t.weight for t in terms] == [2.5e-4, 5e-4, 1e-3]
    assert all(isinstance(distiller.connectors[t.name], keras_kd.connectors.Conv1x1Connector) for t in terms)
    np.testing.assert_allclose(
        terms[2].loss.margin, margin_from_bn(np.linspace(0.5, 2.0, 64), np.linspace(-1.0, 1.0, 64)), rtol=1e-6
    )
    np.testing.assert_allclose(terms[0].loss.margin, [-math.sqrt(2 / math.pi)] * 16, rtol=1e-6)


def test_recipe_needs_the_teacher():
    with pytest.raises(ValueError, match="'ofd' reads constants from the teacher.*teacher="):
        recipes.get("ofd", ["a"], ["a"])


def test_trains_student_and_connector_and_round_trips_through_keras_saving(digits, tmp_path):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:128]
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    distiller = recipes.distiller("ofd", teacher, student, ["bn1", "bn2"], ["bn1", "bn2"])
    distiller.compile("adam", sparse_ce())
    teacher_before = [w.copy() for w in teacher.get_weights()]
    connectors_before = {name: [np.array(w) for w in c.trainable_weights] for name, c in distiller.connectors.items()}
    assert len(connectors_before) == 2
    distiller.fit(images, y[:128], epochs=1, batch_size=64, verbose=0)
    for before, after in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    for name, connector in distiller.connectors.items():
        assert all(
            not np.array_equal(b, np.array(a)) for b, a in zip(connectors_before[name], connector.trainable_weights)
        )
    expected = distiller.evaluate(images, y[:128], verbose=0, return_dict=True)
    path = tmp_path / "ofd.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [t.loss.margin for t in restored.terms] == [t.loss.margin for t in distiller.terms]
    assert [t.weight for t in restored.terms] == [5e-4, 1e-3]
    got = restored.evaluate(images, y[:128], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
