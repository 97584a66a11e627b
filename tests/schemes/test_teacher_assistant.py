"""TeacherAssistant (TAKD chain, DGKD dense variant) and StochasticTeachersDistiller."""

import json

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import cli, recipes
from keras_kd.schemes.teacher_assistant import DGKD_DROP_COUNT, StochasticTeachersDistiller, TeacherAssistant
from tests.conftest import mlp, sparse_ce


@pytest.fixture
def small(digits):
    x, y = digits
    return x[:256], y[:256]


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def value(tensor):
    return float(keras.ops.convert_to_numpy(keras.ops.stop_gradient(tensor)))


def weights(model):
    return [np.array(w) for w in model.get_weights()]


def test_chain_trains_each_stage_from_the_previous(trained_teacher, small):
    x, y = small
    assistant, student = mlp(32, "assistant"), mlp(8, "student")
    teacher_before, assistant_before = outputs(trained_teacher, x), outputs(assistant, x)
    chain = TeacherAssistant(trained_teacher, assistant, student)
    history = chain.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)

    assert [r["model"] for r in history] == ["assistant1", "student"]
    assert [r["teachers"] for r in history] == [["teacher"], ["assistant1"]]
    first, second = chain.distillers
    assert first.teacher is trained_teacher and first.student is assistant
    assert second.teacher is assistant and second.student is student  # stage 2 learns from the assistant
    assert not np.allclose(outputs(assistant, x), assistant_before)  # the assistant was trained
    np.testing.assert_allclose(outputs(trained_teacher, x), teacher_before)  # the teacher was not
    # Stage 2 compares the student with the assistant's logits, not the teacher's.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(second.teacher_features(x)["__output__"]), outputs(assistant, x), atol=1e-5
    )
    assert {"kd_loss", "student_loss", "loss"} <= set(history[1]["history"])
    # The kd recipe in every stage (same terms, same supervised weight).
    for distiller in chain.distillers:
        assert [t.name for t in distiller.terms] == ["kd_loss"]
        assert float(distiller.term_weights["kd_loss"]) == pytest.approx(0.9)
        assert distiller.student_loss_weight == pytest.approx(0.1)


def test_chain_equals_distilling_by_hand(trained_teacher, small):
    """The chain is exactly teacher -> assistant, then assistant -> student, with one Distiller each."""
    x, y = small
    keras.utils.set_random_seed(3)
    assistant, student = mlp(32, "assistant"), mlp(8, "student")
    keras.utils.set_random_seed(3)
    assistant_ref, student_ref = mlp(32, "assistant_ref"), mlp(8, "student_ref")
    fit = dict(epochs=2, batch_size=64, verbose=0, shuffle=False)
    chain = TeacherAssistant(trained_teacher, assistant, student)
    chain.fit(x, y, optimizer=lambda stage: keras.optimizers.SGD(0.1), **fit)
    for teacher, model in ((trained_teacher, assistant_ref), (assistant_ref, student_ref)):
        distiller = keras_kd.Distiller(teacher, model, recipes.get("kd"), student_loss_weight=0.1)
        distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
        distiller.fit(x, y, **fit)
    for got, expected in ((assistant, assistant_ref), (student, student_ref)):
        for a, b in zip(weights(got), weights(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_optimizer_instance_is_copied_per_stage(trained_teacher, small):
    x, y = small
    optimizer = keras.optimizers.Adam(1e-3)
    chain = TeacherAssistant(trained_teacher, mlp(32, "assistant"), mlp(8, "student"))
    chain.fit(x, y, epochs=1, optimizer=optimizer, verbose=0)
    first, second = (d.optimizer for d in chain.distillers)
    assert first is not second and first is not optimizer
    assert int(first.iterations) == int(second.iterations) == 8  # 256 examples / batch 32


def test_dense_variant_reads_every_larger_model(trained_teacher, small):
    x, y = small
    big, little, student = mlp(32, "big"), mlp(16, "little"), mlp(8, "student")
    chain = TeacherAssistant(trained_teacher, [big, little], student, dense=True)
    assert list(chain.teachers(1)) == ["teacher"]
    assert chain.teachers(3) == {"teacher": trained_teacher, "assistant1": big, "assistant2": little}
    history = chain.fit(x, y, epochs=1, verbose=0)
    last = chain.distillers[-1]
    assert last.teachers == {"teacher": trained_teacher, "assistant1": big, "assistant2": little}
    assert {t.name: t.teacher for t in last.terms} == {
        "kd_loss_teacher": "teacher",
        "kd_loss_assistant1": "assistant1",
        "kd_loss_assistant2": "assistant2",
    }
    assert {"kd_loss_teacher", "kd_loss_assistant1", "kd_loss_assistant2"} <= set(history[-1]["history"])
    assert [t.name for t in chain.distillers[0].terms] == ["kd_loss"]  # one teacher: plain KD
    # Each term compares the student with its own teacher; the total sums them (DGKD's sum, no average).
    features = last.teacher_features(x[:32])
    for key, model in last.teachers.items():
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(features[key]["__output__"]), outputs(model, x[:32]), atol=1e-5
        )
    step = last(x[:32], training=False)
    total = last.compute_loss(x[:32], y[:32], step, training=False)
    student_loss = last.student_loss(x[:32], y[:32], step["student"]["__output__"], None, training=False)
    kd = {term.name: last.term_value(term, step, y[:32], None, None, False) for term in last.bound_terms}
    expected = 0.1 * value(student_loss) + 0.9 * sum(value(kd[f"kd_loss_{k}"]) for k in last.teachers)
    assert value(total) == pytest.approx(expected, rel=1e-5)


def dense_distiller(teacher, drop_rate=0.0, drop_count=None, seed=0, student=None):
    teachers = {"a": teacher, "b": mlp(16, "b"), "c": mlp(16, "c")}
    terms = [keras_kd.Term(keras_kd.losses.KDLoss(), weight=0.9, teacher=k, name=f"kd_{k}") for k in teachers]
    student = student or mlp(8, "student")
    return StochasticTeachersDistiller(
        teachers, student, terms, drop_rate=drop_rate, drop_count=drop_count, seed=seed, student_loss_weight=0.1
    )


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_drop_rate_drops_each_teacher_at_the_rate(trained_teacher, rate):
    distiller = dense_distiller(trained_teacher, drop_rate=rate)
    masks = np.stack([keras.ops.convert_to_numpy(distiller.keep_mask()) for _ in range(3000)])
    assert set(np.unique(masks)) <= {0.0, 1.0}
    # 3000 Bernoulli draws per teacher: the standard error of the mean is under 0.01.
    np.testing.assert_allclose(masks.mean(0), 1 - rate, atol=0.035)
    assert abs(np.corrcoef(masks[:, 0], masks[:, 1])[0, 1]) < 0.08  # independent per teacher


def test_drop_count_drops_exactly_that_many_uniformly(trained_teacher):
    distiller = dense_distiller(trained_teacher, drop_count=DGKD_DROP_COUNT)
    masks = np.stack([keras.ops.convert_to_numpy(distiller.keep_mask()) for _ in range(3000)])
    np.testing.assert_array_equal(masks.sum(1), 2.0)  # one of three dropped, every draw
    np.testing.assert_allclose(masks.mean(0), 2 / 3, atol=0.035)
    # More than n - 1 asked: one teacher always stays.
    masks = np.stack(
        [keras.ops.convert_to_numpy(dense_distiller(trained_teacher, drop_count=5).keep_mask()) for _ in range(20)]
    )
    np.testing.assert_array_equal(masks.sum(1), 1.0)


def test_drop_rate_zero_and_one_are_exact_in_training(trained_teacher, small):
    x, y = small
    logs = {}
    for rate in (0.0, 1.0):
        distiller = dense_distiller(trained_teacher, drop_rate=rate)
        distiller.compile("adam", sparse_ce())
        history = distiller.fit(x, y, epochs=2, batch_size=64, verbose=0, validation_data=(x[:64], y[:64]))
        logs[rate] = {k: np.array(v) for k, v in history.history.items()}
    full, none = logs[0.0], logs[1.0]
    kd = lambda h, p="": sum(h[f"{p}kd_{k}"] for k in "abc")  # noqa: E731
    np.testing.assert_allclose(full["loss"], 0.1 * full["student_loss"] + 0.9 * kd(full), rtol=1e-4)
    np.testing.assert_allclose(none["loss"], 0.1 * none["student_loss"], rtol=1e-4)  # every term dropped
    # Evaluation never drops.
    np.testing.assert_allclose(none["val_loss"], 0.1 * none["val_student_loss"] + 0.9 * kd(none, "val_"), rtol=1e-4)


def test_dropped_terms_give_no_gradient(trained_teacher, small):
    """drop_rate=1 trains exactly as the supervised loss alone."""
    x, y = small
    keras.utils.set_random_seed(5)
    dropped = dense_distiller(trained_teacher, drop_rate=1.0, student=mlp(8, "s1"))
    keras.utils.set_random_seed(5)
    alone = keras_kd.Distiller(trained_teacher, mlp(8, "s2"), [], student_loss_weight=0.1)
    for model in (dropped, alone):
        model.compile(keras.optimizers.SGD(0.5), sparse_ce())
        model.fit(x, y, epochs=1, batch_size=64, verbose=0, shuffle=False)
    for a, b in zip(weights(dropped.student), weights(alone.student)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dgkd_chain_uses_the_stochastic_distiller_only_with_several_teachers(trained_teacher, small):
    x, y = small
    chain = TeacherAssistant(trained_teacher, mlp(32, "ta"), mlp(8, "student"), dense=True, drop_count=1, seed=3)
    assert type(chain.distiller(1)) is keras_kd.Distiller
    stage2 = chain.distiller(2)
    assert isinstance(stage2, StochasticTeachersDistiller) and stage2.drop_count == 1 and stage2.seed == 5
    chain.fit(x, y, epochs=1, verbose=0)
    assert np.all(np.isfinite(chain.distillers[1].history.history["loss"]))


def test_stochastic_distiller_config_round_trip(trained_teacher):
    distiller = dense_distiller(trained_teacher, drop_count=1, seed=7)
    config = distiller.get_config()
    assert (config["drop_rate"], config["drop_count"], config["seed"]) == (0.0, 1, 7)
    restored = StochasticTeachersDistiller.from_config(json.loads(json.dumps(config)))
    assert (restored.drop_rate, restored.drop_count, restored.seed) == (0.0, 1, 7)
    assert list(restored.teachers) == ["a", "b", "c"]
    assert [t.teacher for t in restored.terms] == ["a", "b", "c"]
    assert restored.student_loss_weight == 0.1


def test_term_list_and_callable_are_fresh_per_stage(trained_teacher, small):
    x, y = small
    term = keras_kd.Term(keras_kd.losses.KDLoss(temperature=2.0), weight=0.5)
    chain = TeacherAssistant(trained_teacher, mlp(32, "ta"), mlp(8, "student"), terms=[term], dense=True)
    assert chain.student_loss_weight == 1.0
    d1, d2 = chain.distiller(1), chain.distiller(2)
    losses = [t.loss for t in d1.terms + d2.terms]
    assert len({id(loss) for loss in losses}) == 3 and term.loss not in losses
    assert all(float(keras.ops.convert_to_numpy(loss.temperature)) == 2.0 for loss in losses)
    calls = []

    def terms(teacher, model):
        calls.append((teacher.name, model.name))
        return recipes.get("dist")

    chain = TeacherAssistant(trained_teacher, mlp(32, "ta"), mlp(8, "student"), terms=terms, student_loss_weight=0.5)
    chain.fit(x, y, epochs=1, verbose=0)
    assert calls == [("teacher", "ta"), ("ta", "student")]
    assert [t.name for t in chain.distillers[1].terms] == ["dist_loss"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop_rate": 1.5, "dense": True}, "drop_rate=1.5"),
        ({"drop_rate": -0.1, "dense": True}, "drop_rate=-0.1"),
        ({"drop_count": 0, "dense": True}, "drop_count=0"),
        ({"drop_count": 1.5, "dense": True}, "drop_count=1.5"),
        ({"drop_count": 1, "drop_rate": 0.5, "dense": True}, "not both"),
        ({"drop_rate": 0.5}, "dense=True"),
        ({"dense": "yes"}, "dense='yes'"),
        ({"terms": "nope"}, "'nope'"),
        ({"terms": 3}, "terms=3"),
        ({"student_loss_weight": -1}, "student_loss_weight=-1"),
        ({"seed": "a"}, "seed='a'"),
        ({"assistants": []}, "assistants=[]"),
        ({"assistants": "ta"}, "assistants='ta'"),
    ],
)
def test_bad_arguments_raise_naming_the_value(trained_teacher, kwargs, message):
    arguments = {"assistants": mlp(16, "ta"), **kwargs}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        TeacherAssistant(trained_teacher, student=mlp(8, "student"), **arguments)


def test_bad_models_and_terms_raise(trained_teacher):
    student = mlp(8, "student")
    with pytest.raises(ValueError, match="distinct"):
        TeacherAssistant(trained_teacher, student, student)
    with pytest.raises(ValueError, match="assistant1 must be a keras.Model"):
        TeacherAssistant(trained_teacher, ["ta"], student)
    bound = keras_kd.Term(keras_kd.losses.KDLoss(), teacher="teacher")
    with pytest.raises(ValueError, match="kd_loss"):
        TeacherAssistant(trained_teacher, mlp(16, "ta"), student, terms=[bound])
    chain = TeacherAssistant(trained_teacher, mlp(16, "ta"), student)
    with pytest.raises(ValueError, match="stage=3"):
        chain.teachers(3)
    with pytest.raises(ValueError, match="drop_rate=2"):
        dense_distiller(trained_teacher, drop_rate=2)


def test_scheme_recipes(trained_teacher):
    ta, student = mlp(16, "ta"), mlp(8, "student")
    takd = recipes.scheme("teacher_assistant", trained_teacher, ta, student)
    assert isinstance(takd, TeacherAssistant) and not takd.dense
    dgkd = recipes.scheme("dgkd", trained_teacher, [ta], student)
    assert dgkd.dense and dgkd.drop_count == DGKD_DROP_COUNT
    for name in ("teacher_assistant", "dgkd"):
        info = recipes.describe_scheme(name)
        assert "Teacher Assistant" in info["paper"] and info["build"].endswith("TeacherAssistant")
    assert recipes.describe_scheme("dgkd")["constants"]["dense"] is True


def test_cli_assistant_runs_the_chain_and_reports_every_stage(tmp_path, capsys):
    output = tmp_path / "run"
    args = ["distill", "--epochs", "1", "--limit", "120", "--verbose", "0", "--student", "cnn_tiny", "--method", "kd"]
    assert cli.main([*args, "--assistant", "cnn_small", "--output", str(output)]) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["status"] == "complete" and report["config"]["assistant"] == "cnn_small"
    assert list(report["models"]) == ["teacher", "scratch", "assistant1", "distilled"]
    assert report["models"]["assistant1"]["architecture"] == "cnn_small"
    assert report["stages"]["assistant1"]["teacher"] == "teacher"
    assert {"kd_loss", "val_accuracy"} <= set(report["histories"]["assistant1"])
    assert (output / "assistant1.keras").exists()
    assistant = keras.saving.load_model(output / "assistant1.keras", compile=False)
    assert assistant.count_params() == report["models"]["assistant1"]["params"]
    out = capsys.readouterr().out
    assert "assistant 1" in out and "cnn_small" in out
    assert "assistant 1" in (output / "report.md").read_text()
    # A .keras assistant: its architecture and weights, trained again from the teacher.
    second = tmp_path / "run2"
    assert cli.main([*args, "--assistant", str(output / "assistant1.keras"), "--output", str(second)]) == 0
    report = json.loads((second / "report.json").read_text())
    assert report["models"]["assistant1"]["params"] == assistant.count_params()


def test_cli_rejects_an_unknown_assistant(tmp_path, capsys):
    assert cli.main(["distill", "--assistant", "nope", "--output", str(tmp_path / "x")]) == 2
    assert "'nope'" in capsys.readouterr().err
