import math

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data pipelines and TensorBoard event files, read on every backend
from keras import ops

import keras_kd
from keras_kd.losses import KDLoss
from tests.backend_utils import BACKEND
from tests.conftest import cnn, mlp, sparse_ce


@keras.saving.register_keras_serializable(package="keras_kd_tests")
class CountCalls(keras.layers.Layer):
    """Identity that counts its training-mode calls in a variable."""

    def build(self, input_shape):
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")

    def call(self, inputs, training=None):
        if training:
            self.count.assign_add(1.0)
        return inputs


def kd_distiller(teacher, student, **kwargs):
    return keras_kd.Distiller(
        teacher, student, [keras_kd.Term(KDLoss(), weight=0.9)], student_loss_weight=0.1, **kwargs
    )


def test_teacher_weights_and_batchnorm_statistics_are_unchanged(digits, trained_teacher):
    x, y = digits
    before = [np.array(v) for v in trained_teacher.weights]
    student = mlp(16, "student")
    distiller = kd_distiller(trained_teacher, student)
    distiller.compile("adam", sparse_ce())
    student_before = [np.array(v) for v in student.weights]
    distiller.fit(x, y, epochs=1, batch_size=128, verbose=0)
    after = [np.array(v) for v in trained_teacher.weights]
    assert any("moving_mean" in v.path for v in trained_teacher.weights)
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)  # bit for bit
    assert any(not np.array_equal(b, np.array(a)) for b, a in zip(student_before, student.weights))
    assert not any(v in {id(w) for w in trained_teacher.weights} for v in map(id, distiller.trainable_variables))


def test_teacher_runs_in_inference_mode(digits, trained_teacher):
    # With Dropout in the teacher, training-mode calls would differ per run;
    # the logged KD term must equal the loss on teacher.predict outputs.
    x, y = digits
    student = mlp(16, "student")
    distiller = kd_distiller(trained_teacher, student)
    distiller.compile("adam", sparse_ce())
    logs = distiller.evaluate(x[:256], y[:256], batch_size=256, verbose=0, return_dict=True)
    expected = KDLoss()(trained_teacher.predict(x[:256], verbose=0), student.predict(x[:256], verbose=0))
    np.testing.assert_allclose(logs["kd_loss"], float(expected), rtol=1e-5)


def test_one_student_and_one_teacher_forward_pass_per_step(digits):
    x, y = digits
    counters = {}
    models = {}
    for role in ("teacher", "student"):
        inputs = keras.Input((64,))
        counters[role] = CountCalls(name="count")
        hidden = keras.layers.Dense(8, activation="relu", name="hidden")(counters[role](inputs))
        models[role] = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden), name=role)
    distiller = keras_kd.Distiller(
        models["teacher"],
        models["student"],
        [
            keras_kd.Term(KDLoss()),
            keras_kd.Term(keras_kd.losses.KDLoss(temperature=1.0), teacher_layer="hidden", student_layer="hidden"),
        ],
    )
    distiller.compile("sgd", sparse_ce())
    distiller.fit(x[:320], y[:320], epochs=2, batch_size=64, verbose=0)
    assert float(counters["student"].count) == 10.0  # 5 steps x 2 epochs
    assert float(counters["teacher"].count) == 0.0  # never in training mode


def test_terms_are_logged_under_unique_keras_names(digits, trained_teacher, tmp_path):
    x, y = digits
    terms = [
        keras_kd.Term(KDLoss()),
        keras_kd.Term(KDLoss(temperature=2.0)),
        keras_kd.Term(keras.losses.MeanSquaredError(), teacher_layer="hidden", student_layer="hidden", connector="linear"),
    ]
    distiller = keras_kd.Distiller(trained_teacher, mlp(16, "student"), terms)
    assert [t.name for t in terms] == ["kd_loss", "kd_loss", "mean_squared_error"]  # not mutated
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    board = keras.callbacks.TensorBoard(str(tmp_path))
    history = distiller.fit(
        x, y, epochs=1, batch_size=256, validation_split=0.2, verbose=0, callbacks=[board]
    )
    expected = {"loss", "student_loss", "kd_loss", "kd_loss_1", "mean_squared_error", "accuracy"}
    assert expected | {f"val_{k}" for k in expected} == set(history.history)
    tags = set()
    for event_file in tmp_path.rglob("events.out.tfevents*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {value.tag for value in event.summary.value}
    assert {"epoch_kd_loss", "epoch_kd_loss_1", "epoch_student_loss"} <= tags
    # The total is the weighted sum of its parts.
    logs = distiller.evaluate(x, y, batch_size=2000, verbose=0, return_dict=True)
    parts = logs["student_loss"] + logs["kd_loss"] + logs["kd_loss_1"] + logs["mean_squared_error"]
    np.testing.assert_allclose(logs["loss"], parts, rtol=1e-5)


def test_connectors_train_with_the_student_and_stay_out_of_it(digits):
    x, y = digits
    teacher = cnn(8, "teacher")
    student = cnn(4, "student")
    term = keras_kd.Term(
        keras_kd.losses.KDLoss(temperature=1.0), teacher_layer="block1", student_layer="block1",
        connector="conv1x1", name="hint",
    )
    distiller = keras_kd.Distiller(teacher, student, [term])
    connector = distiller.connectors["hint"]
    assert {id(v) for v in connector.trainable_weights} <= {id(v) for v in distiller.trainable_weights}
    assert not {id(v) for v in connector.weights} & {id(v) for v in student.weights}
    before = [np.array(v) for v in connector.trainable_weights]
    distiller.compile("adam")
    distiller.fit(x.reshape(-1, 8, 8, 1)[:128], epochs=1, batch_size=64, verbose=0)
    assert all(not np.array_equal(b, np.array(a)) for b, a in zip(before, connector.trainable_weights))
    assert "hint_connector" not in [layer.name for layer in student.layers]


def test_unlabeled_transfer_set_distills_with_terms_alone(digits, trained_teacher):
    x, _ = digits
    student = mlp(16, "student")
    distiller = kd_distiller(trained_teacher, student)
    distiller.compile("adam", sparse_ce())
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(128)
    history = distiller.fit(dataset, epochs=3, verbose=0)
    losses = history.history["kd_loss"]
    assert losses[-1] < losses[0]
    assert history.history["student_loss"] == [0.0, 0.0, 0.0]


def test_numpy_and_dataset_inputs_give_the_same_step(digits, trained_teacher):
    x, y = digits
    results = []
    for make_data in (lambda: (x[:128], y[:128]), lambda: (tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(64),)):
        keras.utils.set_random_seed(3)
        distiller = kd_distiller(trained_teacher, mlp(16, "student"))
        distiller.compile("sgd", sparse_ce())
        data = make_data()
        kwargs = {"batch_size": 64, "shuffle": False} if len(data) == 2 else {}
        distiller.fit(*data, epochs=1, verbose=0, **kwargs)
        results.append([np.array(v) for v in distiller.student.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sample_weight_weights_supervised_loss_and_terms(digits, trained_teacher):
    x, y = digits
    x, y = x[:64], y[:64]
    distiller = kd_distiller(trained_teacher, mlp(16, "student"))
    distiller.compile("sgd", sparse_ce())
    weights = np.zeros(64, "float32")
    weights[:16] = 1.0
    weighted = distiller.evaluate(x, y, sample_weight=weights, batch_size=64, verbose=0, return_dict=True)
    subset = distiller.evaluate(x[:16], y[:16], batch_size=16, verbose=0, return_dict=True)
    # Keras' sum_over_batch_size: weighted sum / batch size.
    for key in ("kd_loss", "student_loss"):
        np.testing.assert_allclose(weighted[key], subset[key] * 16 / 64, rtol=1e-5)


def test_jit_compile(digits, trained_teacher):
    x, y = digits
    distiller = kd_distiller(trained_teacher, mlp(16, "student"))
    distiller.compile("adam", sparse_ce(), jit_compile=True)
    history = distiller.fit(x, y, epochs=2, batch_size=128, verbose=0)
    assert distiller.jit_compile
    assert history.history["loss"][1] < history.history["loss"][0]


def test_mixed_precision_student_losses_in_float32(digits, trained_teacher):
    x, y = digits
    keras.config.set_dtype_policy("mixed_float16")
    student = mlp(16, "student")
    keras.config.set_dtype_policy("float32")
    assert student.compute_dtype == "float16"
    distiller = kd_distiller(trained_teacher, student)
    distiller.compile("adam", sparse_ce())
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    history = distiller.fit(x, y, epochs=2, batch_size=128, verbose=0)
    assert all(math.isfinite(v) for v in history.history["kd_loss"])
    assert history.history["loss"][1] < history.history["loss"][0]
    teacher_logits = trained_teacher.predict(x[:8], verbose=0)
    value = KDLoss()(teacher_logits, ops.cast(student.predict(x[:8], verbose=0), "float16"))
    assert keras.backend.standardize_dtype(value.dtype) == "float32"


def test_student_is_a_plain_model_that_saves_and_reloads(digits, trained_teacher, tmp_path):
    x, y = digits
    distiller = kd_distiller(trained_teacher, mlp(16, "student"))
    distiller.compile("adam", sparse_ce())
    distiller.fit(x, y, epochs=1, batch_size=128, verbose=0)
    path = tmp_path / "student.keras"
    distiller.student.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, keras.Model) and not isinstance(reloaded, keras_kd.Distiller)
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in distiller.student.layers]
    np.testing.assert_allclose(reloaded.predict(x[:16], verbose=0), distiller.student.predict(x[:16], verbose=0), rtol=1e-6)


def test_distiller_round_trips_through_keras_saving(digits, tmp_path):
    x, y = digits
    teacher = cnn(8, "teacher")
    terms = [
        keras_kd.Term(KDLoss(temperature=3.0), weight=0.5),
        keras_kd.Term(keras.losses.MeanSquaredError(), teacher_layer="block2", student_layer="block2", connector="conv1x1", weight=2.0),
    ]
    distiller = keras_kd.Distiller(teacher, cnn(4, "student"), terms, student_loss_weight=0.3)
    distiller.compile("adam", sparse_ce(), metrics=["accuracy"])
    images = x.reshape(-1, 8, 8, 1)
    distiller.fit(images[:256], y[:256], epochs=1, batch_size=64, verbose=0)
    expected = distiller.evaluate(images[:256], y[:256], verbose=0, return_dict=True)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, keras_kd.Distiller)
    assert [t.name for t in restored.terms] == ["kd_loss", "mean_squared_error"]
    assert restored.terms[0].loss.temperature == 3.0 and restored.student_loss_weight == 0.3
    got = restored.evaluate(images[:256], y[:256], verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
    config = distiller.get_config()
    clone = keras_kd.Distiller.from_config(config)
    assert clone.get_config()["terms"] == config["terms"]


def test_term_weight_variables_change_the_total_without_retracing(digits, trained_teacher):
    x, y = digits
    distiller = kd_distiller(trained_teacher, mlp(16, "student"))
    distiller.compile("sgd", sparse_ce())
    first = distiller.evaluate(x[:128], y[:128], batch_size=128, verbose=0, return_dict=True)
    function = distiller.test_function
    distiller.term_weights["kd_loss"].assign(0.0)
    second = distiller.evaluate(x[:128], y[:128], batch_size=128, verbose=0, return_dict=True)
    assert distiller.test_function is function
    np.testing.assert_allclose(second["loss"], 0.1 * first["student_loss"], rtol=1e-5)


# ---- bad input: clear errors before training ---------------------------------


def test_unknown_layer_lists_available_layers(trained_teacher):
    term = keras_kd.Term(KDLoss(), teacher_layer="hiden", student_layer="hidden")
    with pytest.raises(ValueError, match=r"no layer named 'hiden'.*'hidden'"):
        keras_kd.Distiller(trained_teacher, mlp(16, "student"), [term])


def test_incompatible_shapes_name_the_term_and_both_shapes(trained_teacher):
    term = keras_kd.Term(KDLoss(), teacher_layer="hidden", student_layer="hidden", name="hint")
    with pytest.raises(ValueError, match=r"Term 'hint'.*\(None, 64\).*\(None, 16\)"):
        keras_kd.Distiller(trained_teacher, mlp(16, "student"), [term])


def test_conv_connector_needs_feature_maps(trained_teacher):
    term = keras_kd.Term(KDLoss(), teacher_layer="hidden", student_layer="hidden", connector="conv1x1")
    with pytest.raises(ValueError, match="conv1x1"):
        keras_kd.Distiller(trained_teacher, mlp(16, "student"), [term])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"weight": -1.0}, "weight"),
        ({"weight": "1"}, "weight"),
        ({"connector": "conv3x3"}, "connector"),
        ({"teacher_layer": "hidden"}, "both"),
        ({"teacher_layer": 3, "student_layer": "x"}, "teacher_layer"),
    ],
)
def test_term_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_kd.Term(KDLoss(), **kwargs)


def test_term_needs_a_keras_loss():
    with pytest.raises(ValueError, match="keras.losses.Loss"):
        keras_kd.Term("kd")


def test_unbuilt_models_are_rejected(trained_teacher):
    unbuilt = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="teacher .* not built"):
        keras_kd.Distiller(unbuilt, mlp(16, "student"), [KDLoss()])
    with pytest.raises(ValueError, match="student .* not built"):
        keras_kd.Distiller(trained_teacher, unbuilt, [KDLoss()])


def test_negative_student_loss_weight_is_rejected(trained_teacher):
    with pytest.raises(ValueError, match="student_loss_weight"):
        keras_kd.Distiller(trained_teacher, mlp(16, "student"), [KDLoss()], student_loss_weight=-0.5)


def test_no_terms_and_no_supervised_loss(digits, trained_teacher):
    x, y = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(16, "student"), [])
    distiller.compile("adam")
    with pytest.raises(ValueError, match="Nothing to train"):
        distiller.fit(x, y, epochs=1, verbose=0)


def test_label_hungry_term_without_labels(digits, trained_teacher):
    class NeedsLabels(keras_kd.losses.DistillationLoss):
        requires_labels = True

        def call(self, teacher, student):
            return keras.ops.mean(student, axis=-1)

    x, _ = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(16, "student"), [NeedsLabels()])
    distiller.compile("adam")
    with pytest.raises(ValueError, match="needs the labels"):
        distiller.fit(x, epochs=1, verbose=0)


def test_nan_term_stops_training_with_its_name(digits, trained_teacher):
    class Explodes(keras_kd.losses.DistillationLoss):
        def call(self, teacher, student):
            return keras.ops.log(student[:, 0] * 0.0 - 1.0)

    x, y = digits
    distiller = keras_kd.Distiller(trained_teacher, mlp(16, "student"), [KDLoss(), Explodes(name="explodes")])
    distiller.compile("adam", sparse_ce())
    with pytest.raises(FloatingPointError, match="'explodes'.*batch 0 of epoch 1"):
        distiller.fit(x, y, epochs=1, batch_size=64, verbose=0)
    # Every weight is still readable (on JAX the check once ran in a worker
    # thread that synced state already donated to the next step: deleted arrays).
    for variable in trained_teacher.weights + distiller.student.weights:
        assert np.all(np.isfinite(np.asarray(variable))), variable.path
    # The opt-out trains on.
    distiller = keras_kd.Distiller(
        trained_teacher, mlp(16, "student"), [Explodes(name="explodes")], stop_on_nan=False
    )
    distiller.compile("adam")
    history = distiller.fit(x, epochs=1, batch_size=512, verbose=0)
    assert math.isnan(history.history["explodes"][0])


def test_learnable_loss_weights_train_and_round_trip(digits, tmp_path):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:256]
    terms = [keras_kd.Term(keras_kd.losses.VIDLoss(), teacher_layer="block2", student_layer="block2")]
    distiller = keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), terms)
    head = distiller.loss_layers["vid_loss"]
    assert {id(v) for v in head.trainable_weights} <= {id(v) for v in distiller.trainable_weights}
    before = [np.array(v) for v in head.trainable_weights]
    distiller.compile("adam", sparse_ce())
    distiller.fit(images, y[:256], epochs=1, batch_size=64, verbose=0)
    assert all(not np.array_equal(b, np.array(a)) for b, a in zip(before, head.trainable_weights))
    expected = distiller.evaluate(images, y[:256], verbose=0, return_dict=True)
    distiller.save(tmp_path / "vid.keras")
    restored = keras.saving.load_model(tmp_path / "vid.keras")
    got = restored.evaluate(images, y[:256], verbose=0, return_dict=True)
    np.testing.assert_allclose(got["vid_loss"], expected["vid_loss"], rtol=1e-5)


def test_term_named_like_a_reserved_log_key_is_renamed(trained_teacher):
    distiller = keras_kd.Distiller(trained_teacher, mlp(16, "student"), [keras_kd.Term(KDLoss(), name="loss")])
    assert [t.name for t in distiller.terms] == ["loss_1"]


@pytest.mark.skipif(BACKEND == "tensorflow", reason="checks the refusal on JAX and PyTorch")
def test_teacher_cache_needs_tensorflow(digits, trained_teacher):
    x, y = digits
    distiller = kd_distiller(trained_teacher, mlp(16, "student"))
    distiller.compile("adam", sparse_ce())
    weights = distiller.student.get_weights()
    with pytest.raises(RuntimeError, match=f"TeacherCache.*TensorFlow backend.*runs Keras on '{BACKEND}'"):
        distiller.fit(
            x[:64], y[:64], batch_size=32, shuffle=False, verbose=0, callbacks=[keras_kd.callbacks.TeacherCache()]
        )
    for before, after in zip(weights, distiller.student.get_weights()):
        np.testing.assert_array_equal(before, after)  # refused before any step
