"""CRD's term per epoch at several weights, on the CIFAR-10 budget of quality.py.

    python benchmarks/crd_weight.py [--weights 0.8,0.08]

The CIFAR-10 table's CRD student (weight 0.8, the CRD scripts' `-b 0.8`)
lands far below scratch. This trains the same resnet20 -> resnet8 CRD
student (`quality.CifarConfig` defaults: first 10,000 images, 5 epochs,
SGD 0.05 cosine, batch 64, the same initial weights and batches, the cached
teacher) at each weight and logs, per epoch, the CRD term and the
supervised cross-entropy, next to the value the term takes when its scores
do not tell an example's positive from its negatives: with every score
`P = 1/K` (the best such value, since `K Pn = K/N = 1` here) each direction
costs `log(K + 1) + K log(1 + 1/K)`, about `log K + 1`, and the term sums
two directions. Results: `benchmarks/results/crd_weight.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import write_results  # noqa: E402

from keras_kd import losses, recipes  # noqa: E402


def uninformative_value(num_negatives):
    """The CRD term (both directions) when every score is `P = 1/K`."""
    k = num_negatives
    return 2 * (math.log(k + 1) + k * math.log1p(1 / k))


def run(weights, cache="~/.cache/keras_kd/benchmarks"):
    config = quality.CifarConfig()
    data = quality.load_data(config)
    x_test, y_test = data.numpy("test")
    teacher, _ = quality.train_teacher(config, "resnet20", data, Path(cache).expanduser())
    steps = int(np.ceil(data.num_train / config.batch_size))
    floor = uninformative_value(losses.CRDLoss().num_negatives)
    rows = []
    for weight in weights:
        student = quality.new_student(config, "resnet8", data)
        distiller = recipes.distiller("crd", teacher, student, weight=weight)
        start = time.time()
        history = quality.fit(config, distiller, data, steps)
        logs = distiller.history.history
        rows.append(
            {
                "weight": weight,
                "accuracy": quality.accuracy(student, x_test, y_test),
                "crd_loss": logs["crd_loss"],
                "student_loss": logs["student_loss"],
                "loss": history,
                "seconds": time.time() - start,
            }
        )
        print(rows[-1], flush=True)
    lines = [
        "# CRD's term per epoch (resnet20 -> resnet8, CIFAR-10 budget of quality.py)",
        "",
        f"Teacher {100 * quality.accuracy(teacher, x_test, y_test):.2f}%; one run per weight, same initial "
        f"student and batches. Value of the term when no score tells the positive from the negatives "
        f"(every P = 1/K, K = {losses.CRDLoss().num_negatives}): {floor:.2f}.",
        "",
        "| weight | accuracy % | CRD term per epoch | cross-entropy per epoch |",
        "|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['weight']} | {100 * row['accuracy']:.2f} | "
            + ", ".join(f"{v:.2f}" for v in row["crd_loss"])
            + " | "
            + ", ".join(f"{v:.3f}" for v in row["student_loss"])
            + " |"
        )
    payload = {"config": {"weights": weights}, "uninformative_value": floor, "rows": rows}
    write_results("crd_weight", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return payload


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0.8,0.08", help="comma-separated CRD term weights")
    parser.add_argument("--cache", default="~/.cache/keras_kd/benchmarks", help="folder for trained teachers")
    args = parser.parse_args(argv)
    run([float(w) for w in args.weights.split(",")], cache=args.cache)


if __name__ == "__main__":
    main()
