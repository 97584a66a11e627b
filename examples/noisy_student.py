"""Noisy Student self-training (Xie et al., CVPR 2020) on digits with few labels.

Only `--labels` training digits keep their label; the rest of the training
split is unlabeled. A ResNet-8 teacher learns from the labels alone, then two
rounds of Noisy Student train an equal-size ResNet-8 student (dropout 0.5
before the logits, stochastic depth with survival 0.8 for the last block,
random one-pixel shifts of its inputs) on the labels plus the teacher's soft
pseudo-labels; each student teaches the next round. The teacher and every
student get the same epochs and optimizer.

    python examples/noisy_student.py --epochs 30 --labels 100
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from digits_setup import accuracy, load  # noqa: E402

from keras_kd import models  # noqa: E402
from keras_kd.schemes.noisy_student import PAPER_DROPOUT, PAPER_STOCHASTIC_DEPTH, NoisyStudent  # noqa: E402

ROUNDS = 2


def resnet8(name, seed):
    keras.utils.set_random_seed(seed)
    return models.get(
        "resnet8", (8, 8, 1), 10, dropout=PAPER_DROPOUT, stochastic_depth=PAPER_STOCHASTIC_DEPTH, name=name
    )


def main(epochs=30, seed=0, limit=None, labels=100):
    x_train, x_test, y_train, y_test = load(seed, limit)
    x_labeled, y_labeled, x_unlabeled = x_train[:labels], y_train[:labels], x_train[labels:]
    start = time.time()
    teacher = resnet8("teacher", seed)
    teacher.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x_labeled, y_labeled, epochs=epochs, batch_size=32, verbose=0)
    results = {"teacher (labels only)": accuracy(teacher, x_test, y_test)}
    print(f"{'teacher (labels only)':<24} test accuracy {results['teacher (labels only)']:.4f}", flush=True)
    print(f"  {len(x_labeled)} labeled, {len(x_unlabeled)} unlabeled training digits ({time.time() - start:.1f}s)")

    scheme = NoisyStudent(
        teacher,
        lambda r: resnet8(f"student{r}", seed + r),  # equal size: the paper's smallest allowed student
        rounds=ROUNDS,
        pseudo_labels="soft",
        noise="shift",
        seed=seed,
    )
    start = time.time()
    _, history = scheme.run(
        (x_labeled, y_labeled),
        x_unlabeled,
        epochs=epochs,
        batch_size=32,
        optimizer=keras.optimizers.Adam(3e-3),
        validation_data=(x_test, y_test),
    )
    for record in history:
        name = f"student round {record['round']}"
        results[name] = record["student_accuracy"]
        stats = record["pseudo_labels"]
        print(
            f"{name:<24} test accuracy {results[name]:.4f}  (teacher {record['teacher_accuracy']:.4f}, "
            f"{stats['used']} pseudo-labels, mean confidence {stats['mean_confidence']:.3f}, "
            f"{record['student_params']:,} params)"
        )
    print(f"  {ROUNDS} rounds in {time.time() - start:.1f}s")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=100)
    args = parser.parse_args()
    main(args.epochs, args.seed, labels=args.labels)
