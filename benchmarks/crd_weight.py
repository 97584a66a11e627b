"""CRD against scratch, with its term per epoch, on the CIFAR-10 budget of quality.py.

    python benchmarks/crd_weight.py [--weights 0.8] [--seeds 0,1]

Trains the resnet20 -> resnet8 CRD student (`quality.CifarConfig` defaults:
first 10,000 images with crop + flip, 5 epochs, SGD 0.05 cosine, batch 64,
the cached seed-0 teacher) and the scratch student, for each student seed
(initial weights, batch order and CRD's negatives all follow the seed), and
logs, per epoch, the CRD term and the supervised cross-entropy, next to the
value the term takes when its scores do not tell an example's positive from
its negatives: with every score `P = 1/N` each direction costs
`log(K + 1) + K log(1 + 1/K)`, about `log K + 1`, and the term sums two
directions. Results: `benchmarks/results/crd_weight.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import write_results  # noqa: E402

from keras_kd import recipes  # noqa: E402


def uninformative_value(num_negatives):
    """The CRD term (both directions) when no score tells the positive apart."""
    k = num_negatives
    return 2 * (math.log(k + 1) + k * math.log1p(1 / k))


def run(weights, seeds, cache="~/.cache/keras_kd/benchmarks"):
    base = quality.CifarConfig()
    teacher_data = quality.load_data(base)
    x_test, y_test = teacher_data.numpy("test")
    teacher, _ = quality.train_teacher(base, "resnet20", teacher_data, Path(cache).expanduser())
    steps = int(np.ceil(teacher_data.num_train / base.batch_size))
    rows = []
    num_negatives = None
    for seed in seeds:
        config = dataclasses.replace(base, seed=seed)
        data = quality.load_data(config)
        indexed = quality.load_data(config, index=True)
        for weight in [None, *weights]:
            student = quality.new_student(config, "resnet8", data)
            start = time.time()
            if weight is None:
                quality.fit(config, student, data, steps)
                logs = {}
            else:
                distiller = recipes.distiller("crd", teacher, student, weight=weight, num_data=data.num_train)
                num_negatives = distiller.terms[0].loss.num_negatives
                quality.fit(config, distiller, indexed, steps)
                logs = distiller.history.history
            rows.append(
                {
                    "seed": seed,
                    "method": "scratch" if weight is None else "crd",
                    "weight": weight,
                    "accuracy": quality.accuracy(student, x_test, y_test),
                    "crd_loss": logs.get("crd_loss"),
                    "student_loss": logs.get("student_loss"),
                    "seconds": time.time() - start,
                }
            )
            print(rows[-1], flush=True)
    floor = uninformative_value(num_negatives)
    markdown = table(rows, floor, num_negatives, 100 * quality.accuracy(teacher, x_test, y_test), seeds)
    payload = {"config": {"weights": weights, "seeds": seeds}, "uninformative_value": floor, "rows": rows}
    write_results("crd_weight", payload, markdown)
    print(markdown)
    return payload


def table(rows, floor, num_negatives, teacher_accuracy, seeds):
    lines = [
        "# CRD against scratch (resnet20 -> resnet8, CIFAR-10 budget of quality.py)",
        "",
        f"Teacher {teacher_accuracy:.2f}% (seed 0). Student seeds {', '.join(map(str, seeds))}: each seed fixes the "
        "initial student, the batch order and CRD's negatives, the same for scratch and CRD. Value of the term "
        f"when no score tells the positive from the negatives (K = {num_negatives}): {floor:.2f}.",
        "",
        "| method | weight | seed | accuracy % | gain over scratch | CRD term per epoch | cross-entropy per epoch |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    scratch = {row["seed"]: row["accuracy"] for row in rows if row["method"] == "scratch"}
    for row in rows:
        gain = "" if row["method"] == "scratch" else f"{100 * (row['accuracy'] - scratch[row['seed']]):+.2f}"
        curves = [
            ", ".join(f"{v:.2f}" for v in row[key]) if row[key] else "" for key in ("crd_loss", "student_loss")
        ]
        lines.append(
            f"| {row['method']} | {row['weight'] or ''} | {row['seed']} | {100 * row['accuracy']:.2f} | {gain} | "
            f"{curves[0]} | {curves[1]} |"
        )
    lines += ["", "| method | weight | mean accuracy % | std | mean gain over scratch |", "|---|---:|---:|---:|---:|"]
    for method, weight in sorted({(row["method"], row["weight"] or 0) for row in rows}):
        picked = [row for row in rows if row["method"] == method and (row["weight"] or 0) == weight]
        accuracies = 100 * np.array([row["accuracy"] for row in picked])
        gains = [100 * (row["accuracy"] - scratch[row["seed"]]) for row in picked]
        lines.append(
            f"| {method} | {weight or ''} | {accuracies.mean():.2f} | {accuracies.std():.2f} | "
            f"{'' if method == 'scratch' else f'{np.mean(gains):+.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0.8", help="comma-separated CRD term weights")
    parser.add_argument("--seeds", default="0,1", help="comma-separated student seeds")
    parser.add_argument("--cache", default="~/.cache/keras_kd/benchmarks", help="folder for trained teachers")
    args = parser.parse_args(argv)
    run(
        [float(w) for w in args.weights.split(",")],
        [int(s) for s in args.seeds.split(",")],
        cache=args.cache,
    )


if __name__ == "__main__":
    main()
