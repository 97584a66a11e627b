"""MNIST: teacher, scratch student and distilled students, same budget.

Hinton et al. (2015)'s setting without jitter: a 1200-1200 MLP teacher with
dropout, an 800-800 MLP student with no regularisation. The scratch student
and every distilled student start from the same initial weights, see the same
batches for the same number of epochs, with the same optimizer.

    python benchmarks/mnist_kd.py            # ~10 minutes on 2 CPU cores
    python benchmarks/mnist_kd.py --epochs 2 # smoke run

Writes benchmarks/results/mnist_kd.{json,md}.
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_kd  # noqa: E402
from common import load_mnist, write_results  # noqa: E402


def mlp(units, name, dropout=0.0, input_dropout=0.0):
    inputs = keras.Input((784,), name="pixels")
    x = keras.layers.Dropout(input_dropout)(inputs) if input_dropout else inputs
    for i, width in enumerate(units):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{i + 1}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


def methods(temperature):
    """Each method: (terms, student_loss_weight)."""
    kd = keras_kd.losses.KDLoss(temperature=temperature)
    return {
        "scratch": None,
        "kd": ([keras_kd.Term(kd, weight=0.9)], 0.1),
        "fitnet (hint + CE)": (
            [
                keras_kd.Term(
                    keras_kd.losses.FitNetLoss(),
                    teacher_layer="hidden2",
                    student_layer="hidden2",
                    connector="linear",
                    weight=1.0,
                )
            ],
            1.0,
        ),
    }


def errors(model, x, y):
    return int(np.sum(np.argmax(model.predict(x, batch_size=1000, verbose=0), -1) != y))


def main(epochs, seed, temperature, batch_size, student_units):
    x_train, y_train, x_test, y_test = load_mnist()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=epochs, batch_size=batch_size, verbose=2, shuffle=True)
    rows = []

    keras.utils.set_random_seed(seed)
    teacher = mlp([1200, 1200], "teacher", dropout=0.5, input_dropout=0.2)
    teacher.compile(keras.optimizers.Adam(1e-3), ce)
    start = time.time()
    teacher.fit(x_train, y_train, **fit)
    rows.append(("teacher", teacher.count_params(), errors(teacher, x_test, y_test), time.time() - start))
    print(f"teacher: {rows[-1][2]} test errors", flush=True)

    for name, spec in methods(temperature).items():
        keras.utils.set_random_seed(seed + 1)  # same student init for every method
        student = mlp(student_units, f"student_{len(rows)}")
        if spec is None:
            model = student
            model.compile(keras.optimizers.Adam(1e-3), ce)
        else:
            terms, student_loss_weight = spec
            model = keras_kd.Distiller(teacher, student, terms, student_loss_weight=student_loss_weight)
            model.compile(keras.optimizers.Adam(1e-3), ce)
        keras.utils.set_random_seed(seed + 2)  # same batch order
        start = time.time()
        model.fit(x_train, y_train, **fit)
        rows.append((f"student: {name}", student.count_params(), errors(student, x_test, y_test), time.time() - start))
        print(f"{name}: {rows[-1][2]} test errors", flush=True)

    scratch_errors = rows[1][2]
    lines = [
        f"# MNIST distillation (seed {seed}, {epochs} epochs, batch {batch_size}, T={temperature})",
        "",
        f"Teacher MLP 1200-1200 (dropout 0.5, input dropout 0.2); student MLP "
        f"{'-'.join(map(str, student_units))}, no regularisation. Test set: 10000 images.",
        "",
        "| model | params | test errors | test accuracy | vs scratch | train time (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, params, errs, seconds in rows:
        delta = "" if name == "teacher" else f"{scratch_errors - errs:+d} errors fewer"
        lines.append(
            f"| {name} | {params:,} | {errs} | {1 - errs / 10000:.2%} | {delta} | {seconds:.0f} |"
        )
    markdown = "\n".join(lines) + "\n"
    payload = {
        "config": {
            "epochs": epochs,
            "seed": seed,
            "temperature": temperature,
            "batch_size": batch_size,
            "student_units": student_units,
            "optimizer": "Adam(1e-3)",
        },
        "results": [
            {"model": n, "params": p, "test_errors": e, "test_accuracy": 1 - e / 10000, "train_seconds": s}
            for n, p, e, s in rows
        ],
    }
    paths = write_results("mnist_kd", payload, markdown)
    print(markdown)
    print("wrote", *paths)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--student-units", default="800,800")
    args = parser.parse_args()
    main(args.epochs, args.seed, args.temperature, args.batch_size, [int(u) for u in args.student_units.split(",")])
