"""TFLite export: every quantization mode converts, runs in LiteRT and
agrees with the Keras model; bad requests fail before conversion."""

import numpy as np
import pytest
import tensorflow as tf

from keras_kd import export, models


@pytest.fixture(scope="module")
def student_and_data(digits):
    import keras

    x, y = digits
    x = x.reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    student = models.get("cnn_tiny", (8, 8, 1), 10)
    student.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    student.fit(x[:600], y[:600], epochs=15, batch_size=32, verbose=0)
    return student, x[600:900], y[600:900]


@pytest.mark.parametrize(
    "quantize, tolerance",
    [(None, 1e-4), ("none", 1e-4), ("float16", 5e-2), ("dynamic", 0.3), ("int8", 0.5)],
)
def test_each_mode_runs_and_agrees_with_keras(student_and_data, tmp_path, quantize, tolerance):
    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "s.tflite", quantize=quantize, representative_data=x)
    expected = student.predict(x, verbose=0)
    actual = export.predict_tflite(path, x)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) < tolerance * max(1.0, np.max(np.abs(expected)))
    keras_accuracy = float(np.mean(np.argmax(expected, -1) == y))
    assert export.evaluate_tflite(path, (x, y)) == pytest.approx(keras_accuracy, abs=0.05)


def test_quantized_files_are_smaller(student_and_data, tmp_path):
    _, x, _ = student_and_data
    student = models.get("cnn_large", (8, 8, 1), 10)  # big enough that weights dominate the file
    sizes = {
        mode: (tmp_path / f"{mode}.tflite").stat().st_size
        for mode in ("none", "float16", "int8")
        if export.to_tflite(student, tmp_path / f"{mode}.tflite", quantize=mode, representative_data=x)
    }
    assert sizes["int8"] < sizes["float16"] < sizes["none"]


def test_int8_io_takes_quantized_inputs(student_and_data, tmp_path):
    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "io.tflite", quantize="int8", representative_data=x, int8_io=True)
    runner = export.interpreter(path)
    assert runner.get_input_details()[0]["dtype"] == np.int8
    assert runner.get_output_details()[0]["dtype"] == np.int8
    expected = float(np.mean(np.argmax(student.predict(x, verbose=0), -1) == y))
    assert export.evaluate_tflite(path, (x, y)) == pytest.approx(expected, abs=0.05)


def test_evaluate_reads_a_batched_dataset(student_and_data, tmp_path):
    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "s.tflite")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    assert export.evaluate_tflite(path, dataset) == export.evaluate_tflite(path, (x, y))


def test_representative_dataset_of_pairs(student_and_data, tmp_path):
    student, x, y = student_and_data
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    path = export.to_tflite(student, tmp_path / "s.tflite", quantize="int8", representative_data=dataset)
    expected = float(np.mean(np.argmax(student.predict(x, verbose=0), -1) == y))
    assert expected > 0.5
    assert export.evaluate_tflite(path, (x, y)) == pytest.approx(expected, abs=0.05)


def test_bad_requests_fail_before_conversion(student_and_data, tmp_path):
    student, x, _ = student_and_data
    with pytest.raises(ValueError, match="representative_data"):
        export.to_tflite(student, tmp_path / "a.tflite", quantize="int8")
    with pytest.raises(ValueError, match=r"quantize.*int4"):
        export.to_tflite(student, tmp_path / "a.tflite", quantize="int4")
    with pytest.raises(ValueError, match=r"expects inputs of shape \(8, 8, 1\)"):
        export.to_tflite(student, tmp_path / "a.tflite", quantize="int8", representative_data=x.reshape(-1, 64))
    with pytest.raises(TypeError, match="keras.Model"):
        export.to_tflite("model.keras", tmp_path / "a.tflite")
    with pytest.raises(FileNotFoundError, match="nothing.tflite"):
        export.evaluate_tflite(tmp_path / "nothing.tflite", (x, x))
    assert not (tmp_path / "a.tflite").exists()


def test_compare_reports_size_accuracy_difference_and_latency(student_and_data, tmp_path):
    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "s.tflite", quantize="int8", representative_data=x)
    report = export.compare(student, path, (x, y), repeats=5)
    assert report["tflite_bytes"] == (tmp_path / "s.tflite").stat().st_size
    assert report["keras_bytes"] > report["tflite_bytes"]
    expected = student.predict(x, verbose=0)
    assert report["keras_accuracy"] == float(np.mean(np.argmax(expected, -1) == y))
    assert report["tflite_accuracy"] == export.evaluate_tflite(path, (x, y))
    assert report["max_abs_difference"] == pytest.approx(
        float(np.max(np.abs(export.predict_tflite(path, x) - expected)))
    )
    assert 0 < report["max_abs_difference"] < 1.0
    assert report["tflite_latency_ms"] > 0 and report["keras_latency_ms"] > 0


def test_converter_error_names_the_layer(tmp_path):
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    class NumpyBridge(keras.layers.Layer):
        def call(self, x):
            y = tf.numpy_function(lambda a: a * 2, [x], tf.float32)
            y.set_shape(x.shape)
            return y

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(NumpyBridge(name="numpy_bridge")(inputs)))
    with pytest.raises(RuntimeError, match=r"failing op is in layer numpy_bridge \(NumpyBridge\).*PyFunc"):
        export.to_tflite(model, tmp_path / "bad.tflite")


def test_export_best_callback_exports_the_best_epoch(digits, tmp_path):
    import keras

    import keras_kd
    from keras_kd.callbacks import ExportBestTFLite

    x, y = digits
    x = x.reshape(-1, 8, 8, 1)
    teacher = models.get("cnn_tiny", (8, 8, 1), 10, name="teacher")
    student = models.get("cnn_tiny", (8, 8, 1), 10)
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()])
    distiller.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = ExportBestTFLite(tmp_path / "best.tflite", monitor="val_student_loss")
    snapshots = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: snapshots.append(student.get_weights()))
    history = distiller.fit(
        x[:300], y[:300], epochs=4, validation_data=(x[300:500], y[300:500]), callbacks=[callback, record], verbose=0
    )
    losses = history.history["val_student_loss"]
    best = int(np.argmin(losses))
    assert callback.best_epoch == best + 1 and callback.best == pytest.approx(losses[best])
    final = student.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(final, snapshots[-1]))  # final weights kept
    student.set_weights(snapshots[best])
    np.testing.assert_allclose(
        export.predict_tflite(tmp_path / "best.tflite", x[:16]), student.predict(x[:16], verbose=0), atol=1e-4
    )
    config = callback.get_config()
    assert ExportBestTFLite.from_config(config).get_config() == config


def test_export_best_callback_validates(tmp_path):
    from keras_kd.callbacks import ExportBestTFLite

    with pytest.raises(ValueError, match="mode"):
        ExportBestTFLite(tmp_path / "a.tflite", mode="up")
    with pytest.raises(ValueError, match="representative_data"):
        ExportBestTFLite(tmp_path / "a.tflite", quantize="int8")


def test_int8_with_float_only_ops_needs_explicit_fallback(tmp_path):
    import keras

    inputs = keras.Input((8,))
    hidden = keras.layers.Lambda(keras.ops.sin, name="sine")(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    x = np.random.default_rng(0).random((64, 8), dtype="float32")
    with pytest.raises(ValueError, match=r"left ops in float: SIN \(in layer sine\).*allow_float_fallback=True"):
        export.to_tflite(model, tmp_path / "strict.tflite", quantize="int8", representative_data=x)
    assert not (tmp_path / "strict.tflite").exists()
    path = export.to_tflite(
        model, tmp_path / "mixed.tflite", quantize="int8", representative_data=x, allow_float_fallback=True
    )
    np.testing.assert_allclose(export.predict_tflite(path, x), model.predict(x, verbose=0), atol=0.1)


def test_evaluate_checks_input_shape_and_classes(student_and_data, tmp_path):
    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "s.tflite")
    mnist_like = np.zeros((4, 28, 28, 1), "float32")
    with pytest.raises(ValueError, match=r"takes inputs of shape \(8, 8, 1\).*Received: inputs of shape \(28, 28, 1\)"):
        export.evaluate_tflite(path, (mnist_like, np.zeros(4, "int32")))
    with pytest.raises(ValueError, match="outputs 10 classes, but the data have 3 classes"):
        export.evaluate_tflite(path, (x, y % 3), num_classes=3)
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 10\).*from 0 to 12"):
        export.evaluate_tflite(path, (x, np.where(y == 9, 12, y)))
    assert export.evaluate_tflite(path, (x, y), num_classes=10) > 0.5


def test_subclassed_model_exports_and_no_temporary_folder_stays(tmp_path, monkeypatch):
    import tempfile

    import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the SavedModel folders go
    model = Subclassed()
    with pytest.raises(ValueError, match="no known input shape: call it once"):
        export.to_tflite(model, tmp_path / "unbuilt.tflite")
    x = np.random.default_rng(0).random((5, 4), dtype="float32")
    model(x)
    path = export.to_tflite(model, tmp_path / "sub.tflite", quantize="int8", representative_data=x)
    np.testing.assert_allclose(export.predict_tflite(path, x), model.predict(x, verbose=0), atol=0.05)

    @keras.saving.register_keras_serializable(package="tests")
    class NumpyOnly(keras.layers.Layer):  # no TFLite kernel: the conversion fails
        def call(self, x):
            return tf.ensure_shape(tf.numpy_function(lambda a: a, [x], tf.float32), x.shape)

    inputs = keras.Input((4,))
    with pytest.raises(RuntimeError, match="TFLite conversion"):
        export.to_tflite(keras.Model(inputs, NumpyOnly()(inputs)), tmp_path / "bad.tflite")
    assert not list(tmp_path.glob("keras_kd_export_*"))  # removed after success and after failure


def test_full_disk_keeps_the_previous_tflite_file(student_and_data, tmp_path, monkeypatch):
    from tests.faults import disk_full, leftovers

    student, x, y = student_and_data
    path = export.to_tflite(student, tmp_path / "s.tflite")
    before = (tmp_path / "s.tflite").read_bytes()
    flatbuffer = export.converter_for(student, "float16").convert()
    assert flatbuffer != before

    class Converter:  # the disk fills up after the conversion, while the file is written
        def convert(self):
            disk_full_context.__enter__()
            return flatbuffer

    disk_full_context = disk_full(1024)
    monkeypatch.setattr(export, "converter_for", lambda *args, **kwargs: Converter())
    try:
        with pytest.raises(OSError, match="File too large"):
            export.to_tflite(student, path)
    finally:
        disk_full_context.__exit__(None, None, None)
    assert (tmp_path / "s.tflite").read_bytes() == before  # the previous file, whole
    assert leftovers(tmp_path) == []
    assert export.evaluate_tflite(path, (x, y)) > 0.5


def test_input_scale_puts_the_scaling_in_the_file(student_and_data, tmp_path):
    student, x, y = student_and_data
    pixels = np.round(x * 16)  # scikit-learn's raw digits, 0..16
    assert pixels.max() == 16
    path = export.to_tflite(student, tmp_path / "raw.tflite", input_scale=1 / 16)
    expected = student.predict(x, verbose=0)
    np.testing.assert_allclose(export.predict_tflite(path, pixels), expected, atol=1e-4)
    assert export.evaluate_tflite(path, (pixels, y)) == float(np.mean(np.argmax(expected, -1) == y))
    assert export.read_input_scale(path) == 1 / 16
    contract = export.describe(path)
    assert contract["input"]["dtype"] == "float32" and contract["input"]["shape"] == [-1, 8, 8, 1]
    assert contract["input"]["scale"] == 1 / 16 and contract["output"]["shape"] == [-1, 10]
    # compare() takes the Keras model's inputs and gives the file raw pixels.
    assert export.compare(student, path, (x, y), repeats=1)["max_abs_difference"] < 1e-4


def test_without_input_scale_the_file_takes_the_models_inputs(student_and_data, tmp_path):
    student, x, _ = student_and_data
    path = export.to_tflite(student, tmp_path / "plain.tflite")
    assert export.read_input_scale(path) is None and export.describe(path)["input"]["scale"] is None
    np.testing.assert_allclose(export.predict_tflite(path, x), student.predict(x, verbose=0), atol=1e-4)


def test_int8_with_input_scale_calibrates_on_raw_pixels(student_and_data, tmp_path):
    student, x, y = student_and_data
    pixels = np.round(x * 16)
    path = export.to_tflite(
        student, tmp_path / "raw8.tflite", quantize="int8", representative_data=pixels, input_scale=1 / 16
    )
    expected = float(np.mean(np.argmax(student.predict(x, verbose=0), -1) == y))
    assert export.evaluate_tflite(path, (pixels, y)) == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), True, "1/16"])
def test_bad_input_scale_fails_before_conversion(student_and_data, tmp_path, scale):
    student, _, _ = student_and_data
    with pytest.raises(ValueError, match="input_scale"):
        export.to_tflite(student, tmp_path / "bad.tflite", input_scale=scale)
    assert not (tmp_path / "bad.tflite").exists()
