"""Seconds per epoch of distillation, side by side in one process.

    python benchmarks/speed.py [--train 20000] [--epochs 4] [--batch-size 128]

Same teacher (`cnn_large`), student (a `cnn` with widths 16-128, so its
128-d embedding matches the teacher's for the feature term that
`keras.distillation` requires to have equal shapes), data (the first
`--train` MNIST images, one unshuffled in-memory `tf.data` pipeline) and
batch size for every row:

- plain `student.fit` (the student's share, a lower bound);
- the teacher's forward pass alone, in a compiled function;
- `keras.distillation.Distiller` with logits KD, and with logits + a feature
  term (MSE on the embeddings);
- `keras_kd.Distiller` with the same terms, and with `TeacherCache`;
- with and without `jit_compile` (XLA).

Each row's figure is the median seconds per epoch after the first (warm-up,
tracing). Results: `benchmarks/results/speed.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, write_results  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import datasets, models  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TEMPERATURE = 3.0


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def median_after_first(seconds):
    return statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]


def main(train=20000, epochs=4, batch_size=128, seed=0):
    data = datasets.load("mnist", batch_size=batch_size, data_dir=str(data_dir()), seed=seed, limit=train)
    x, y = data.numpy("train")
    ordered = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)

    keras.utils.set_random_seed(seed)
    teacher = models.get("cnn_large", data.input_shape, 10, name="teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), CE)
    teacher.fit(ordered, epochs=1, verbose=0)

    def student():
        keras.utils.set_random_seed(seed + 1)
        return models.get("cnn_small", data.input_shape, 10, widths=(16, 128), name="student")

    rows = []

    def record(name, seconds, jit):
        rows.append({"name": name, "jit_compile": jit, "seconds_per_epoch": seconds})
        print(f"{name:<48} jit={jit!s:<5} {seconds:.3f} s/epoch", flush=True)

    def timed_fit(model, jit, callbacks=()):
        model.compile(keras.optimizers.Adam(1e-3), CE, jit_compile=jit)
        timer = EpochTimer()
        model.fit(ordered, epochs=epochs, verbose=0, callbacks=[timer, *callbacks])
        return timer.seconds

    def keras_terms(feature):
        losses = [keras.distillation.LogitsDistillation(temperature=TEMPERATURE)]
        if feature:
            losses.append(keras.distillation.FeatureDistillation("mse", "embedding", "embedding"))
        return losses

    def kd_terms(feature):
        terms = [keras_kd.Term(keras_kd.losses.KDLoss(temperature=TEMPERATURE), weight=0.5)]
        if feature:
            terms.append(keras_kd.Term(keras_kd.losses.FitNetLoss(), "embedding", "embedding", weight=0.5))
        return terms

    results = {}
    for jit in (False, True):
        results[("student", jit)] = median_after_first(timed_fit(student(), jit))
        record("student.fit", results[("student", jit)], jit)

        forward = tf.function(lambda batch: teacher(batch, training=False), jit_compile=jit)
        passes = []
        for _ in range(3):
            start = time.perf_counter()
            for batch, _labels in ordered:
                forward(batch)
            passes.append(time.perf_counter() - start)
        results[("teacher", jit)] = median_after_first(passes)
        record("teacher forward pass", results[("teacher", jit)], jit)

        for feature in (False, True):
            label = "logits + feature" if feature else "logits"
            model = keras.distillation.Distiller(teacher, student(), keras_terms(feature), student_loss_weight=0.5)
            results[("keras", feature, jit)] = median_after_first(timed_fit(model, jit))
            record(f"keras.distillation.Distiller, {label}", results[("keras", feature, jit)], jit)
            model = keras_kd.Distiller(teacher, student(), kd_terms(feature), student_loss_weight=0.5)
            results[("keras_kd", feature, jit)] = median_after_first(timed_fit(model, jit))
            record(f"keras_kd.Distiller, {label}", results[("keras_kd", feature, jit)], jit)

        model = keras_kd.Distiller(teacher, student(), kd_terms(True), student_loss_weight=0.5)
        results[("cache", jit)] = median_after_first(timed_fit(model, jit, [keras_kd.callbacks.TeacherCache()]))
        record("keras_kd.Distiller, logits + feature, TeacherCache", results[("cache", jit)], jit)

    lines = [
        "# Distillation speed (seconds per epoch)",
        "",
        f"MNIST, first {train} training images, batch {batch_size}, {epochs} epochs per row, median of the epochs "
        "after the first; one run on this machine. Teacher cnn_large "
        f"({teacher.count_params():,} params), student cnn widths 16-128 ({student().count_params():,} params).",
        "",
        "| configuration | jit_compile=False | jit_compile=True |",
        "|---|---:|---:|",
    ]
    for name in dict.fromkeys(row["name"] for row in rows):
        values = {row["jit_compile"]: row["seconds_per_epoch"] for row in rows if row["name"] == name}
        lines.append(f"| {name} | {values[False]:.3f} | {values[True]:.3f} |")
    ratios = {}
    for jit in (False, True):
        bound = results[("student", jit)] + results[("teacher", jit)]
        ratios[f"keras_kd_vs_student_plus_teacher_jit{jit}"] = results[("keras_kd", True, jit)] / bound
        ratios[f"keras_distillation_vs_keras_kd_jit{jit}"] = results[("keras", True, jit)] / results[("keras_kd", True, jit)]
        ratios[f"cache_vs_student_jit{jit}"] = results[("cache", jit)] / results[("student", jit)]
    lines += ["", "| ratio | jit_compile=False | jit_compile=True | target |", "|---|---:|---:|---|"]
    for key, target in (
        ("keras_kd_vs_student_plus_teacher", "<= 1.10"),
        ("keras_distillation_vs_keras_kd", ">= 1.3"),
        ("cache_vs_student", "<= 1.15"),
    ):
        lines.append(f"| {key} | {ratios[key + '_jitFalse']:.2f} | {ratios[key + '_jitTrue']:.2f} | {target} |")
    payload = {
        "config": {"train": train, "epochs": epochs, "batch_size": batch_size, "seed": seed},
        "rows": rows,
        "ratios": ratios,
    }
    paths = write_results("speed", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {paths[0]} and {paths[1]}")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    main(**{key.replace("-", "_"): value for key, value in vars(parser.parse_args()).items()})
