"""Distilling without labels: on unlabeled inputs, and on synthetic ones.

A teacher trained on scikit-learn's labelled digits is distilled into a
small student by a party that holds no labels. Three students with the same
architecture, initial weights and number of steps:

- "labelled subset": trained on the only labels it has (`--labels` examples);
- "unlabelled transfer": distilled on the training images with no labels
  (the Distiller needs none: each batch is inputs alone, KD is the only term);
- "synthetic transfer": distilled on inputs it made itself, mixup of random
  pairs of the labelled subset's images (Zhang et al. 2018's mixup used as a
  transfer set, as in data-free and "function matching" distillation).

    python examples/unlabeled_transfer.py --epochs 60 --labels 100
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from digits_setup import accuracy, cnn, load  # noqa: E402

import keras_kd  # noqa: E402


def mixup_images(images, count, seed):
    """`count` convex combinations of random pairs, weights ~ Beta(1, 1)."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(images), count), rng.integers(0, len(images), count)
    weight = rng.beta(1.0, 1.0, size=(count, 1, 1, 1)).astype("float32")
    return weight * images[first] + (1 - weight) * images[second]


def main(epochs=60, seed=0, limit=None, labels=100):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(seed)
    teacher = cnn(32, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    results = {"teacher (all labels)": accuracy(teacher, x_test, y_test)}
    steps = epochs * int(np.ceil(len(x_train) / 32))  # every student gets the same number of steps

    def student(name):
        keras.utils.set_random_seed(seed + 1)
        return cnn(8, name)

    subset = student("labelled_subset")
    subset.compile(keras.optimizers.Adam(3e-3), ce)
    labelled = tf.data.Dataset.from_tensor_slices((x_train[:labels], y_train[:labels])).repeat().shuffle(256, seed=seed)
    subset.fit(labelled.batch(32), steps_per_epoch=steps // epochs, epochs=epochs, verbose=0)
    results[f"labelled subset ({labels})"] = accuracy(subset, x_test, y_test)

    transfer_sets = {
        "unlabelled transfer": x_train,
        "synthetic transfer (mixup)": mixup_images(x_train[:labels], len(x_train), seed),
    }
    for name, inputs in transfer_sets.items():
        distilled = student(name.split(" ")[0])
        distiller = keras_kd.Distiller(teacher, distilled, [keras_kd.losses.KDLoss(temperature=4.0)])
        distiller.compile(keras.optimizers.Adam(3e-3))  # no supervised loss: there are no labels
        unlabelled = tf.data.Dataset.from_tensor_slices(inputs).shuffle(len(inputs), seed=seed).batch(32)
        distiller.fit(unlabelled, epochs=epochs, verbose=0)
        results[name] = accuracy(distilled, x_test, y_test)

    for name, value in results.items():
        print(f"{name:<30} test accuracy {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels", type=int, default=100)
    args = parser.parse_args()
    main(args.epochs, args.seed, labels=args.labels)
