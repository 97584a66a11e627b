"""Consistent teaching / function matching (Beyer et al. 2022): the Distiller's
`augmentation`, applied once per batch to what both models see, and MixUp."""

import re
import warnings

import keras
import numpy as np
import pytest
import scipy.stats

import keras_kd
from keras_kd import recipes
from keras_kd.augmentation import MixUp, beta_ratio
from keras_kd.losses import KDLoss
from tests import backend_utils
from tests.conftest import cnn, sparse_ce

BATCH = 32


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class Record(keras.layers.Layer):
    """Identity that stores the last batch it saw (static batch size)."""

    def build(self, input_shape):
        self.seen = self.add_weight(shape=input_shape, initializer="zeros", trainable=False, name="seen")

    def call(self, inputs):
        self.seen.assign(inputs)
        return inputs


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class CountingShift(keras.layers.Layer):
    """Adds 1 to its input in training mode; counts every call (any mode)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False, name="calls")

    def call(self, inputs, training=None):
        self.calls.assign_add(1.0)
        return inputs + 1.0 if training else inputs


def recording_mlp(name):
    inputs = keras.Input((64,), batch_size=BATCH)
    record = Record(name="record")
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(record(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden), name=name), record


def solve_mix(mixed, x):
    """(ratio, shift) with mixed[i] = ratio * x[i] + (1 - ratio) * x[(i + shift) % B] for every i,
    by least squares over every shift; returns the best one and its residual."""
    flat_mixed, flat_x = mixed.reshape(len(x), -1), x.reshape(len(x), -1)
    best = None
    for shift in range(len(x)):
        partner = np.roll(flat_x, -shift, axis=0)
        a, b = (flat_x - partner).ravel(), (flat_mixed - partner).ravel()
        ratio = float(a @ b / (a @ a)) if a @ a > 0 else 1.0
        residual = float(np.max(np.abs(ratio * flat_x + (1 - ratio) * partner - flat_mixed)))
        if best is None or residual < best[2]:
            best = (ratio, shift, residual)
    return best


# ---------------------------------------------------------------- MixUp


def test_mixup_output_is_a_convex_combination_of_two_batch_images():
    x = np.random.default_rng(0).random((8, 4, 4, 3)).astype("float32")
    mixup = MixUp(alpha=1.0, seed=1)
    for _ in range(3):  # a new ratio and partner each call
        mixed = np.asarray(mixup(x, training=True))
        assert mixed.shape == x.shape and mixed.dtype == np.float32
        ratio, shift, residual = solve_mix(mixed, x)
        assert residual < 1e-5
        assert 0.5 <= ratio <= 1.0 and shift != 0  # the larger share is the image's own; never itself
        assert not np.allclose(mixed, x)


def test_mixup_per_example_ratios_lie_in_unit_interval():
    x = np.random.default_rng(1).random((16, 5)).astype("float32")  # vectors: any rank
    mixup = MixUp(alpha=0.4, per_example=True, seed=2)
    ratio, partner = (np.asarray(t) for t in mixup.draw(16))
    assert ratio.shape == (16,) and np.all((ratio >= 0.5) & (ratio <= 1.0)) and len(set(ratio.round(6))) > 1
    assert sorted(partner) == list(range(16)) and np.all(partner != np.arange(16))
    mixed = np.asarray(mixup(x, training=True))
    for i in range(16):
        # Each mixed vector lies on the segment from another example x[j] to x[i], in its upper half.
        best = None
        for j in set(range(16)) - {i}:
            direction = x[i] - x[j]
            t = float(direction @ (mixed[i] - x[j]) / (direction @ direction))
            residual = float(np.max(np.abs(x[j] + t * direction - mixed[i])))
            best = min(best or (np.inf, 0.0), (residual, t))
        residual, t = best
        assert residual < 1e-5 and 0.5 - 1e-6 <= t <= 1.0 + 1e-6


def test_mixup_mixes_one_hot_labels_with_the_same_ratio_and_partner():
    rng = np.random.default_rng(3)
    x = rng.random((6, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, 6)]
    mixed_x, mixed_y = MixUp(seed=4)(x, y, training=True)
    ratio, shift, residual = solve_mix(np.asarray(mixed_x), x)
    assert residual < 1e-5
    np.testing.assert_allclose(mixed_y, ratio * y + (1 - ratio) * np.roll(y, -shift, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="one-hot or soft labels"):
        MixUp()(x, np.arange(6), training=True)
    with pytest.raises(ValueError, match="floating inputs"):
        MixUp()(np.arange(6), training=True)


def test_mixup_is_the_identity_outside_training():
    x = np.random.default_rng(5).random((4, 3)).astype("float32")
    mixup = MixUp(seed=0)
    np.testing.assert_array_equal(mixup(x), x)
    np.testing.assert_array_equal(mixup(x, training=False), x)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_beta_ratio_follows_the_beta_distribution(alpha):
    samples = np.asarray(beta_ratio((20000,), alpha, seed=7), dtype="float64")
    assert scipy.stats.kstest(samples, scipy.stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    # A wrong concentration is told apart: the test has power.
    assert scipy.stats.kstest(samples, scipy.stats.beta(2 * alpha, 2 * alpha).cdf).pvalue < 1e-3


def test_mixup_compiles_under_xla():
    mixup = MixUp(seed=0)
    # The seed generator's state advances inside the compiled step (written back on JAX).
    step = backend_utils.compiled(lambda x: mixup(x, training=True), variables=[mixup.seed_generator.state])
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype("float32")
    first, second = backend_utils.numpy(step(x)), backend_utils.numpy(step(x))
    assert solve_mix(first, x)[2] < 1e-5 and not np.allclose(first, second)


@pytest.mark.parametrize(
    "kwargs, match", [({"alpha": 0.0}, "alpha"), ({"alpha": -1.0}, "alpha"), ({"seed": "one"}, "seed='one'")]
)
def test_mixup_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MixUp(**kwargs)


# ---------------------------------------------------------------- the Distiller's augmentation


def test_teacher_and_student_see_the_same_augmented_batch(digits):
    x, y = digits
    x, y = x[:BATCH], y[:BATCH]
    teacher, teacher_record = recording_mlp("teacher")
    student, student_record = recording_mlp("student")
    distiller = keras_kd.Distiller(
        teacher, student, [KDLoss(temperature=1.0)], student_loss_weight=0.0, augmentation=MixUp(seed=3)
    )
    distiller.compile(keras.optimizers.SGD(0.1), sparse_ce())
    for _ in range(2):
        distiller.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)  # one step
        seen_by_teacher, seen_by_student = np.array(teacher_record.seen), np.array(student_record.seen)
        np.testing.assert_array_equal(seen_by_teacher, seen_by_student)
        ratio, shift, residual = solve_mix(seen_by_student, x)
        assert residual < 1e-5 and 0.5 <= ratio < 1.0 and shift != 0


def test_augmentation_runs_once_per_training_batch_and_never_in_evaluation(digits):
    x, y = digits
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    images = x.reshape(-1, 8, 8, 1)[:192]
    shift = CountingShift()
    distiller = keras_kd.Distiller(teacher, student, [KDLoss()], augmentation=shift)
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    distiller.fit(images, y[:192], epochs=2, batch_size=64, verbose=0)
    assert float(shift.calls) == 6.0  # 3 batches x 2 epochs
    logs = distiller.evaluate(images, y[:192], batch_size=192, verbose=0, return_dict=True)
    predictions = distiller.predict(images, verbose=0)
    assert float(shift.calls) == 6.0  # evaluate and predict never augment
    np.testing.assert_allclose(predictions, student.predict(images, verbose=0), rtol=1e-6)
    expected = KDLoss()(teacher.predict(images, verbose=0), student.predict(images, verbose=0))
    np.testing.assert_allclose(logs["kd_loss"], float(expected), rtol=1e-5)


def test_a_plain_callable_augmentation_feeds_both_models(digits):
    x, y = digits
    x, y = x[:BATCH], y[:BATCH]
    teacher, teacher_record = recording_mlp("teacher")
    student, student_record = recording_mlp("student")
    distiller = keras_kd.Distiller(teacher, student, [KDLoss()], augmentation=lambda batch: 1.0 - batch)
    distiller.compile("sgd", sparse_ce())
    distiller.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    np.testing.assert_allclose(np.array(teacher_record.seen), 1.0 - x, rtol=1e-6)
    np.testing.assert_allclose(np.array(student_record.seen), 1.0 - x, rtol=1e-6)


@pytest.mark.parametrize("value", [3, "mixup", [MixUp()]])
def test_augmentation_must_be_callable(value):
    with pytest.raises(ValueError, match="augmentation=" + re.escape(repr(value))):
        keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), [KDLoss()], augmentation=value)


def test_mixup_labels_follow_the_supervised_weight(digits):
    x, y = digits
    images, labels = x.reshape(-1, 8, 8, 1)[:128], y[:128]
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    # Sparse labels cannot be mixed: refused while the supervised loss is on.
    distiller = keras_kd.Distiller(teacher, student, [KDLoss()], student_loss_weight=0.5, augmentation=MixUp())
    distiller.compile("adam", sparse_ce())
    with pytest.raises(ValueError, match="student_loss_weight=0"):
        distiller.fit(images, labels, epochs=1, batch_size=64, verbose=0)
    # One-hot labels are mixed with the images, for a CategoricalCrossentropy.
    distiller = keras_kd.Distiller(teacher, student, [KDLoss()], student_loss_weight=0.5, augmentation=MixUp())
    distiller.compile("adam", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = distiller.fit(images, np.eye(10, dtype="float32")[labels], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["student_loss"][0]) and history.history["student_loss"][0] > 0


def test_teacher_cache_refuses_augmentation(digits):
    x, y = digits
    distiller = keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), [KDLoss()], augmentation=MixUp())
    distiller.compile("adam", sparse_ce())
    with pytest.raises(ValueError, match="TeacherCache"):
        distiller.fit(
            x.reshape(-1, 8, 8, 1)[:64], y[:64], batch_size=32, shuffle=False, verbose=0,
            callbacks=[keras_kd.callbacks.TeacherCache()],
        )


def test_distiller_with_a_layer_augmentation_round_trips_a_keras_file(digits, tmp_path):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:128]
    distiller = keras_kd.Distiller(
        cnn(8, "teacher"), cnn(4, "student"), [KDLoss(temperature=1.0)], student_loss_weight=0.0,
        augmentation=MixUp(alpha=0.4, per_example=True, seed=11),
    )
    distiller.compile("adam", sparse_ce())
    distiller.fit(images, y[:128], epochs=1, batch_size=64, verbose=0)
    distiller.save(tmp_path / "fm.keras")
    restored = keras.saving.load_model(tmp_path / "fm.keras")
    assert isinstance(restored.augmentation, MixUp)
    mixup = restored.augmentation
    assert (mixup.alpha, mixup.per_example, mixup.seed) == (0.4, True, 11)
    np.testing.assert_allclose(restored.predict(images, verbose=0), distiller.predict(images, verbose=0), rtol=1e-5)
    history = restored.fit(images, y[:128], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_plain_callable_is_not_saved_and_says_so(tmp_path):
    distiller = keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), [KDLoss()], augmentation=lambda b: b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.save(tmp_path / "plain.keras")
    assert any("not saved" in str(w.message) for w in caught)
    assert keras.saving.load_model(tmp_path / "plain.keras").augmentation is None


# ---------------------------------------------------------------- the recipe


def test_function_matching_recipe_builds_and_trains_under_xla(digits):
    from keras_kd import models

    x, y = digits
    teacher = models.get("cnn_large", (8, 8, 1), 10)
    student = models.get("cnn_tiny", (8, 8, 1), 10)
    distiller = recipes.distiller("function_matching", teacher, student)
    assert isinstance(distiller.augmentation, MixUp) and distiller.augmentation.alpha == 1.0
    assert not distiller.augmentation.per_example
    (term,) = distiller.terms
    assert isinstance(term.loss, KDLoss) and float(np.asarray(term.loss.temperature)) == 1.0 and term.weight == 1.0
    assert distiller.student_loss_weight == 0.0
    assert "Beyer" in recipes.describe("function_matching")["source"]
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce(), jit_compile=True)
    before = [np.array(v) for v in student.trainable_weights]
    history = distiller.fit(x.reshape(-1, 8, 8, 1)[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    assert np.isfinite(history.history["kd_loss"][0])
    assert any(not np.array_equal(b, np.array(a)) for b, a in zip(before, student.trainable_weights))
    # Other recipes get no augmentation.
    assert recipes.distiller("kd", teacher, models.get("cnn_tiny", (8, 8, 1), 10)).augmentation is None


def test_benchmark_summary_pairs_rows_by_seed():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import function_matching as benchmark

    accuracies = {"scratch": [0.80, 0.82], "kd": [0.85, 0.81], "function_matching": [0.86, 0.80]}
    rows = [{"dataset": "digits", "method": "teacher", "accuracy": 0.97}] + [
        {"dataset": "digits", "schedule": "short", "seed": seed, "method": method, "accuracy": value}
        for method, values in accuracies.items()
        for seed, value in enumerate(values)
    ]
    result = {
        "config": {"pairs": [["cnn_large", "cnn_small"]], "teacher_epochs": 3},
        "schedules": {"short": {"epochs": 2, "seeds": [0, 1]}},
        "num_train": 10,
        "num_test": 10,
        "rows": rows,
    }
    stats = benchmark.summarize(result)["short"]
    np.testing.assert_allclose(stats["kd"]["mean"], 83.0)
    np.testing.assert_allclose(stats["function_matching_minus_kd"]["per_seed"], [1.0, -1.0], atol=1e-9)
    assert stats["function_matching_minus_kd"]["verdict"] == "is level with plain KD on average but not on every seed"
    assert stats["function_matching_minus_scratch"]["verdict"].startswith("is ahead of scratch")  # +6, -2
    assert stats["function_matching_minus_scratch"]["wins"] == 1
    table = benchmark.markdown({"digits": result})
    assert "| digits | cnn_large → cnn_small | short, 2 ep | kd | 85.00, 81.00 | 83.00 | 2.83 |" in table
