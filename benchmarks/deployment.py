"""Deployment benchmark on MNIST: a KD-distilled student exported to TFLite
in every mode, and the same student after quantization- and pruning-aware
distillation.

    python benchmarks/deployment.py [--epochs 10] [--qat-epochs 2] [--seed 0]

Reads `mnist.npz` from `$KERAS_KD_DATA_DIR` or `../shared/data`. Trains
Hinton's 1200-1200 teacher and distills the 800-800 student (0.9 KD at T=4
+ 0.1 CE); exports it as float32, float16, dynamic-range and int8 (500
training images calibrate); then fine-tunes a copy with quantization-aware
distillation (same terms, tensorflow-model-optimization fake-quant), a
control copy with the same extra epochs in float then post-training int8,
and another with pruning-aware distillation (50% sparsity), and exports
those.
For every file: size (and gzip size, where pruning pays), test accuracy in
the LiteRT interpreter, the largest output difference from its Keras model
and the median single-image latency. Results: `benchmarks/results/deployment.{json,md}`.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tensorflow-model-optimization wraps tf_keras models only
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, write_results  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import datasets, export, legacy, models, optimization  # noqa: E402


def kd_terms():
    return [keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9)]


def gzip_bytes(path):
    return len(zlib.compress(Path(path).read_bytes(), 9))


def row(name, model, path, x_test, y_test, keras_accuracy=None):
    result = export.compare(model, path, (x_test, y_test), repeats=200)
    result["gzip_bytes"] = gzip_bytes(path)
    if keras_accuracy is not None:
        result["keras_accuracy"] = keras_accuracy
    print(
        f"{name:<32} {result['tflite_bytes']:>10,} B  acc {result['tflite_accuracy']:.4f}  "
        f"(keras {result['keras_accuracy']:.4f})  {result['tflite_latency_ms']:.3f} ms",
        flush=True,
    )
    return {"name": name, **result}


def main(epochs=10, qat_epochs=2, seed=0, batch_size=128):
    start = time.time()
    data = datasets.load("mnist", batch_size=batch_size, data_dir=str(data_dir()), seed=seed)
    x_train, _ = data.numpy("train")
    x_test, y_test = data.numpy("test")
    ce3 = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    ce2 = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    keras.utils.set_random_seed(seed)
    teacher = models.get("hinton_teacher", data.input_shape, 10)
    teacher.compile(keras.optimizers.Adam(1e-3), ce3, metrics=["accuracy"])
    teacher.fit(data.train, epochs=epochs, verbose=2)
    keras.utils.set_random_seed(seed + 1)
    student = models.get("hinton_student", data.input_shape, 10)
    distiller = keras_kd.Distiller(teacher, student, kd_terms(), student_loss_weight=0.1)
    distiller.compile(keras.optimizers.Adam(1e-3), ce3, metrics=["accuracy"])
    distiller.fit(data.train, epochs=epochs, verbose=2)
    print(f"trained teacher and KD student in {time.time() - start:.0f}s", flush=True)

    folder = Path(tempfile.mkdtemp(prefix="keras_kd_deploy_"))
    calibration = x_train[:500]
    rows = []
    for mode in ("none", "float16", "dynamic", "int8"):
        path = export.to_tflite(student, folder / f"kd_{mode}.tflite", quantize=mode, representative_data=calibration)
        rows.append(row(f"KD student, {'float32' if mode == 'none' else mode}", student, path, x_test, y_test))

    # Quantization-aware distillation: fine-tune the distilled student with fake-quant, same teacher and terms.
    qat = optimization.quantization_aware(legacy.to_tf_keras(student))
    qat_distiller = legacy.Distiller(teacher, qat, kd_terms(), student_loss_weight=0.1)
    qat_distiller.compile(tf_keras.optimizers.Adam(1e-4), ce2, metrics=["accuracy"])
    qat_distiller.fit(data.train, epochs=qat_epochs, verbose=2)
    path = export.to_tflite(qat, folder / "qat_int8.tflite", quantize="int8")
    rows.append(row("QAT-distilled student, int8", qat, path, x_test, y_test))

    # Control: the same extra distillation epochs in float, then post-training int8, so the QAT row
    # is not credited with what more training alone gives.
    control = keras.models.clone_model(student)
    control.set_weights(student.get_weights())
    control_distiller = keras_kd.Distiller(teacher, control, kd_terms(), student_loss_weight=0.1)
    control_distiller.compile(keras.optimizers.Adam(1e-4), ce3, metrics=["accuracy"])
    control_distiller.fit(data.train, epochs=qat_epochs, verbose=2)
    path = export.to_tflite(control, folder / "control_int8.tflite", quantize="int8", representative_data=calibration)
    rows.append(row(f"KD student + {qat_epochs} float KD epochs, int8", control, path, x_test, y_test))

    # Pruning-aware distillation: 50% of the kernel weights zeroed over the first half of the fine-tuning.
    steps = qat_epochs * int(np.ceil(data.num_train / batch_size))
    pruned = optimization.pruning_aware(legacy.to_tf_keras(student), target_sparsity=0.5, end_step=steps // 2)
    pruned_distiller = legacy.Distiller(teacher, pruned, kd_terms(), student_loss_weight=0.1)
    pruned_distiller.compile(tf_keras.optimizers.Adam(1e-4), ce2, metrics=["accuracy"])
    pruned_distiller.fit(data.train, epochs=qat_epochs, verbose=2, callbacks=optimization.pruning_callbacks())
    stripped = optimization.strip_pruning(pruned)
    sparsity = optimization.sparsity(stripped)
    path = export.to_tflite(stripped, folder / "pruned_int8.tflite", quantize="int8", representative_data=calibration)
    rows.append(row(f"pruned ({sparsity:.0%}) KD student, int8", stripped, path, x_test, y_test))

    float_row = rows[0]
    int8_row = rows[3]
    qat_row = rows[4]
    teacher_accuracy = float(np.mean(np.argmax(teacher.predict(x_test, verbose=0), -1) == y_test))
    targets = {
        "int8_size_ratio": int8_row["tflite_bytes"] / float_row["tflite_bytes"],
        "int8_accuracy_drop_points": 100 * (float_row["keras_accuracy"] - int8_row["tflite_accuracy"]),
        "qat_minus_ptq_int8_points": 100 * (qat_row["tflite_accuracy"] - int8_row["tflite_accuracy"]),
        "qat_minus_control_int8_points": 100 * (qat_row["tflite_accuracy"] - rows[5]["tflite_accuracy"]),
    }
    targets["int8_size_ratio_met"] = targets["int8_size_ratio"] <= 0.30
    targets["int8_accuracy_met"] = targets["int8_accuracy_drop_points"] <= 0.5
    targets["qat_met"] = targets["qat_minus_ptq_int8_points"] >= 0.0

    lines = [
        "# Deployment: TFLite export of a distilled MNIST student",
        "",
        f"Teacher 1200-1200 MLP ({teacher.count_params():,} params, test accuracy {teacher_accuracy:.4f}); "
        f"student 800-800 MLP ({student.count_params():,} params) distilled with 0.9 KD (T=4) + 0.1 CE, "
        f"{epochs} epochs each (Adam 1e-3, batch {batch_size}, seed {seed}). QAT and pruning: {qat_epochs} epochs "
        "of the same distillation from the KD student (Adam 1e-4). Latency: median of 200 single-image "
        "invocations of the LiteRT interpreter (XNNPACK, default threads) on this machine; one run.",
        "",
        "| model | file bytes | gzip bytes | Keras accuracy | TFLite accuracy | max output diff | latency ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in rows:
        lines.append(
            f"| {entry['name']} | {entry['tflite_bytes']:,} | {entry['gzip_bytes']:,} | {entry['keras_accuracy']:.4f} "
            f"| {entry['tflite_accuracy']:.4f} | {entry['max_abs_difference']:.4f} | {entry['tflite_latency_ms']:.3f} |"
        )
    lines += [
        "",
        f"- int8 file / float32 file: {targets['int8_size_ratio']:.3f} (target <= 0.30: "
        f"{'met' if targets['int8_size_ratio_met'] else 'missed'})",
        f"- int8 accuracy drop vs the Keras student: {targets['int8_accuracy_drop_points']:+.2f} points "
        f"(target <= 0.5: {'met' if targets['int8_accuracy_met'] else 'missed'})",
        f"- QAT-distilled int8 minus post-training int8: {targets['qat_minus_ptq_int8_points']:+.2f} points "
        f"(target >= 0: {'met' if targets['qat_met'] else 'missed'})",
        f"- QAT-distilled int8 minus the control (same extra epochs in float, then int8): "
        f"{targets['qat_minus_control_int8_points']:+.2f} points",
        f"- sparsity of the pruned student: {sparsity:.3f}",
        "",
    ]
    payload = {
        "config": {"epochs": epochs, "qat_epochs": qat_epochs, "seed": seed, "batch_size": batch_size},
        "teacher_accuracy": teacher_accuracy,
        "rows": rows,
        "targets": targets,
        "pruned_sparsity": sparsity,
        "seconds": time.time() - start,
    }
    paths = write_results("deployment", payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {paths[0]} and {paths[1]} in {time.time() - start:.0f}s")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    main(**{k.replace("-", "_"): v for k, v in vars(parser.parse_args()).items()})
