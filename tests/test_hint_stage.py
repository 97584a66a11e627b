"""Two-stage FitNets with the HintStage callback."""

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.callbacks import HintStage
from tests.conftest import cnn, sparse_ce


def _distiller():
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    terms = [
        keras_kd.Term(keras_kd.losses.FitNetLoss(), "block1", "block1", connector="conv1x1", weight=10.0),
        keras_kd.Term(keras_kd.losses.KDLoss(), weight=0.9),
    ]
    distiller = keras_kd.Distiller(teacher, student, terms, student_loss_weight=0.1)
    distiller.compile(keras.optimizers.Adam(1e-2), sparse_ce())
    return distiller


def test_stage_one_trains_only_what_the_hint_reaches(digits):
    x, y = digits
    x = x.reshape(-1, 8, 8, 1)[:128]
    distiller = _distiller()
    student = distiller.student
    upper = [w.copy() for w in student.get_layer("logits").get_weights() + student.get_layer("conv2").get_weights()]
    lower = [w.copy() for w in student.get_layer("conv1").get_weights()]
    stage = HintStage(epochs=1)
    distiller.fit(x, y[:128], epochs=1, batch_size=32, callbacks=[stage], verbose=0)
    after_upper = student.get_layer("logits").get_weights() + student.get_layer("conv2").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(upper, after_upper))
    assert not all(np.array_equal(a, b) for a, b in zip(lower, student.get_layer("conv1").get_weights()))


def test_stage_two_switches_the_hint_off_and_restores_weights(digits):
    x, y = digits
    x = x.reshape(-1, 8, 8, 1)[:128]
    distiller = _distiller()
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append({k: float(v) for k, v in distiller.term_weights.items()})
    )
    history = distiller.fit(x, y[:128], epochs=3, batch_size=32, callbacks=[HintStage(epochs=1), record], verbose=0)
    assert history.history["hint_stage"] == [1, 2, 2]
    assert seen[0] == {"fitnet_loss": 10.0, "kd_loss": 0.0}
    assert seen[1] == {"fitnet_loss": 0.0, "kd_loss": pytest.approx(0.9)}
    # Stage one: the total is the hint term alone.
    assert history.history["loss"][0] == pytest.approx(10.0 * history.history["fitnet_loss"][0], rel=1e-5)
    assert float(distiller.term_weights["fitnet_loss"]) == 10.0  # configured weights are back after fit


def test_hint_stage_validates(digits):
    with pytest.raises(ValueError, match="epochs"):
        HintStage(epochs=0)
    x, y = digits
    distiller = _distiller()
    with pytest.raises(ValueError, match="no hint terms.*nope"):
        distiller.fit(x.reshape(-1, 8, 8, 1)[:32], y[:32], epochs=1, verbose=0, callbacks=[HintStage(1, "nope")])
    assert HintStage.from_config(HintStage(2, ["fitnet_loss"]).get_config()).get_config() == {
        "epochs": 2,
        "hint_terms": ["fitnet_loss"],
        "keep_hints": False,
    }
