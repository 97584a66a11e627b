"""TFLite export of students and evaluation of the exported file.

    keras_kd.export.to_tflite(student, "student.tflite")                       # float32
    keras_kd.export.to_tflite(student, "s16.tflite", quantize="float16")       # fp16 weights
    keras_kd.export.to_tflite(student, "dyn.tflite", quantize="dynamic")       # int8 weights
    keras_kd.export.to_tflite(student, "s8.tflite", quantize="int8",
                              representative_data=train_images)                # full integer
    accuracy = keras_kd.export.evaluate_tflite("s8.tflite", test_ds)
    keras_kd.export.to_tflite(student, "raw.tflite", input_scale=1 / 255)  # takes raw 0..255 pixels

A Keras 3 model goes through a SavedModel (`model.export`), which folds
BatchNorm into the convolutions, then `tf.lite.TFLiteConverter`; a tf_keras
model (a quantization- or pruning-aware student, see
`keras_kd.optimization`) converts with `from_keras_model`, and its
fake-quant ranges become the int8 parameters. The file runs with the LiteRT
interpreter (`ai-edge-litert`).

Conversion (`to_tflite`, `converter_for`) and `compare` need the TensorFlow
backend of Keras; on JAX or PyTorch they raise one clear error. Reading a
`.tflite` file (`interpreter`, `predict_tflite`, `evaluate_tflite`) takes
NumPy arrays and runs on every backend.

The contract of an exported file: one float32 input of the model's input
shape with a free batch axis, shape (batch, H, W, C), and one float32
output (batch, num_classes) of logits (apply a softmax for probabilities;
the job writes the class names, one per line in class order, to
`labels.txt`). By default the input is what the Keras model takes (pixels
scaled as in training, e.g. [0, 1]); with `input_scale` the file holds a
`keras.layers.Rescaling(input_scale)` in front of the model and takes raw
pixels (0..255 for uint8 images, 0..16 for scikit-learn's digits), and the
scale is recorded in the file's metadata (`read_input_scale`). With
`int8_io` the input and output are int8 (see `describe` for their
quantization).
"""

import json
import os
import re
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_kd import backend, files
from keras_kd.validation import validate_positive

QUANTIZE = (None, "float16", "dynamic", "int8")
# Name of the TFLite metadata entry (JSON) in which `to_tflite` records `input_scale`.
METADATA_NAME = "keras_kd"


def _is_tf_keras(model):
    """True for a tf_keras (Keras 2) model, e.g. a tensorflow-model-optimization student."""
    return type(model).__module__.startswith(("tf_keras", "tensorflow_model_optimization")) or any(
        cls.__module__.startswith("tf_keras") for cls in type(model).__mro__
    )


def is_quantization_aware(model):
    """True for a student wrapped by `keras_kd.optimization.quantization_aware`
    (its fake-quant ranges replace int8 calibration)."""
    return any(type(layer).__name__.startswith(("QuantizeWrapper", "QuantizeLayer")) for layer in model.layers)


def _validate(model, quantize, representative_data, input_scale=None):
    if not isinstance(model, keras.Model) and not _is_tf_keras(model):
        raise TypeError(f"`model` must be a keras.Model (or a tf_keras model). Received: {type(model).__name__}")
    input_shape(model)  # a clear error for a model that has not seen inputs yet
    if input_scale is not None:
        validate_positive("input_scale", input_scale)  # e.g. 1/255
        if _is_tf_keras(model):
            raise ValueError(
                "`input_scale` wraps a Keras 3 model; for a tf_keras model (quantization- or pruning-aware), put a "
                "tf_keras Rescaling layer in front of it before training. Received: input_scale="
                f"{input_scale!r} for model {model.name!r}"
            )
    if quantize == "none":
        quantize = None
    if quantize not in QUANTIZE:
        raise ValueError(f"`quantize` must be one of {list(QUANTIZE)} (or 'none'). Received: quantize={quantize!r}")
    if quantize == "int8" and representative_data is None and not is_quantization_aware(model):
        raise ValueError(
            "quantize='int8' calibrates activation ranges and needs `representative_data`: "
            "a few hundred training inputs (an array, or a tf.data.Dataset of inputs or (inputs, labels))."
        )
    return quantize


def input_shape(model):
    """The shape of `model`'s (first) input without the batch axis: from
    `model.inputs` for a functional or Sequential model, from the inputs it
    was built or called with for a subclassed one."""
    inputs = getattr(model, "inputs", None) if model.built else None
    if inputs:
        return tuple(inputs[0].shape[1:])
    if model.built and not _is_tf_keras(model):
        from keras.src.export.export_utils import get_input_signature

        try:
            signature = keras.tree.flatten(get_input_signature(model))
        except (ValueError, TypeError, AttributeError):  # Keras cannot infer them
            signature = None
        if signature:
            return tuple(signature[0].shape[1:])
    raise ValueError(
        f"Model {model.name!r} ({type(model).__name__}) has no known input shape: call it once on a batch of "
        "data (or `build` it) before exporting, or export a functional model."
    )


def _representative_batches(model, data, num_samples):
    """Yields single-example input lists for the converter's calibration."""
    expected = input_shape(model)
    if isinstance(data, tf.data.Dataset):
        data = data.unbatch() if _is_batched(data, expected) else data
        examples = (element[0] if isinstance(element, tuple) else element for element in data.take(num_samples))
    else:
        examples = iter(np.asarray(data)[:num_samples])
    for example in examples:
        example = np.asarray(example, dtype="float32")
        if tuple(example.shape) != expected:
            raise ValueError(
                f"Representative data has examples of shape {tuple(example.shape)}; "
                f"the model {model.name!r} expects inputs of shape {expected} (without the batch axis)."
            )
        yield [example[None]]


def _is_batched(dataset, expected):
    spec = dataset.element_spec
    spec = spec[0] if isinstance(spec, tuple) else spec
    return spec.shape.rank == len(expected) + 1


def with_input_scale(model, input_scale):
    """`model` behind a `keras.layers.Rescaling(input_scale)`: a functional
    model with the same input shape that takes raw pixels (e.g. 0..255 with
    `input_scale=1/255`) and computes what `model` computes on
    `pixels * input_scale`. The weights are shared, not copied."""
    inputs = keras.Input(input_shape(model), dtype="float32", name="raw_pixels")
    scaled = keras.layers.Rescaling(float(input_scale), name="input_scaling")(inputs)
    return keras.Model(inputs, model(scaled), name=f"{model.name}_raw_pixels")


def converter_for(
    model,
    quantize=None,
    representative_data=None,
    num_calibration_samples=200,
    int8_io=False,
    allow_float_fallback=False,
    input_scale=None,
):
    """A configured `tf.lite.TFLiteConverter` for `model` (see `to_tflite`)."""
    # On JAX the SavedModel comes from jax2tf and int8 conversion leaves float ops; torch does not export.
    backend.require_tensorflow("TFLite export")
    quantize = _validate(model, quantize, representative_data, input_scale)
    if input_scale is not None:
        model = with_input_scale(model, input_scale)
    if _is_tf_keras(model):
        # tf_keras models (quantization-/pruning-aware students) convert directly.
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        # The converter reads the SavedModel again in `convert()`, so the folder lives as long as the
        # converter (`to_tflite` removes it right after converting; otherwise when the converter is freed).
        saved_model = tempfile.TemporaryDirectory(prefix="keras_kd_export_")
        try:
            model.export(saved_model.name, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved_model.name)
        except BaseException:
            saved_model.cleanup()
            raise
        converter._keras_kd_saved_model = saved_model
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative_data is not None:
            samples = list(_representative_batches(model, representative_data, num_calibration_samples))
            if not samples:
                raise ValueError("`representative_data` is empty; int8 calibration needs at least one input.")
            converter.representative_dataset = lambda: iter(samples)
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if allow_float_fallback:
                ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)  # ops without int8 kernels stay float
            converter.target_spec.supported_ops = ops
        # else: a quantization-aware model; its fake-quant ranges make the ops int8.
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def to_tflite(
    model,
    path,
    quantize=None,
    representative_data=None,
    num_calibration_samples=200,
    int8_io=False,
    allow_float_fallback=False,
    input_scale=None,
):
    """Converts `model` to a TFLite flatbuffer at `path`; returns the path.

    The file's contract: one input of `model`'s input shape with a free
    batch axis, (batch, H, W, C), float32 (int8 with `int8_io`); one output
    (batch, num_classes), the model's outputs: for a keras_kd student,
    logits (apply a softmax for probabilities). Without `input_scale` the
    input is what `model` takes (keras_kd's datasets: pixels scaled to
    [0, 1]); with it, raw pixels.

    Args:
        model: a built Keras model (e.g. `distiller.student`).
        path: the `.tflite` file to write (parent folders are created).
        quantize: None/"none" (float32), "float16" (fp16 weights),
            "dynamic" (int8 weights, float activations) or "int8" (full
            integer, calibrated on `representative_data`).
        representative_data: inputs for int8 calibration: an array of
            examples, or a `tf.data.Dataset` of inputs or (inputs, labels),
            batched or not. Required for "int8".
        num_calibration_samples: how many examples calibrate int8.
        int8_io: with "int8", make the file's input and output int8 too
            (for integer-only accelerators); otherwise they stay float32.
        allow_float_fallback: with "int8", let ops that have no int8 kernel
            run in float instead of failing the conversion.
        input_scale: None (default: the file takes what `model` takes), or
            the factor that scales raw pixels to `model`'s inputs (1/255 for
            uint8 images, 1/16 for digits; `keras_kd.datasets.Data.pixel_scale`):
            a `keras.layers.Rescaling(input_scale)` goes in front of the model,
            the file takes raw pixels as float32 (0..255, 0..16), and the
            scale is recorded in its metadata (`read_input_scale`).
            `representative_data` are then raw pixels too. Keras 3 models only.

    A quantization-aware student (`keras_kd.optimization`) converts to int8
    from its own fake-quant ranges; `representative_data` is optional there.
    """
    converter = converter_for(
        model, quantize, representative_data, num_calibration_samples, int8_io, allow_float_fallback, input_scale
    )
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several private types
        layers = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in model.layers)
        # The converter locates ops as ".../<layer name>_<n>/<op>"; name the layers it points at.
        culprits = [
            f"{layer.name} ({type(layer).__name__})"
            for layer in model.layers
            if re.search(rf"/{re.escape(layer.name)}(_\d+)?/", str(error))
        ]
        if culprits:
            layers = f"the failing op is in layer {', '.join(culprits)}"
        else:
            layers = f"model layers: {layers}"
        hint = ""
        if quantize == "int8" and not allow_float_fallback:
            hint = (
                "\nSome op may have no int8 kernel: pass allow_float_fallback=True to keep such ops in float, "
                "or replace the layer."
            )
        raise RuntimeError(
            f"TFLite conversion of model {model.name!r} failed ({layers}): {error}{hint}"
        ) from error
    finally:
        _remove_saved_model(converter)
    if quantize in ("int8",) and not allow_float_fallback:
        leftovers = float_ops(flatbuffer, model)
        if leftovers:
            raise ValueError(
                f"int8 conversion of model {model.name!r} left ops in float: {', '.join(leftovers)}. These ops "
                "have no int8 kernel; pass allow_float_fallback=True to accept a mixed int8/float model, or "
                "replace those layers."
            )
    if input_scale is not None:
        flatbuffer = _add_metadata(flatbuffer, {"input_scale": float(input_scale)})
    # Written beside `path` and renamed over it: a full disk or a Ctrl-C leaves the previous file intact.
    return files.write_bytes(path, flatbuffer)


def _add_metadata(flatbuffer, values):
    """`flatbuffer` with a `METADATA_NAME` metadata entry holding `values` as JSON
    (TFLite metadata: a named buffer that the interpreter ignores)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(values).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _metadata(path):
    """The `METADATA_NAME` entry of the TFLite file at `path` as a dict ({} without one)."""
    from tensorflow.lite.python import schema_py_generated as schema

    if not os.path.exists(path):
        raise FileNotFoundError(f"No TFLite file at {str(path)!r}.")
    with open(path, "rb") as handle:
        model = schema.Model.GetRootAsModel(bytearray(handle.read()), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == METADATA_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return {}


def read_input_scale(path):
    """The `input_scale` the TFLite file at `path` was exported with (its
    input takes raw pixels, which it multiplies by this), or None for a file
    that takes the model's own inputs."""
    return _metadata(path).get("input_scale")


def describe(path):
    """The contract of the TFLite file at `path`: for its input and output,
    `name`, `dtype`, `shape` (-1 for a free axis) and `quantization`
    (scale, zero point; (0.0, 0) for float), plus the input's `scale` (see
    `read_input_scale`)."""
    runner = interpreter(path)

    def entry(detail):
        scale, zero_point = detail["quantization"]
        return {
            "name": detail["name"],
            "dtype": np.dtype(detail["dtype"]).name,
            "shape": list(_signature(detail)),
            "quantization": [float(scale), int(zero_point)],
        }

    return {
        "input": {**entry(runner.get_input_details()[0]), "scale": read_input_scale(path)},
        "output": entry(runner.get_output_details()[0]),
    }


def _remove_saved_model(converter):
    saved_model = getattr(converter, "_keras_kd_saved_model", None)
    if saved_model is not None:
        saved_model.cleanup()


def float_ops(flatbuffer, model=None):
    """The ops of a converted model that compute in float, other than the
    (de)quantization at its edges, as "OP (in layer L)" strings."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=flatbuffer)
    tensors = {detail["index"]: detail for detail in runner.get_tensor_details()}
    layer_names = [layer.name for layer in model.layers] if model is not None else []
    found = []
    for op in runner._get_ops_details():
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE", "DELEGATE"):
            continue
        outputs = [tensors[index] for index in op["outputs"] if index >= 0]
        if any(output["dtype"] == np.float32 for output in outputs):
            names = " ".join(output["name"] for output in outputs)
            layers = [name for name in layer_names if re.search(rf"/{re.escape(name)}(_\d+)?/", names)]
            found.append(f"{op['op_name']}" + (f" (in layer {', '.join(layers)})" if layers else ""))
    return found


def interpreter(path, num_threads=None):
    """A LiteRT interpreter for the file at `path`, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    if not os.path.exists(path):
        raise FileNotFoundError(f"No TFLite file at {path!r}.")
    runner = Interpreter(model_path=str(path), num_threads=num_threads)
    runner.allocate_tensors()
    return runner


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return x.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if detail["dtype"] == np.float32 or scale == 0:
        return y.astype("float32")
    return (y.astype("float32") - zero_point) * scale


def predict_tflite(path, x, batch_size=256):
    """Outputs of the TFLite file for inputs `x`, float, as the file takes
    them: raw pixels for a file exported with `input_scale`, otherwise what
    the Keras model takes (an int8 input is quantized here)."""
    runner = interpreter(path)
    input_detail, output_detail = runner.get_input_details()[0], runner.get_output_details()[0]
    x = np.asarray(x, dtype="float32")
    expected = _signature(input_detail)[1:]
    if x.ndim != len(expected) + 1 or any(e not in (-1, d) for e, d in zip(expected, x.shape[1:])):
        raise ValueError(
            f"TFLite file {str(path)!r} takes inputs of shape {_shape_text(expected)} (without the batch axis). "
            f"Received: inputs of shape {tuple(x.shape[1:])}."
        )
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        runner.resize_tensor_input(input_detail["index"], batch.shape)
        runner.allocate_tensors()
        runner.set_tensor(input_detail["index"], _quantize(batch, input_detail))
        runner.invoke()
        outputs.append(_dequantize(runner.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs) if outputs else np.zeros((0,), "float32")


def _as_arrays(data):
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    xs, ys = [], []
    for x, y in data:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


def _signature(detail):
    """A tensor's shape with -1 for the sizes that may vary (the batch axis)."""
    signature = detail.get("shape_signature")
    return tuple(int(d) for d in (signature if signature is not None and len(signature) else detail["shape"]))


def _shape_text(shape):
    return "(" + ", ".join("None" if d == -1 else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def tflite_classes(path):
    """The number of classes the TFLite file outputs (its last output axis)."""
    return _signature(interpreter(path).get_output_details()[0])[-1]


def evaluate_tflite(path, data, batch_size=256, num_classes=None):
    """Top-1 accuracy of the TFLite file on `data`: an `(x, y)` tuple of
    arrays or a batched `tf.data.Dataset` of (inputs, integer labels), the
    inputs as the file takes them (raw pixels for a file exported with
    `input_scale`: divide keras_kd's scaled pixels by it).

    The inputs must have the file's input shape and the labels must lie in
    its classes; with `num_classes` (the dataset's), the file must output
    exactly that many. Otherwise a ValueError says what differs: an
    accuracy of a model on data it was not made for means nothing."""
    x, y = _as_arrays(data)
    classes = tflite_classes(path)
    if num_classes is not None and num_classes != classes:
        raise ValueError(
            f"TFLite file {str(path)!r} outputs {classes} classes, but the data have {num_classes} classes."
        )
    labels = y.reshape(-1)
    if len(labels) != len(x):
        raise ValueError(
            f"evaluate_tflite needs one integer label per input. Received: {len(x)} inputs and labels of shape "
            f"{tuple(y.shape)}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"Labels must lie in [0, {classes}) for TFLite file {str(path)!r}, which outputs {classes} classes. "
            f"Received: labels from {labels.min()} to {labels.max()}."
        )
    predictions = predict_tflite(path, x, batch_size)
    return float(np.mean(np.argmax(predictions, axis=-1) == labels))


def _saved_size(model):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        return os.path.getsize(path)


def _median_latency_ms(run, repeats):
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return 1000 * float(np.median(timings))


def compare(keras_model, tflite_path, data, repeats=50, batch_size=256):
    """Compares a Keras model with its TFLite file on `data` ((x, y) arrays
    or a batched dataset of (inputs, labels)), inputs as the Keras model
    takes them (divided by the file's `input_scale` for the file, if any).

    Returns a dict: `keras_bytes` (the `.keras` file) and `tflite_bytes`,
    `keras_accuracy` and `tflite_accuracy`, `max_abs_difference` (largest
    difference between the two models' outputs over the data) and the
    single-image latencies `keras_latency_ms` (a compiled call) and
    `tflite_latency_ms` (one `invoke` of the LiteRT interpreter), each the
    median of `repeats` runs after one warm-up.
    """
    backend.require_tensorflow("keras_kd.export.compare (it times a tf.function of the Keras model)")
    x, y = _as_arrays(data)
    expected = keras_model.predict(x, batch_size=batch_size, verbose=0)
    scale = read_input_scale(tflite_path)
    file_x = x if scale is None else np.asarray(x, "float32") / np.float32(scale)  # a file that takes raw pixels
    actual = predict_tflite(tflite_path, file_x, batch_size)
    labels = y.reshape(-1)
    image = file_x[:1].astype("float32")

    runner = interpreter(tflite_path)
    input_detail = runner.get_input_details()[0]
    runner.resize_tensor_input(input_detail["index"], image.shape)
    runner.allocate_tensors()
    runner.set_tensor(input_detail["index"], _quantize(image, input_detail))
    runner.invoke()

    forward = tf.function(lambda inputs: keras_model(inputs, training=False))
    keras_image = x[:1].astype("float32")
    forward(keras_image)
    return {
        "keras_bytes": _saved_size(keras_model),
        "tflite_bytes": os.path.getsize(tflite_path),
        "keras_accuracy": float(np.mean(np.argmax(expected, -1) == labels)),
        "tflite_accuracy": float(np.mean(np.argmax(actual, -1) == labels)),
        "max_abs_difference": float(np.max(np.abs(actual - expected))),
        "keras_latency_ms": _median_latency_ms(lambda: np.asarray(forward(keras_image)), repeats),
        "tflite_latency_ms": _median_latency_ms(runner.invoke, repeats),
    }
