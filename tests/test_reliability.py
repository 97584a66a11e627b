"""Bad inputs and faults the Distiller meets before or during training:
a clear error before the first step, or the right behaviour."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_kd
from tests.conftest import mlp, sparse_ce


class NaNOnLargeTeacher(keras_kd.losses.DistillationLoss):
    """The student's mean logit on ordinary batches; NaN, with a NaN
    gradient, on a batch where the teacher's logits exceed 1e4."""

    def call(self, teacher, student):
        marker = ops.max(ops.abs(teacher)) > 1e4
        return ops.where(marker, math.nan, 1.0) * ops.mean(student, axis=-1)


def test_a_non_finite_term_skips_its_update_and_is_named(digits):
    x, y = digits
    x, y = x[:128].copy(), y[:128]
    x[64:96] *= 1e6  # batch 2 (of 4): the teacher's logits explode there
    teacher, student = mlp(32, "teacher"), mlp(8, "student", batch_norm=False)
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.Term(NaNOnLargeTeacher(), name="exploding")])
    distiller.compile(keras.optimizers.SGD(1e-3), sparse_ce())
    with pytest.raises(FloatingPointError, match="'exploding' became nan at batch 2 of epoch 1"):
        distiller.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert all(np.isfinite(w).all() for w in student.get_weights())


def test_the_skip_leaves_finite_batches_unchanged(digits):
    """The wrapper only skips: on finite batches the step is the optimizer's own."""
    x, y = digits
    runs = []
    for stop_on_nan in (True, False):
        keras.utils.set_random_seed(3)
        teacher, student = mlp(32, "teacher"), mlp(8, "student")
        distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()], stop_on_nan=stop_on_nan)
        distiller.compile(keras.optimizers.Adam(1e-2), sparse_ce())
        distiller.fit(x[:256], y[:256], batch_size=32, epochs=2, shuffle=False, verbose=0)
        runs.append(student.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_nothing_to_train_with_no_terms_and_no_student_loss_weight(digits, trained_teacher):
    x, y = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(8, "student"), [], student_loss_weight=0.0)
    distiller.compile("adam", sparse_ce())
    with pytest.raises(ValueError, match="no terms and student_loss_weight=0"):
        distiller.fit(x[:64], y[:64], epochs=1, verbose=0)


def test_unlabelled_data_with_compiled_metrics_distils_and_warns_once(digits, trained_teacher):
    x, _ = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(8, "student"), [keras_kd.losses.KDLoss()])
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(x[:128], epochs=2, batch_size=32, verbose=0)
        logs = distiller.evaluate(x[:64], verbose=0, return_dict=True)
    assert set(history.history) == {"loss", "student_loss", "kd_loss"} == set(logs)
    assert history.history["kd_loss"][-1] < history.history["kd_loss"][0]
    assert sum("compiled metrics ['accuracy'] are not computed" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: keras_kd.Term(keras_kd.losses.KDLoss(), weight=math.nan), "weight"),
        (lambda: keras_kd.Term(keras_kd.losses.KDLoss(), weight=math.inf), "weight"),
        (lambda: keras_kd.losses.KDLoss(temperature=math.nan), "temperature"),
        (lambda: keras_kd.losses.DKDLoss(alpha=math.inf), "alpha"),
        (lambda: keras_kd.Distiller(mlp(16, "t"), mlp(8, "s"), [], student_loss_weight=math.nan), "student_loss_weight"),
    ],
)
def test_non_finite_settings_are_refused_where_given(build, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number. Received: {name}=(nan|inf)"):
        build()


@pytest.mark.parametrize(
    "labels, loss, message",
    [
        (lambda y: y + 5, sparse_ce(), r"class ids in \[0, 9\].*from 5 to 14"),
        (lambda y: -y - 1, "sparse_categorical_crossentropy", r"class ids in \[0, 9\].*from -10 to -1"),
        (lambda y: np.eye(10, dtype="float32")[y], sparse_ce(), "look one-hot"),
        (lambda y: y, keras.losses.CategoricalCrossentropy(from_logits=True), "one-hot or soft labels of 10"),
    ],
)
def test_labels_that_cannot_train_the_student_are_refused_before_training(digits, trained_teacher, labels, loss, message):
    x, y = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(8, "student"), [keras_kd.losses.KDLoss()])
    distiller.compile("adam", loss)
    with pytest.raises(ValueError, match=message):
        distiller.fit(x[:64], labels(y[:64]), epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x[:64], labels(y[:64]))).batch(32)
    with pytest.raises(ValueError, match=message):
        distiller.fit(dataset, epochs=1, verbose=0)


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="the check is for the other backends")
def test_a_tf_distribute_scope_is_refused_on_other_backends():
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        with pytest.raises(RuntimeError, match="tf.distribute strategy .*DataParallel.* needs the TensorFlow backend"):
            keras_kd.Distiller(mlp(16, "t"), mlp(8, "s"), [keras_kd.losses.KDLoss()])


def test_a_schedule_that_turns_invalid_later_fails_before_the_first_step(digits):
    x, y = digits
    distiller = keras_kd.Distiller(mlp(16, "t"), mlp(8, "s"), [keras_kd.losses.KDLoss()])
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce())
    weights = [np.array(w) for w in distiller.student.get_weights()]
    falling = keras_kd.callbacks.TemperatureScheduler("linear", start=4.0, end=-2.0, epochs=4)
    with pytest.raises(ValueError, match="temperature 0.0 at epoch 3; it must be > 0"):
        distiller.fit(x[:64], y[:64], epochs=5, verbose=0, callbacks=[falling])
    assert all(np.array_equal(a, b) for a, b in zip(weights, distiller.student.get_weights()))  # no step ran
    with pytest.raises(ValueError, match="`end` must be a finite number"):
        keras_kd.callbacks.WeightScheduler("kd_loss", "linear", start=1.0, end=math.nan, epochs=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantize": "int4"}, "`quantize` must be one of"),
        ({"monitor": ""}, "`monitor` must be a log key"),
        ({"path": "/proc/version/student.tflite"}, "is not a writable folder"),
    ],
)
def test_export_best_tflite_checks_its_arguments_when_created(kwargs, message, tmp_path):
    arguments = {"path": tmp_path / "student.tflite", **kwargs}
    with pytest.raises(ValueError, match=message):
        keras_kd.callbacks.ExportBestTFLite(**arguments)


def test_a_saved_distiller_reloads_its_optimizer_state_without_warnings(digits, tmp_path):
    x, y = digits
    distiller = keras_kd.Distiller(mlp(16, "t"), mlp(8, "s"), [keras_kd.losses.KDLoss()])
    distiller.compile(keras.optimizers.Adam(1e-3), sparse_ce(), metrics=["accuracy"])
    distiller.fit(x[:128], y[:128], epochs=1, verbose=0)
    distiller.save(tmp_path / "d.keras")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        restored = keras.saving.load_model(tmp_path / "d.keras")
    assert [str(w.message) for w in caught] == []
    assert isinstance(restored.optimizer, keras.optimizers.LossScaleOptimizer)
    saved = [ops.convert_to_numpy(v) for v in distiller.optimizer.variables]
    loaded = [ops.convert_to_numpy(v) for v in restored.optimizer.variables]
    assert len(saved) == len(loaded) > 2
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a, b)
