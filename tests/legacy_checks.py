"""Checks of the tf_keras path, run by tests/test_legacy.py in a separate
process with TF_USE_LEGACY_KERAS=1 (tensorflow-model-optimization needs it
set before TensorFlow is imported). Each check prints `PASS <name>`; the
first failure raises and ends the process with a non-zero status."""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import export, legacy, models, optimization  # noqa: E402

# Two logical CPUs for the MirroredStrategy check, set before TensorFlow initialises its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32").reshape(-1, 8, 8, 1), data.target.astype("int32")


X, Y = digits()
CE3 = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CE2 = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def trained(name, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = models.get(name, (8, 8, 1), 10)
    model.compile(keras.optimizers.Adam(3e-3), CE3)
    model.fit(X[:1200], Y[:1200], epochs=epochs, batch_size=32, verbose=0)
    return model


def accuracy(predictions, labels):
    return float(np.mean(np.argmax(predictions, -1) == labels))


TEACHER = trained("cnn_small", 12, 0)
STUDENT = trained("cnn_tiny", 12, 1)
X_TEST, Y_TEST = X[1200:], Y[1200:]


@check
def tf_keras_is_the_legacy_keras():
    assert tf.keras is tf_keras or tf.keras.__name__.startswith("tf_keras"), tf.keras


@check
def to_tf_keras_keeps_names_and_predictions():
    for name in ("cnn_tiny", "mlp_tiny", "resnet8"):
        keras.utils.set_random_seed(2)
        original = models.get(name, (32, 32, 3) if name == "resnet8" else (8, 8, 1), 10)
        rebuilt = legacy.to_tf_keras(original)
        assert isinstance(rebuilt, tf_keras.Model)
        assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in original.layers]
        x = np.random.default_rng(0).random((4, *original.input_shape[1:]), dtype="float32")
        np.testing.assert_allclose(rebuilt.predict(x, verbose=0), original.predict(x, verbose=0), atol=1e-5)


@check
def custom_layers_are_named():
    model = models.get("shufflenetv2", (32, 32, 3), 10)
    try:
        legacy.to_tf_keras(model)
    except ValueError as error:
        assert "has no tf_keras counterpart" in str(error) and "Channel" in str(error), error
    else:
        raise AssertionError("a custom layer converted silently")


def _distiller(student, terms, weight=0.1):
    distiller = legacy.Distiller(TEACHER, student, terms=terms, student_loss_weight=weight)
    distiller.compile(tf_keras.optimizers.Adam(1e-3), CE2, metrics=["accuracy"])
    return distiller


@check
def quantization_aware_distillation_trains_student_only_and_logs_every_term():
    qat = optimization.quantization_aware(STUDENT)
    assert export.is_quantization_aware(qat)
    teacher_before = [w.copy() for w in TEACHER.get_weights()]
    student_before = [w.copy() for w in qat.get_weights()]
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9),
        keras_kd.Term(
            keras_kd.losses.AttentionTransferLoss(), teacher_layer="stage2", student_layer="stage2", weight=100.0
        ),
    ]
    distiller = _distiller(qat, terms)
    history = distiller.fit(X[:1200], Y[:1200], epochs=1, batch_size=40, verbose=0).history
    assert {"loss", "student_loss", "kd_loss", "attention_transfer_loss", "accuracy"} <= set(history), history
    total = 0.1 * history["student_loss"][0] + 0.9 * history["kd_loss"][0]
    total += 100.0 * history["attention_transfer_loss"][0]
    np.testing.assert_allclose(history["loss"][0], total, rtol=1e-4)
    for before, after in zip(teacher_before, TEACHER.get_weights()):
        np.testing.assert_array_equal(before, after)  # weights and BN statistics untouched
    assert any(not np.array_equal(b, a) for b, a in zip(student_before, qat.get_weights()))


@check
def quantization_aware_student_exports_to_int8():
    qat = optimization.quantization_aware(STUDENT)
    distiller = _distiller(qat, [keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9)])
    distiller.fit(X[:1200], Y[:1200], epochs=2, batch_size=32, verbose=0)
    path = export.to_tflite(qat, os.path.join(sys.argv[1], "qat_int8.tflite"), quantize="int8")
    runner = export.interpreter(path)
    kinds = {detail["dtype"] for detail in runner.get_tensor_details()}
    assert np.int8 in kinds, kinds
    keras_accuracy = accuracy(qat.predict(X_TEST, verbose=0), Y_TEST)
    tflite_accuracy = export.evaluate_tflite(path, (X_TEST, Y_TEST))
    assert abs(keras_accuracy - tflite_accuracy) <= 0.03, (keras_accuracy, tflite_accuracy)


@check
def pruning_aware_distillation_reaches_the_target_sparsity():
    steps = 2 * int(np.ceil(1200 / 32))
    pruned = optimization.pruning_aware(STUDENT, target_sparsity=0.6, begin_step=0, end_step=steps // 2, frequency=5)
    distiller = _distiller(pruned, [keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9)])
    distiller.fit(X[:1200], Y[:1200], epochs=2, batch_size=32, verbose=0, callbacks=optimization.pruning_callbacks())
    final = optimization.strip_pruning(pruned)
    assert not any("prune" in layer.name for layer in final.layers)
    assert abs(optimization.sparsity(final) - 0.6) < 0.02, optimization.sparsity(final)
    path = export.to_tflite(final, os.path.join(sys.argv[1], "pruned.tflite"))
    np.testing.assert_allclose(export.predict_tflite(path, X_TEST[:32]), final.predict(X_TEST[:32], verbose=0), atol=1e-4)


def _features(model, layer):
    """(output, layer `layer`'s output) of a Keras 3 or tf_keras model, in inference mode."""
    functional = keras.Model if isinstance(model, keras.Model) else tf_keras.Model
    both = functional(model.inputs, [model.outputs[0], legacy.find_layer(model, layer).output])
    return [np.asarray(v) for v in both(X[:64], training=False)]


@check
def sample_weight_reaches_per_sample_terms_only():
    # Relational losses (similarity preserving here) take no sample_weight: before the step shared
    # keras_kd.bound_term.term_value, fitting with sample weights raised in every such term.
    student = legacy.to_tf_keras(STUDENT)
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9),
        keras_kd.Term(keras_kd.losses.SimilarityPreservingLoss(), "stage2", "stage2", weight=100.0),
    ]
    distiller = _distiller(student, terms)
    weights = np.linspace(0.1, 2.0, 64).astype("float32")
    logs = distiller.evaluate(X[:64], Y[:64], sample_weight=weights, batch_size=64, verbose=0, return_dict=True)
    (teacher_out, teacher_map), (student_out, student_map) = _features(TEACHER, "stage2"), _features(student, "stage2")
    weighted_kd = float(keras_kd.losses.KDLoss(temperature=4.0)(teacher_out, student_out, sample_weight=weights))
    plain_kd = float(keras_kd.losses.KDLoss(temperature=4.0)(teacher_out, student_out))
    assert abs(weighted_kd - plain_kd) > 1e-3 * plain_kd, (weighted_kd, plain_kd)  # the weights matter here
    np.testing.assert_allclose(logs["kd_loss"], weighted_kd, rtol=1e-5)
    sp = float(keras_kd.losses.SimilarityPreservingLoss()(teacher_map, student_map))
    np.testing.assert_allclose(logs["similarity_preserving_loss"], sp, rtol=1e-5)
    np.testing.assert_allclose(logs["student_loss"], float(CE2(Y[:64], student_out, sample_weight=weights)), rtol=1e-5)
    history = distiller.fit(X[:128], Y[:128], sample_weight=np.ones(128, "float32"), batch_size=64, verbose=0)
    assert all(np.isfinite(values[-1]) for values in history.history.values()), history.history


def _plain_cnn(regularizer=None):
    """A student without BatchNorm (whose batch statistics are per replica), 4x4 `stage2` maps as the teacher's."""
    keras.utils.set_random_seed(4)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stage1")(inputs)
    x = keras.layers.Conv2D(
        8, 3, strides=2, padding="same", activation="relu", kernel_regularizer=regularizer, name="stage2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="plain_cnn")


@check
def mirrored_replicas_log_and_train_as_one_device():
    # Two replicas of 32 examples give the step of one device on batches of 64: each replica's loss is its
    # share (the regularization-only student loss too) and the logs are scaled back to read as on one device.
    # (The teacher's BatchNorm runs in inference mode, so only the student must be free of BatchNorm.)
    def run(strategy):
        with strategy.scope():
            labelled = legacy.Distiller(
                TEACHER,
                legacy.to_tf_keras(_plain_cnn()),
                [
                    keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9),
                    keras_kd.Term(keras_kd.losses.AttentionTransferLoss(), "stage2", "stage2", weight=100.0),
                ],
                student_loss_weight=0.1,
            )
            labelled.compile(tf_keras.optimizers.SGD(0.1), CE2)
            regularized = legacy.to_tf_keras(_plain_cnn(keras.regularizers.L2(0.05)))
            unlabelled = legacy.Distiller(TEACHER, regularized, [keras_kd.losses.KDLoss()])
            unlabelled.compile(tf_keras.optimizers.SGD(0.1))
        logs = labelled.fit(X[:256], Y[:256], batch_size=64, epochs=2, shuffle=False, verbose=0).history
        history = unlabelled.fit(X[:256], batch_size=64, epochs=2, shuffle=False, verbose=0).history
        logs.update({f"unlabelled_{key}": values for key, values in history.items()})
        return logs, labelled.student.get_weights() + unlabelled.student.get_weights()

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    (single_logs, single_weights), (mirrored_logs, mirrored_weights) = run(tf.distribute.get_strategy()), run(mirrored)
    assert set(single_logs) == set(mirrored_logs) >= {"loss", "kd_loss", "attention_transfer_loss", "unlabelled_loss"}
    assert single_logs["unlabelled_student_loss"][0] > 0  # the L2 penalty is the unlabelled student loss
    for key, values in single_logs.items():
        np.testing.assert_allclose(mirrored_logs[key], values, rtol=1e-4, atol=1e-6, err_msg=key)
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@check
def unsupported_terms_fail_at_construction():
    student = legacy.to_tf_keras(STUDENT)
    for term, message in (
        (keras_kd.Term(keras_kd.losses.VIDLoss(), teacher_layer="stage2", student_layer="stage2"), "owns Keras 3"),
        (keras_kd.Term(keras_kd.losses.FitNetLoss(), "stage2", "stage2", connector="conv1x1"), "connector"),
        (keras_kd.Term(keras_kd.losses.FitNetLoss(), teacher_layer="stage2", student_layer="nope"), "nope"),
    ):
        try:
            legacy.Distiller(TEACHER, student, terms=[term])
        except ValueError as error:
            assert message in str(error), error
        else:
            raise AssertionError(f"{term} was accepted")


@check
def bad_sparsity_is_refused():
    try:
        optimization.pruning_aware(STUDENT, target_sparsity=1.0)
    except ValueError as error:
        assert "target_sparsity=1.0" in str(error)
    else:
        raise AssertionError("target_sparsity=1.0 was accepted")


if __name__ == "__main__":
    for function in CHECKS:
        function()
        print(f"PASS {function.__name__}", flush=True)
