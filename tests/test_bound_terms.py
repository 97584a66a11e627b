"""One record per term (`BoundTerm`), and a Distiller that never mutates
what the caller passed: losses, terms and the teacher's `trainable` flag."""

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd.bound_term import BoundTerm, LoggedTerm
from keras_kd.callbacks import TemperatureScheduler, WeightScheduler
from tests.conftest import mlp, sparse_ce


def _models():
    return mlp(32, "teacher"), mlp(8, "student")


def _value(variable):
    return float(keras.ops.convert_to_numpy(variable))


def test_each_term_owns_its_weight_temperature_connector_and_tracker():
    teacher, student = _models()
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.7),
        keras_kd.Term(keras_kd.losses.FitNetLoss(), "hidden", "hidden", weight=0.3, connector="linear"),
    ]
    distiller = keras_kd.Distiller(teacher, student, terms)
    kd, fitnet = distiller.bound_terms
    assert isinstance(kd, BoundTerm) and kd.name == "kd_loss" and kd.tracker.name == "kd_loss"
    assert _value(kd.weight) == pytest.approx(0.7) and _value(kd.temperature) == pytest.approx(4.0)
    assert kd.connector is None and fitnet.temperature is None
    assert isinstance(fitnet.connector, keras.layers.Layer)
    # The compatibility views read the same objects, they hold no state of their own.
    assert distiller.term_weights["fitnet_loss"] is fitnet.weight
    assert distiller.temperatures == {"kd_loss": kd.temperature}
    assert distiller.connectors == {"fitnet_loss": fitnet.connector}
    assert distiller.bound_term("kd_loss") is kd
    with pytest.raises(KeyError, match="No term named 'nope'.*kd_loss"):
        distiller.bound_term("nope")


def test_the_callers_loss_is_not_mutated():
    loss = keras_kd.losses.KDLoss(temperature=4.0)
    keras_kd.Distiller(*_models(), [loss])
    assert loss.temperature == 4.0 and not isinstance(loss.temperature, keras.Variable)


def test_one_loss_in_two_terms_gets_two_independent_temperatures(digits):
    x, y = digits
    loss = keras_kd.losses.KDLoss(temperature=4.0)
    terms = [keras_kd.Term(loss, name="hot"), keras_kd.Term(loss, name="cold")]
    distiller = keras_kd.Distiller(*_models(), terms)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    scheduler = TemperatureScheduler("linear", start=4.0, end=1.0, epochs=2, terms=["cold"])
    distiller.fit(x[:64], y[:64], epochs=3, batch_size=32, verbose=0, callbacks=[scheduler])
    assert _value(distiller.bound_term("cold").temperature) == pytest.approx(1.0)
    assert _value(distiller.bound_term("hot").temperature) == pytest.approx(4.0)


def test_a_later_distiller_starts_at_the_configured_temperature(digits):
    x, y = digits
    loss = keras_kd.losses.KDLoss(temperature=4.0)
    first = keras_kd.Distiller(*_models(), [loss])
    first.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    first.fit(x[:64], y[:64], epochs=2, verbose=0, callbacks=[TemperatureScheduler("constant", start=1.5)])
    assert _value(first.bound_term("kd_loss").temperature) == pytest.approx(1.5)
    second = keras_kd.Distiller(*_models(), [loss])
    assert _value(second.bound_term("kd_loss").temperature) == pytest.approx(4.0)


def test_a_weight_schedule_moves_only_its_own_distiller(digits):
    x, y = digits
    term = keras_kd.Term(keras_kd.losses.KDLoss(), weight=1.0)
    first, second = keras_kd.Distiller(*_models(), [term]), keras_kd.Distiller(*_models(), [term])
    first.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    first.fit(x[:64], y[:64], epochs=2, verbose=0, callbacks=[WeightScheduler("kd_loss", "constant", start=0.0)])
    assert _value(first.bound_term("kd_loss").weight) == 0.0
    assert _value(second.bound_term("kd_loss").weight) == 1.0 and term.weight == 1.0


def test_the_teacher_keeps_its_trainable_flag_and_still_trains_afterwards(digits):
    x, y = digits
    teacher, student = _models()
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()])
    assert teacher.trainable
    teacher_ids = {id(v) for v in teacher.variables}
    assert not teacher_ids & {id(v) for v in distiller.trainable_variables}
    assert teacher_ids <= {id(v) for v in distiller.non_trainable_variables}
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    before = [np.array(w) for w in teacher.get_weights()]
    distiller.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert all(np.array_equal(b, a) for b, a in zip(before, teacher.get_weights()))
    # The teacher is the caller's model again: fitting it trains it.
    teacher.compile(keras.optimizers.Adam(1e-2), sparse_ce())
    teacher.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert any(not np.array_equal(b, a) for b, a in zip(before, teacher.get_weights()))


def test_a_scheme_term_is_scheduled_and_logged(digits):
    x, y = digits
    distiller = keras_kd.Distiller(*_models(), [keras_kd.losses.KDLoss()])
    extra = distiller.add_term("extra_loss", 0.5)
    assert isinstance(extra, LoggedTerm) and distiller.term_weights["extra_loss"] is extra.weight
    with pytest.raises(ValueError, match="'kd_loss' exists already"):
        distiller.add_term("kd_loss", 1.0)
    with pytest.raises(ValueError, match="weight"):
        distiller.add_term("negative", -1.0)


def test_a_bound_term_round_trips_through_its_config():
    term = keras_kd.Term(keras_kd.losses.KDLoss(temperature=2.0), weight=0.25, name="soft")
    bound = BoundTerm(term)
    restored = BoundTerm.from_config(bound.get_config())
    assert restored.name == "soft" and _value(restored.weight) == 0.25
    assert _value(restored.temperature) == pytest.approx(2.0)
