"""Distilling several teachers into one student on scikit-learn's digits.

Two CNN teachers (different widths and seeds) teach one small CNN student,
in the two ways the Distiller offers, against KD from each teacher alone and
a scratch student (same initial weights and budget):

- "ensemble": one KD term over the weighted average of the teachers'
  softened outputs (Hinton et al. 2015's ensemble soft targets);
- "per-teacher terms": a KD term bound to each teacher (`Term(teacher=...)`).

    python examples/multi_teacher.py --epochs 20
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from digits_setup import accuracy, cnn, load  # noqa: E402

import keras_kd  # noqa: E402


def main(epochs=20, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=epochs, batch_size=64, verbose=0)
    teachers = {}
    for offset, (key, width) in enumerate((("wide", 32), ("narrow", 16))):
        keras.utils.set_random_seed(seed + 10 + offset)
        teachers[key] = cnn(width, f"teacher_{key}")
        teachers[key].compile(keras.optimizers.Adam(3e-3), ce)
        teachers[key].fit(x_train, y_train, **fit)
    results = {f"teacher {key}": accuracy(model, x_test, y_test) for key, model in teachers.items()}

    def kd(temperature=4.0, teacher=None, weight=0.9):
        return keras_kd.Term(keras_kd.losses.KDLoss(temperature=temperature), weight=weight, teacher=teacher)

    setups = {
        "scratch": None,
        "KD from wide": (teachers["wide"], [kd()]),
        "KD from narrow": (teachers["narrow"], [kd()]),
        "ensemble (uniform)": (teachers, [kd()]),
        "per-teacher terms": (teachers, [kd(teacher="wide", weight=0.45), kd(teacher="narrow", weight=0.45)]),
    }
    for name, setup in setups.items():
        keras.utils.set_random_seed(seed + 1)  # every student starts alike
        student = cnn(4, "student")
        model = student if setup is None else keras_kd.Distiller(setup[0], student, setup[1], student_loss_weight=0.1)
        model.compile(keras.optimizers.Adam(3e-3), ce)
        model.fit(x_train, y_train, **fit)
        results[name] = accuracy(student, x_test, y_test)
    for name, value in results.items():
        print(f"{name:<22} test accuracy {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.seed)
