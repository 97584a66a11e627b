import re

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import recipes
from keras_kd.losses.fsp import FSPLoss
from keras_kd.losses.gram import GramLoss
from tests import loss_checks
from tests.conftest import cnn, sparse_ce
from tests.losses.feature_reference import to_nchw

rng = np.random.default_rng(13)
TEACHER = rng.normal(size=(3, 4, 4, 2)).astype("float32")
STUDENT = rng.normal(size=(3, 4, 4, 2)).astype("float32")


def gram(features):
    """Gatys et al.'s G = F F^T (F: C x positions), divided by the positions, per example."""
    f = np.asarray(features, "float64")
    f = to_nchw(f) if f.ndim == 4 else np.transpose(f, (0, 2, 1))
    f = f.reshape(len(f), f.shape[1], -1)
    return f @ np.transpose(f, (0, 2, 1)) / f.shape[-1]


def per_example_reference(teacher, student):
    return ((gram(student) - gram(teacher)) ** 2).mean(axis=(1, 2))


def test_zero_when_student_matches_teacher():
    loss_checks.assert_zero_when_equal(GramLoss(), TEACHER)


def test_zero_for_the_same_statistics_at_other_positions_and_sizes():
    # G ignores where a feature vector is: shuffled positions, or every position repeated 2x2.
    shuffled = TEACHER.reshape(3, 16, 2)[:, rng.permutation(16)].reshape(3, 4, 4, 2)
    repeated = np.repeat(np.repeat(TEACHER, 2, axis=1), 2, axis=2)
    for student in (shuffled, repeated):
        np.testing.assert_allclose(loss_checks.value(GramLoss(), TEACHER, student), 0.0, atol=1e-6)
    assert loss_checks.value(GramLoss(), TEACHER, 2 * TEACHER) > 0


def test_hand_computed_case():
    # One channel, two positions: G_t = (1 + 9) / 2 = 5, G_s = (4 + 0) / 2 = 2: (2 - 5)^2 = 9.
    teacher = np.array([[[1.0], [3.0]]], "float32")
    student = np.array([[[2.0], [0.0]]], "float32")
    np.testing.assert_allclose(loss_checks.value(GramLoss(), teacher, student), 9.0, rtol=1e-6)


def test_matches_reference_formula():
    got = loss_checks.value(GramLoss(), TEACHER, STUDENT)
    np.testing.assert_allclose(got, per_example_reference(TEACHER, STUDENT).mean(), rtol=1e-5)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [((3, 8, 8, 3), (3, 4, 4, 3)), ((3, 2, 3, 3), (3, 5, 5, 3)), ((3, 6, 3), (3, 4, 3)), ((3, 4, 4, 3), (3, 7, 3))],
)
def test_spatial_sizes_may_differ(teacher_shape, student_shape):
    teacher = rng.normal(size=teacher_shape).astype("float32")
    student = rng.normal(size=student_shape).astype("float32")
    got = loss_checks.value(GramLoss(), teacher, student)
    np.testing.assert_allclose(got, per_example_reference(teacher, student).mean(), rtol=1e-5)


def test_equals_fsp_of_a_layer_with_itself():
    teacher = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    student = rng.normal(size=(3, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(
        loss_checks.value(GramLoss(), teacher, student),
        float(FSPLoss()((teacher, teacher), (student, student))),
        rtol=1e-6,
    )


def test_sample_weight_weights_examples():
    weights = np.array([0.5, 2.0, 0.0], "float32")
    got = loss_checks.value(GramLoss(), TEACHER, STUDENT, sample_weight=weights)
    expected = (weights * per_example_reference(TEACHER, STUDENT)).sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_same_value_under_xla_with_unknown_batch():
    loss_checks.assert_same_under_xla(GramLoss(), TEACHER, STUDENT, unknown_batch=True)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(GramLoss(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss_checks.assert_serializable(GramLoss(name="style"), TEACHER, STUDENT)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(GramLoss(), TEACHER, STUDENT)


def test_rejects_different_channels_and_suggests_connector():
    with pytest.raises(ValueError, match=r"\(3, 4, 4, 2\).*\(3, 4, 4, 5\).*conv1x1"):
        GramLoss()(TEACHER, np.zeros((3, 4, 4, 5), "float32"))


@pytest.mark.parametrize(
    "teacher_shape, student_shape", [((3, 2), (3, 2)), ((3, 4, 4, 2), (3, 2)), ((1, 1, 4, 4, 2), (1, 1, 4, 4, 2))]
)
def test_rejects_ranks_without_positions(teacher_shape, student_shape):
    pattern = re.escape(str(teacher_shape)) + ".*" + re.escape(str(student_shape))
    with pytest.raises(ValueError, match=pattern):
        GramLoss().check_shapes(teacher_shape, student_shape)


def test_default_name_is_keras_style():
    assert GramLoss().name == "gram_loss"


def test_recipe_trains_connector_and_round_trips_through_keras_saving(digits, tmp_path):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:128]
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    distiller = recipes.distiller("gram", teacher, student, ["block1", "block2"], ["block1", "block2"])
    assert [t.weight for t in distiller.terms] == [recipes.RECIPES["gram"].weight] * 2
    assert all(isinstance(c, keras_kd.connectors.Conv1x1Connector) for c in distiller.connectors.values())
    distiller.compile("adam", sparse_ce())
    kernels = {name: np.array(c.conv.kernel) for name, c in distiller.connectors.items()}
    distiller.fit(images, y[:128], epochs=1, batch_size=64, verbose=0)
    assert all(not np.array_equal(kernels[name], np.array(c.conv.kernel)) for name, c in distiller.connectors.items())
    expected = distiller.evaluate(images, y[:128], verbose=0, return_dict=True)
    path = tmp_path / "gram.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [type(t.loss) for t in restored.terms] == [GramLoss, GramLoss]
    got = restored.evaluate(images, y[:128], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
