"""TemperatureScheduler and WeightScheduler: the values they set, their
logs, and a train step that is traced once while they change."""

import math

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.callbacks import TemperatureScheduler, WeightScheduler, schedule_value
from tests.backend_utils import BACKEND
from tests.conftest import mlp, sparse_ce


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"schedule": "constant", "start": 4.0}, [4.0, 4.0, 4.0, 4.0]),
        ({"schedule": "step", "start": 8.0, "step_size": 2, "gamma": 0.5}, [8.0, 8.0, 4.0, 4.0]),
        ({"schedule": "linear", "start": 8.0, "end": 2.0, "epochs": 3}, [8.0, 5.0, 2.0, 2.0]),
        ({"schedule": "cosine", "start": 8.0, "end": 2.0, "epochs": 3}, [8.0, 5.0, 2.0, 2.0]),
        ({"schedule": "exponential", "start": 8.0, "gamma": 0.5, "end": 1.5}, [8.0, 4.0, 2.0, 1.5]),
        ({"schedule": lambda epoch: 1.0 + epoch, "start": None}, [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_schedule_values(kwargs, expected):
    values = [schedule_value(epoch=epoch, **kwargs) for epoch in range(4)]
    np.testing.assert_allclose(values, expected)


def test_cosine_is_half_way_at_the_middle():
    assert schedule_value("cosine", 2, 10.0, 0.0, 5) == pytest.approx(5.0)
    assert schedule_value("cosine", 1, 10.0, 0.0, 5) == pytest.approx(5.0 * (1 + math.cos(math.pi / 4)))


def _distiller(digits, terms):
    x, y = digits
    teacher = mlp(32, "teacher")
    teacher(x[:1])
    student = mlp(8, "student")
    distiller = keras_kd.Distiller(teacher, student, terms, student_loss_weight=0.5)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    traces = []
    compute = distiller.compute_loss

    def counting(*args, **kwargs):
        if kwargs.get("training", True):
            traces.append(1)  # Python runs here only while tracing
        return compute(*args, **kwargs)

    distiller.compute_loss = counting
    return distiller, x[:128], y[:128], traces


def first_epoch_traces(traces):
    """A callback recording how many traces the first epoch made; later
    epochs must add none (Keras itself traces the step twice at first)."""
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(len(traces)))
    return callback, seen


def assert_traced_in_first_epoch_only(seen, steps_per_epoch):
    if BACKEND == "torch":
        # Keras' torch trainer runs the step eagerly: Python runs once per
        # step, so the values must come from variables read at every step.
        assert seen == [steps_per_epoch * (epoch + 1) for epoch in range(len(seen))]
    else:
        assert seen[0] >= 1 and seen == [seen[0]] * len(seen)


def test_temperature_scheduler_sets_logs_and_does_not_retrace(digits):
    distiller, x, y, traces = _distiller(digits, [keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0))])
    scheduler = TemperatureScheduler("linear", start=8.0, end=2.0, epochs=3)
    counter, seen = first_epoch_traces(traces)
    history = distiller.fit(x, y, epochs=3, batch_size=32, callbacks=[scheduler, counter], verbose=0)
    assert history.history["temperature"] == [8.0, 5.0, 2.0]
    assert float(distiller.temperatures["kd_loss"]) == 2.0
    assert_traced_in_first_epoch_only(seen, steps_per_epoch=4)
    # The loss now uses T=2: the Distiller's value matches a fresh KDLoss(2).
    logs = distiller.evaluate(x, y, batch_size=128, return_dict=True, verbose=0)
    teacher_logits = distiller.teacher.predict(x, verbose=0)
    student_logits = distiller.student.predict(x, verbose=0)
    expected = float(keras_kd.losses.KDLoss(temperature=2.0)(teacher_logits, student_logits))
    assert logs["kd_loss"] == pytest.approx(expected, rel=1e-4)


def test_temperature_scheduler_picks_terms(digits):
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0)),
        keras_kd.Term(keras_kd.losses.DISTLoss(temperature=1.0)),
    ]
    distiller, x, y, _ = _distiller(digits, terms)
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[TemperatureScheduler(start=3.0, terms="kd_loss")])
    assert float(distiller.temperatures["kd_loss"]) == 3.0 and float(distiller.temperatures["dist_loss"]) == 1.0
    with pytest.raises(ValueError, match="No temperature term named \\['nope'\\]"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[TemperatureScheduler(start=3.0, terms="nope")])


def test_weight_scheduler_warms_up_a_term_without_retracing(digits):
    distiller, x, y, traces = _distiller(digits, [keras_kd.Term(keras_kd.losses.KDLoss(), weight=1.0)])
    warm_up = WeightScheduler("kd_loss", "linear", start=0.0, end=1.0, epochs=3)
    counter, seen = first_epoch_traces(traces)
    history = distiller.fit(x, y, epochs=3, batch_size=32, callbacks=[warm_up, counter], verbose=0).history
    assert history["kd_loss_weight"] == [0.0, 0.5, 1.0]
    # Epoch 1: the KD term has weight 0, so the total is the weighted supervised loss alone.
    assert history["loss"][0] == pytest.approx(0.5 * history["student_loss"][0], rel=1e-5)
    assert history["loss"][2] == pytest.approx(0.5 * history["student_loss"][2] + history["kd_loss"][2], rel=1e-5)
    assert_traced_in_first_epoch_only(seen, steps_per_epoch=4)


def test_weight_scheduler_on_the_supervised_loss(digits):
    distiller, x, y, _ = _distiller(digits, [keras_kd.losses.KDLoss()])
    scheduler = WeightScheduler("student_loss", "step", start=1.0, step_size=1, gamma=0.1)
    history = distiller.fit(x, y, epochs=2, batch_size=32, callbacks=[scheduler], verbose=0).history
    np.testing.assert_allclose(history["student_loss_weight"], [1.0, 0.1])
    np.testing.assert_allclose(float(distiller.student_loss_weight_variable), 0.1)


def test_bad_schedules_fail_before_training(digits):
    with pytest.raises(ValueError, match="schedule.*'triangle'"):
        TemperatureScheduler("triangle")
    with pytest.raises(ValueError, match="needs `end` and a positive integer `epochs`"):
        WeightScheduler("kd_loss", "linear", end=1.0)
    with pytest.raises(ValueError, match="step_size"):
        TemperatureScheduler("step", start=4.0, gamma=0.5)
    distiller, x, y, traces = _distiller(digits, [keras_kd.Term(keras_kd.losses.FitNetLoss(), "hidden", "hidden", connector="linear")])
    with pytest.raises(ValueError, match="temperature term"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[TemperatureScheduler()])
    with pytest.raises(ValueError, match="No term named 'kd_loss' to schedule. Available: \\['student_loss', 'fitnet_loss'\\]"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[WeightScheduler("kd_loss", "constant", start=1.0)])
    assert not traces  # nothing was trained
    with pytest.raises(ValueError, match="must be > 0"):
        TemperatureScheduler("linear", start=2.0, end=0.0, epochs=2).value_at(1)


@pytest.mark.parametrize(
    "callback",
    [
        TemperatureScheduler("cosine", start=8.0, end=2.0, epochs=10, terms=["kd_loss"]),
        WeightScheduler("at_loss", "exponential", start=1.0, gamma=0.9),
    ],
)
def test_schedulers_serialize(callback):
    config = callback.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is type(callback) and restored.get_config() == config


def test_weight_warm_up_round_trips_and_sizes_itself_from_fit(digits):
    from keras_kd.callbacks import WeightWarmUp, warmup_epochs

    assert [warmup_epochs(20 / 240, n) for n in (240, 30, 18, 6, 1)] == [20, 3, 2, 1, 1]
    warmup = WeightWarmUp("kd_loss", weight=0.8, fraction=0.5)
    restored = WeightWarmUp.from_config(warmup.get_config())
    assert (restored.term, restored.weight, restored.fraction, restored.run_epochs) == ("kd_loss", 0.8, 0.5, None)
    distiller, x, y, _ = _distiller(digits, [keras_kd.Term(keras_kd.losses.KDLoss(), weight=0.8)])
    history = distiller.fit(x, y, epochs=4, batch_size=128, callbacks=[restored], verbose=0)
    np.testing.assert_allclose(history.history["kd_loss_weight"], [0.4, 0.8, 0.8, 0.8])
