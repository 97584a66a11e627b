"""Multi-teacher distillation: the ensemble of softened outputs, terms bound
to one teacher, and the errors that name what is wrong."""

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.distiller import ensemble_logits
from tests.conftest import mlp, sparse_ce


def softmax(z, temperature):
    z = np.asarray(z, "float64") / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_ensemble_logits_average_the_softened_outputs(temperature):
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(5, 7)) * 3 for _ in range(3)]
    weights = [0.5, 0.3, 0.2]
    combined = np.asarray(ensemble_logits([z.astype("float32") for z in logits], weights, temperature))
    expected = sum(w * softmax(z, temperature) for w, z in zip(weights, logits))
    np.testing.assert_allclose(softmax(combined, temperature), expected, atol=1e-6)


@pytest.fixture
def teachers(digits):
    x, y = digits
    built = {}
    for seed, key in enumerate(("a", "b")):
        keras.utils.set_random_seed(seed)
        teacher = mlp(32 + 16 * seed, f"teacher_{key}")
        teacher.compile("adam", sparse_ce())
        teacher.fit(x[:600], y[:600], epochs=2, verbose=0)
        built[key] = teacher
    return built


def test_output_term_distills_the_weighted_ensemble(teachers, digits):
    x, y = digits
    student = mlp(8, "student")
    distiller = keras_kd.Distiller(
        teachers, student, [keras_kd.losses.KDLoss(temperature=4.0)], teacher_weights={"a": 3.0, "b": 1.0}
    )
    assert distiller.teacher_weights == {"a": 0.75, "b": 0.25}
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    distiller.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    logs = distiller.evaluate(x[:256], y[:256], batch_size=256, return_dict=True, verbose=0)
    ensemble = ensemble_logits(
        [teachers[key].predict(x[:256], verbose=0) for key in ("a", "b")], [0.75, 0.25], temperature=4.0
    )
    expected = keras_kd.losses.KDLoss(temperature=4.0)(ensemble, student.predict(x[:256], verbose=0))
    assert logs["kd_loss"] == pytest.approx(float(expected), rel=1e-4)


def test_terms_bound_to_one_teacher(teachers, digits):
    x, y = digits
    before = {key: [w.copy() for w in t.get_weights()] for key, t in teachers.items()}
    student = mlp(8, "student")
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(), teacher="a", name="kd_from_a"),
        keras_kd.Term(keras_kd.losses.FitNetLoss(), "hidden", "hidden", connector="linear", teacher="b"),
    ]
    distiller = keras_kd.Distiller(teachers, student, terms)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    history = distiller.fit(x[:256], y[:256], epochs=1, batch_size=64, verbose=0).history
    assert {"kd_from_a", "fitnet_loss", "student_loss"} <= set(history)
    for key, teacher in teachers.items():
        for old, new in zip(before[key], teacher.get_weights()):
            np.testing.assert_array_equal(old, new)
    features = distiller.teacher_features(x[:4])
    assert set(features) == {"a", "b"} and "hidden" in features["b"] and "hidden" not in features["a"]


def test_a_list_of_teachers_is_keyed_in_order(teachers):
    student = mlp(8, "student")
    distiller = keras_kd.Distiller(
        [teachers["a"], teachers["b"]], student, [keras_kd.Term(keras_kd.losses.KDLoss(), teacher="teacher2")]
    )
    assert list(distiller.teachers) == ["teacher1", "teacher2"]
    assert distiller.teachers["teacher2"] is teachers["b"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"terms": [keras_kd.Term(keras_kd.losses.KDLoss(), teacher="c")]}, r"reads teacher 'c'.*\['a', 'b'\]"),
        ({"terms": [keras_kd.Term(keras_kd.losses.FitNetLoss(), "hidden", "hidden")]}, "name the teacher"),
        ({"teacher_weights": [1.0]}, "one non-negative weight per teacher"),
        ({"teacher_weights": {"a": 1.0, "z": 1.0}}, "must be the teachers"),
    ],
)
def test_bad_multi_teacher_setups(teachers, kwargs, message):
    kwargs = {"terms": [keras_kd.losses.KDLoss()], **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_kd.Distiller(teachers, mlp(8, "student"), **kwargs)


def test_the_student_cannot_be_a_teacher(teachers):
    student = mlp(8, "student")
    with pytest.raises(ValueError, match="different models"):
        keras_kd.Distiller({**teachers, "c": student}, student, [keras_kd.losses.KDLoss()])


def test_multi_teacher_distiller_round_trips(teachers, digits, tmp_path):
    x, y = digits
    student = mlp(8, "student")
    terms = [keras_kd.losses.KDLoss(), keras_kd.Term(keras_kd.losses.LogitMSELoss(), teacher="b")]
    distiller = keras_kd.Distiller(teachers, student, terms, teacher_weights=[1.0, 2.0])
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    distiller.fit(x[:128], y[:128], epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    restored = keras.saving.load_model(tmp_path / "d.keras")
    assert list(restored.teachers) == ["a", "b"] and restored.teacher_weights == distiller.teacher_weights
    expected = distiller.evaluate(x[:128], y[:128], return_dict=True, verbose=0)
    actual = restored.evaluate(x[:128], y[:128], return_dict=True, verbose=0)
    for key in ("kd_loss", "logit_mse_loss", "student_loss"):
        assert actual[key] == pytest.approx(expected[key], rel=1e-5)
