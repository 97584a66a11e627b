"""Early-stopped teachers (Cho & Hariharan, ICCV 2019): TeacherCheckpoints
and the ESKD preset of WeightScheduler (WeightEarlyStop)."""

import json
import warnings

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.callbacks import TeacherCheckpoints, WeightEarlyStop, WeightScheduler
from tests import backend_utils
from tests.conftest import mlp, sparse_ce


@pytest.fixture
def small(digits):
    x, y = digits
    return x[:192], y[:192]


class Snapshots(keras.callbacks.Callback):
    """The model's weights at the end of every epoch, by epoch counted from 1."""

    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = [np.array(w) for w in self.model.get_weights()]


def test_checkpoints_saved_at_the_chosen_epochs_and_loadable(small, tmp_path):
    x, y = small
    model = mlp(16, "teacher")
    model.compile("adam", sparse_ce())
    checkpoints, snapshots = TeacherCheckpoints([3, 1], tmp_path / "ckpt"), Snapshots()
    model.fit(x, y, epochs=4, batch_size=64, verbose=0, callbacks=[checkpoints, snapshots])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["teacher_epoch1.keras", "teacher_epoch3.keras"]
    assert checkpoints.paths == {1: str(tmp_path / "ckpt" / "teacher_epoch1.keras"), 3: checkpoints.path(3)}
    for epoch in (1, 3):
        loaded = keras.saving.load_model(checkpoints.paths[epoch], compile=False)
        for a, b in zip(loaded.get_weights(), snapshots.weights[epoch]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(
            loaded.predict(x[:8], verbose=0), backend_utils.numpy(loaded(x[:8], training=False)), atol=1e-6
        )
    assert not np.allclose(snapshots.weights[1][0], snapshots.weights[3][0])  # the epochs differ


def test_checkpoints_of_a_distiller_save_the_student_at_absolute_epochs(trained_teacher, small, tmp_path):
    x, y = small
    student = mlp(8, "student")
    distiller = keras_kd.Distiller(trained_teacher, student, keras_kd.recipes.get("kd"), student_loss_weight=0.1)
    distiller.compile("adam", sparse_ce())
    checkpoints = TeacherCheckpoints(3, tmp_path, prefix="student")
    distiller.fit(x, y, initial_epoch=2, epochs=4, verbose=0, callbacks=[checkpoints])
    assert list(checkpoints.paths) == [3]
    loaded = keras.saving.load_model(tmp_path / "student_epoch3.keras", compile=False)
    assert loaded.count_params() == student.count_params() and loaded.name == "student"


def test_checkpoints_warn_about_epochs_never_reached(small, tmp_path):
    x, y = small
    model = mlp(8, "teacher")
    model.compile("adam", sparse_ce())
    checkpoints = TeacherCheckpoints([2, 5], tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoints])
    assert list(checkpoints.paths) == [2]
    assert any("[5]" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": 0}, "epochs=0"),
        ({"epochs": []}, r"epochs=\[\]"),
        ({"epochs": [1, "a"]}, r"epochs=\[1, 'a'\]"),
        ({"epochs": True}, "epochs=True"),
        ({"epochs": 1, "prefix": ""}, "prefix=''"),
        ({"epochs": 1, "prefix": "a/b"}, "prefix='a/b'"),
    ],
)
def test_checkpoints_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TeacherCheckpoints(**kwargs)


def test_checkpoints_config_round_trip(tmp_path):
    callback = TeacherCheckpoints([10, 5, 10], tmp_path, prefix="t")
    config = callback.get_config()
    assert config == {"epochs": [5, 10], "folder": str(tmp_path), "prefix": "t"}
    assert TeacherCheckpoints.from_config(json.loads(json.dumps(config))).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert isinstance(restored, TeacherCheckpoints) and restored.get_config() == config


def _kd_distiller(teacher, weight=0.9):
    terms = [keras_kd.Term(keras_kd.losses.KDLoss(), weight=weight)]
    distiller = keras_kd.Distiller(teacher, mlp(8, "student"), terms, student_loss_weight=0.1)
    distiller.compile("adam", sparse_ce())
    return distiller


def test_early_stop_puts_the_weight_to_zero_after_the_fraction(trained_teacher, small):
    x, y = small
    distiller = _kd_distiller(trained_teacher)
    callback = WeightScheduler.early_stop("kd_loss", 0.5)
    assert isinstance(callback, WeightEarlyStop)
    history = distiller.fit(x, y, epochs=4, batch_size=64, verbose=0, callbacks=[callback]).history
    assert callback.stop_epoch == 2
    np.testing.assert_allclose(history["kd_loss_weight"], [0.9, 0.9, 0.0, 0.0])
    assert float(distiller.term_weights["kd_loss"]) == 0.0
    loss, student_loss, kd = (np.array(history[k]) for k in ("loss", "student_loss", "kd_loss"))
    np.testing.assert_allclose(loss[2:], 0.1 * student_loss[2:], rtol=1e-4)  # the KD term is off
    np.testing.assert_allclose(loss[:2], 0.1 * student_loss[:2] + 0.9 * kd[:2], rtol=1e-4)
    # A second fit starts again from the term's configured weight, not from the variable's 0.
    history = distiller.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback]).history
    np.testing.assert_allclose(history["kd_loss_weight"], [0.9, 0.0])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"fraction": 1.0}, [0.9] * 4),
        ({"fraction": 0.25, "epochs": 8}, [0.9, 0.9, 0.0, 0.0]),  # its own run length, not fit's
        ({"fraction": 0.3}, [0.9, 0.0, 0.0, 0.0]),  # 1.2 epochs round to 1
        ({"fraction": 0.5, "weight": 2.0}, [2.0, 2.0, 0.0, 0.0]),
    ],
)
def test_early_stop_lengths_and_weights(trained_teacher, small, kwargs, expected):
    x, y = small
    history = _kd_distiller(trained_teacher).fit(
        x, y, epochs=4, verbose=0, callbacks=[WeightEarlyStop("kd_loss", **kwargs)]
    ).history
    np.testing.assert_allclose(history["kd_loss_weight"], expected)


def test_early_stop_of_the_supervised_loss_and_unknown_terms(trained_teacher, small):
    x, y = small
    history = _kd_distiller(trained_teacher).fit(
        x, y, epochs=2, verbose=0, callbacks=[WeightEarlyStop("student_loss", 0.5)]
    ).history
    np.testing.assert_allclose(history["student_loss_weight"], [0.1, 0.0])
    with pytest.raises(ValueError, match="'at_loss'"):
        _kd_distiller(trained_teacher).fit(x, y, epochs=1, verbose=0, callbacks=[WeightEarlyStop("at_loss", 0.5)])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fraction": 0}, "fraction=0"),
        ({"fraction": 1.5}, "fraction=1.5"),
        ({"fraction": True}, "fraction=True"),
        ({"fraction": 0.5, "epochs": 0}, "epochs=0"),
        ({"fraction": 0.5, "epochs": 2.5}, "epochs=2.5"),
        ({"fraction": 0.5, "weight": -1.0}, "weight=-1.0"),
        ({"fraction": 0.5, "weight": "0.9"}, "weight='0.9'"),
    ],
)
def test_early_stop_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightScheduler.early_stop("kd_loss", **kwargs)


def test_early_stop_config_round_trip():
    callback = WeightScheduler.early_stop("kd_loss", 0.5, epochs=60, weight=0.9)
    config = callback.get_config()
    assert config == {"term": "kd_loss", "fraction": 0.5, "epochs": 60, "weight": 0.9}
    assert callback.stop_epoch == 30
    restored = WeightEarlyStop.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config and restored.stop_epoch == 30
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert isinstance(restored, WeightEarlyStop) and restored.get_config() == config
    assert WeightEarlyStop("kd_loss", 1 / 3, epochs=10).stop_epoch == 3
