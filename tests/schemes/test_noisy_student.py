import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd.schemes.noisy_student import NoisyStudent
from tests.conftest import mlp


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def teacher_logits(teacher, x):
    return np.asarray(teacher(x, training=False), "float64")


def same_size(name="student"):
    return lambda r: mlp(64, f"{name}{r}", dropout=0.2)


@pytest.fixture
def split(digits):
    x, y = digits
    return (x[:200], y[:200]), x[200:600], (x[1200:1500], y[1200:1500])


def test_hard_labels_are_the_teachers_argmax(trained_teacher, digits):
    x = digits[0][:300]
    scheme = NoisyStudent(trained_teacher, same_size(), pseudo_labels="hard")
    out = scheme.label(trained_teacher, x)
    expected = teacher_logits(trained_teacher, x).argmax(-1)
    np.testing.assert_array_equal(out["index"], np.arange(300))
    np.testing.assert_array_equal(out["targets"], np.eye(10)[expected])
    np.testing.assert_array_equal(out["classes"], expected)
    assert out["stats"]["per_class"] == np.bincount(expected, minlength=10).tolist()


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_soft_labels_are_the_teachers_softmax_at_temperature(trained_teacher, digits, temperature):
    x = digits[0][:300]
    out = NoisyStudent(trained_teacher, same_size(), temperature=temperature).label(trained_teacher, x)
    expected = softmax(teacher_logits(trained_teacher, x) / temperature)
    np.testing.assert_allclose(out["targets"], expected, rtol=1e-4, atol=1e-6)
    assert out["targets"].dtype == np.float32


def test_threshold_drops_exactly_the_low_confidence_inputs(trained_teacher, digits):
    x = digits[0][:400]
    confidence = softmax(teacher_logits(trained_teacher, x)).max(-1)
    threshold = float(np.quantile(confidence, 0.4))  # about 40% fall below it
    out = NoisyStudent(trained_teacher, same_size(), threshold=threshold).label(trained_teacher, x)
    expected = np.flatnonzero(confidence >= threshold)
    assert 0 < len(expected) < len(x)
    np.testing.assert_array_equal(out["index"], expected)
    assert out["stats"]["kept"] == out["stats"]["used"] == len(expected) and out["stats"]["unlabeled"] == 400
    np.testing.assert_allclose(out["stats"]["mean_confidence"], confidence[expected].mean(), rtol=1e-4)


@pytest.mark.parametrize("balance", [True, 25])
def test_balancing_gives_equal_counts_keeping_the_most_confident(trained_teacher, digits, balance):
    x = digits[0][:250]
    logits = teacher_logits(trained_teacher, x)
    classes, confidence = logits.argmax(-1), softmax(logits).max(-1)
    counts = np.bincount(classes, minlength=10)
    out = NoisyStudent(trained_teacher, same_size(), balance=balance, pseudo_labels="hard").label(trained_teacher, x)
    target = int(np.ceil(250 / np.count_nonzero(counts))) if balance is True else balance
    per_class = np.bincount(out["classes"], minlength=10)
    assert all(per_class[k] == (target if counts[k] else 0) for k in range(10))
    assert counts.max() > target > counts[counts > 0].min()  # both cases occur
    np.testing.assert_array_equal(classes[out["index"]], out["classes"])
    for k in range(10):
        chosen, members = out["index"][out["classes"] == k], np.flatnonzero(classes == k)
        if counts[k] >= target:  # large class: its `target` most confident images, once each
            assert len(set(chosen)) == target
            assert confidence[chosen].min() >= np.sort(confidence[members])[-target]
        elif counts[k]:  # small class: every image, duplicated
            assert set(chosen) == set(members)


def test_the_teacher_is_never_trained_and_labels_in_inference_mode(trained_teacher, split):
    labeled, unlabeled, _ = split
    before = [np.array(w) for w in trained_teacher.weights]  # BatchNorm moving statistics included
    scheme = NoisyStudent(trained_teacher, same_size(), pseudo_labels="soft")
    labels = scheme.label(trained_teacher, unlabeled)
    # Dropout (0.2) and BatchNorm in training mode would change the outputs (run on a copy: a training-mode
    # call also updates the BatchNorm statistics).
    copy = keras.models.clone_model(trained_teacher)
    copy.set_weights(trained_teacher.get_weights())
    in_training_mode = softmax(np.asarray(copy(unlabeled, training=True), "float64"))
    np.testing.assert_allclose(labels["targets"], softmax(teacher_logits(trained_teacher, unlabeled)), atol=1e-5)
    assert np.abs(labels["targets"] - in_training_mode).max() > 1e-3
    scheme.run(labeled, unlabeled, epochs=1, batch_size=64)
    for b, a in zip(before, trained_teacher.weights):
        np.testing.assert_array_equal(np.array(a), b)


def test_noise_reaches_the_student_inputs_only(trained_teacher, split):
    labeled, unlabeled, validation = split
    calls = []

    def blank(batch):  # replaces every input: a teacher seeing it would give one label for all
        calls.append(tuple(batch.shape))
        return tf.zeros_like(batch)

    scheme = NoisyStudent(trained_teacher, same_size(), pseudo_labels="hard", noise=blank)
    student, history = scheme.run(labeled, unlabeled, epochs=1, batch_size=64, validation_data=validation)
    assert calls and all(len(shape) == 2 and shape[1] == 64 for shape in calls)
    clean = teacher_logits(trained_teacher, unlabeled).argmax(-1)
    assert history[0]["pseudo_labels"]["per_class"] == np.bincount(clean, minlength=10).tolist()
    assert np.count_nonzero(history[0]["pseudo_labels"]["per_class"]) == 10
    x_val, y_val = validation
    expected = float(np.mean(teacher_logits(trained_teacher, x_val).argmax(-1) == y_val))
    assert history[0]["teacher_accuracy"] == pytest.approx(expected) and expected > 0.5
    # The pipeline fed to fit carries the noised inputs with the clean targets.
    targets = np.eye(10, dtype="float32")[clean]
    for x_batch, y_batch in scheme.training_data(unlabeled, targets, batch_size=100, shuffle=False):
        assert not np.any(x_batch.numpy())
        assert y_batch.shape == (100, 10)


def test_shift_noise_translates_each_image_by_at_most_one_pixel(digits):
    images = digits[0][:64].reshape(-1, 8, 8, 1)
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    scheme = NoisyStudent(teacher, lambda r: teacher, noise="shift", seed=3)
    ((x_batch, _),) = scheme.training_data(images, np.zeros((64, 10), "float32"), batch_size=64, shuffle=False)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = np.stack([padded[:, i : i + 8, j : j + 8] for i in range(3) for j in range(3)], 1)
    matches = np.all(np.isclose(shifts, x_batch.numpy()[:, None]), axis=(2, 3, 4))
    assert matches.any(axis=1).all()  # every image is one of its 9 shifts
    assert not matches[:, 4].all()  # and not all of them are the unshifted one


def test_rounds_chain_and_students_can_grow(trained_teacher, split):
    labeled, unlabeled, validation = split
    rounds = []

    def student_fn(r):
        rounds.append(r)
        return mlp(64 + 16 * r, f"student{r}")

    optimizer = keras.optimizers.Adam(1e-3)
    scheme = NoisyStudent(trained_teacher, student_fn, rounds=2, threshold=0.3, seed=0)
    final, history = scheme.run(labeled, unlabeled, epochs=1, batch_size=64, optimizer=optimizer)
    assert rounds == [1, 2] and [h["round"] for h in history] == [1, 2]
    assert history[0]["teacher"] is trained_teacher
    assert history[1]["teacher"] is history[0]["student"] and final is history[1]["student"]
    assert history[0]["student_params"] < history[1]["student_params"]
    first, second = (h["student"].optimizer for h in history)
    assert first is not second and first is not optimizer  # a fresh clone for each student
    assert history[0]["teacher_accuracy"] is None
    assert history[1]["pseudo_labels"]["kept"] <= history[1]["pseudo_labels"]["unlabeled"] == len(unlabeled)


def test_a_smaller_student_is_refused_unless_allowed(trained_teacher, split):
    labeled, unlabeled, _ = split
    small = lambda r: mlp(16, "small")  # noqa: E731
    teacher_count, small_count = trained_teacher.count_params(), small(1).count_params()
    scheme = NoisyStudent(trained_teacher, small)
    with pytest.raises(ValueError, match=rf"{small_count:,} parameters.*{teacher_count:,}"):
        scheme.run(labeled, unlabeled)
    _, history = NoisyStudent(trained_teacher, small, allow_smaller_student=True).run(labeled, unlabeled, epochs=1)
    assert history[0]["student_params"] == small_count < teacher_count


def test_one_round_on_digits_trains_the_student(trained_teacher, digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    # No BatchNorm in the student: 4 short epochs leave BatchNorm moving statistics unsettled. 72 hidden units
    # keep it larger than the teacher (64 units with BatchNorm).
    student_fn = lambda r: mlp(72, "student", dropout=0.2, batch_norm=False)  # noqa: E731
    scheme = NoisyStudent(trained_teacher, student_fn, pseudo_labels="soft", threshold=0.3, seed=0)
    student, history = scheme.run(
        (x[:300], y[:300]), x[300:1200], epochs=4, batch_size=64, optimizer=keras.optimizers.Adam(3e-3),
        validation_data=(x[1200:], y[1200:]), compile_kwargs={"metrics": ["categorical_accuracy"]},
    )  # fmt: skip
    losses = history[0]["history"]["loss"]
    # Soft targets: the loss cannot fall below their entropy, so require a steady fall, not a small value.
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.3
    assert history[0]["student_accuracy"] > 0.8 and "val_categorical_accuracy" in history[0]["history"]


def test_tf_data_inputs_give_the_same_pseudo_labels(trained_teacher, split):
    labeled, unlabeled, _ = split
    scheme = NoisyStudent(trained_teacher, same_size())
    _, from_arrays = scheme.run(labeled, unlabeled, epochs=1)
    _, from_data = scheme.run(
        tf.data.Dataset.from_tensor_slices(labeled).batch(50), tf.data.Dataset.from_tensor_slices(unlabeled), epochs=1
    )
    assert from_data[0]["pseudo_labels"] == from_arrays[0]["pseudo_labels"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rounds": 0}, "rounds=0"),
        ({"rounds": 1.5}, "rounds=1.5"),
        ({"pseudo_labels": "argmax"}, r"\['soft', 'hard'\].*'argmax'"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"threshold": 1.0}, r"\[0, 1\).*threshold=1.0"),
        ({"threshold": -0.1}, "threshold=-0.1"),
        ({"balance": 0}, "balance=0"),
        ({"balance": "yes"}, "balance='yes'"),
        ({"noise": "randaugment"}, r"\['shift'\].*'randaugment'"),
        ({"noise": 3}, "noise=3"),
        ({"allow_smaller_student": 1}, "allow_smaller_student=1"),
        ({"predict_batch_size": 0}, "predict_batch_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"student_fn": None}, "student_fn=None"),
        ({"teacher": "resnet8"}, "built keras.Model.*'resnet8'"),
    ],
)
def test_rejects_bad_arguments(trained_teacher, kwargs, match):
    arguments = {"teacher": trained_teacher, "student_fn": same_size(), **kwargs}
    with pytest.raises(ValueError, match=match):
        NoisyStudent(**arguments)


@pytest.mark.parametrize(
    "labeled, unlabeled, kwargs, match",
    [
        (lambda x, y: (x, np.eye(12)[y % 12]), lambda x: x, {}, r"one-hot \(N, 10\)"),
        (lambda x, y: (x, y + 5), lambda x: x, {}, r"class ids in \[0, 10\)"),
        (lambda x, y: (x, y[:-1]), lambda x: x, {}, "200 inputs but 199 labels"),
        (lambda x, y: (x[:, :32], y), lambda x: x, {}, r"labeled inputs have shape \(200, 32\)"),
        (lambda x, y: (x, y), lambda x: x.reshape(-1, 8, 8), {}, r"unlabeled inputs have shape \(400, 8, 8\)"),
        (lambda x, y: (x, y), lambda x: (x, x), {}, "array of inputs"),
        (lambda x, y: (x, y), lambda x: x, {"epochs": 0}, "epochs=0"),
        (lambda x, y: (x, y), lambda x: x, {"optimizer": 3}, "optimizer=3"),
        (lambda x, y: (x, y), lambda x: x, {"compile_kwargs": {"loss": "mse"}}, r"\['loss'\]"),
        (lambda x, y: (x, y), lambda x: x, {"callbacks": ["stop"]}, "callbacks"),
        (lambda x, y: (x, y), lambda x: x, {"validation_data": (np.zeros((3, 64)), [0, 1])}, "3 inputs but 2"),
    ],
)
def test_run_validates_inputs_before_any_training(trained_teacher, split, labeled, unlabeled, kwargs, match):
    (x, y), x_unlabeled, _ = split
    built = []
    scheme = NoisyStudent(trained_teacher, lambda r: built.append(r) or mlp(64, "student"))
    with pytest.raises(ValueError, match=match):
        scheme.run(labeled(x, y), unlabeled(x_unlabeled), **kwargs)
    assert not built


def test_students_must_match_the_teachers_classes_and_inputs(trained_teacher, split):
    labeled, unlabeled, _ = split
    with pytest.raises(ValueError, match="outputs 5 logits but the teacher outputs 10"):
        NoisyStudent(trained_teacher, lambda r: mlp(64, "s", classes=5), allow_smaller_student=True).run(
            labeled, unlabeled
        )
    with pytest.raises(ValueError, match="sharing weights with its teacher"):
        NoisyStudent(trained_teacher, lambda r: trained_teacher).run(labeled, unlabeled)
