"""The `keras-kd distill` job on JAX and PyTorch, and the TensorFlow-only
parts refusing them with one clear error.

Keras picks its backend once per process, so each backend runs in a fresh
interpreter with `KERAS_BACKEND` set; it prints one JSON line of results.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, numpy as np
    import keras_kd
    from keras_kd import cli, datasets, export, job, legacy, optimization

    folder = sys.argv[1]
    results = {"backend": keras.backend.backend()}

    # The whole job (function matching into mlp_small by default), tiny budget.
    run = os.path.join(folder, "run")
    with contextlib.redirect_stdout(io.StringIO()):
        results["distill_status"] = cli.main(
            ["distill", "--epochs", "1", "--limit", "120", "--verbose", "0", "--output", run]
        )
    report = json.load(open(os.path.join(run, "report.json")))
    results["report"] = {key: report.get(key) for key in ("status", "backend", "stages", "files", "tflite")}
    results["files"] = sorted(os.listdir(run))
    student = keras.saving.load_model(os.path.join(run, "student.keras"))
    x_test, y_test = datasets.load("digits", limit=120).numpy("test")
    results["reloaded_accuracy"] = float(np.mean(np.argmax(student.predict(x_test, verbose=0), -1) == y_test))
    results["reported_accuracy"] = report["models"]["distilled"]["accuracy"]

    # TensorFlow-only entry points: one RuntimeError each, before any work.
    errors = {}
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        errors["cli_export_status"] = cli.main(["export", os.path.join(run, "student.keras")])
    errors["cli_export"] = stderr.getvalue()
    for name, call in {
        "to_tflite": lambda: export.to_tflite(student, os.path.join(folder, "s.tflite")),
        "legacy_distiller": lambda: legacy.Distiller(student, student),
        "quantization_aware": lambda: optimization.quantization_aware(student),
        "quantize_config": lambda: job.DistillConfig(quantize="int8"),
    }.items():
        try:
            call()
        except RuntimeError as error:
            errors[name] = str(error)
    results["errors"] = errors

    # TFRecord streaming is tf.data, which Keras' fit accepts on every backend.
    digits = datasets.load("digits", limit=200)
    x, y = digits.numpy("train")
    images = np.round(x * 255).astype("uint8")
    train = datasets.write_tfrecords(images, y, os.path.join(folder, "records", "train"), num_shards=2)
    streamed = datasets.from_tfrecords(train, train, digits.input_shape, digits.num_classes, batch_size=50)
    teacher = keras_kd.models.get("mlp_tiny", digits.input_shape, digits.num_classes, name="teacher")
    distiller = keras_kd.Distiller(teacher, keras_kd.models.get("mlp_tiny", digits.input_shape, 10),
                                  [keras_kd.losses.KDLoss()], student_loss_weight=0.5)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = distiller.fit(streamed.train, epochs=1, verbose=0).history
    results["streamed_steps_logs"] = {key: values[-1] for key, values in history.items()}
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_job_and_tensorflow_only_parts(backend, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["backend"] == backend

    # The job ran to the saved student, which reloads and predicts as reported.
    assert results["distill_status"] == 0
    report = results["report"]
    assert report["status"] == "complete" and report["backend"] == backend
    assert {"teacher", "scratch student", "distillation", "report"} <= set(report["stages"])
    assert "student.keras" in results["files"] and "report.md" in results["files"]
    assert results["reloaded_accuracy"] == pytest.approx(results["reported_accuracy"], abs=1e-9)
    # No TFLite file: the stage says why instead of failing the run.
    assert "student.tflite" not in results["files"] and report["tflite"] is None
    assert "needs the TensorFlow backend" in report["stages"]["export"]["skipped"]

    errors = results["errors"]
    assert errors["cli_export_status"] == 2
    assert errors["cli_export"].count("\n") == 1, errors["cli_export"]  # one line, no traceback
    for name in ("cli_export", "to_tflite", "legacy_distiller", "quantization_aware", "quantize_config"):
        assert name in errors, f"{name} did not raise RuntimeError"
        message = errors[name]
        assert "needs the TensorFlow backend of Keras" in message and repr(backend) in message, message
        assert "KERAS_BACKEND=tensorflow" in message, message

    logs = results["streamed_steps_logs"]
    assert {"loss", "student_loss", "kd_loss"} <= set(logs)
    assert all(math.isfinite(v) for v in logs.values()), logs
