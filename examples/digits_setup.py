"""Shared setup of the method-family examples: digits as 8x8 images, a CNN
teacher, a thinner CNN student, and a loop that compares methods with the
same budget. Layer names: block1/block2 (post-ReLU maps), bn1/bn2
(pre-ReLU), pool (embedding), logits."""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from keras_kd import recipes  # noqa: E402
from keras_kd.datasets import with_index  # noqa: E402


def load(seed=0, limit=None):
    data = load_digits()
    images = (data.data / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    split = train_test_split(images, data.target, test_size=0.5, stratify=data.target, random_state=seed)
    if limit:
        split = [part[:limit] for part in split]
    return split  # x_train, x_test, y_train, y_test


def cnn(width, name):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="block1")(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(x)
    x = keras.layers.ReLU(name="block2")(x)
    x = keras.layers.Flatten(name="pool")(x)  # keeps the layout digits need
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def train_alone(peers, x_train, y_train, x_test, y_test, seed, fit):
    """Test accuracy of a copy of each peer (same initial weights) trained on its own with
    cross-entropy, Adam 3e-3 and the same batch order: the baseline of the peer schemes."""
    accuracies = []
    for peer in peers:
        alone = keras.models.clone_model(peer)
        alone.set_weights(peer.get_weights())
        keras.utils.set_random_seed(seed + 1)  # the same batch order in every run
        alone.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        alone.fit(x_train, y_train, **fit)
        accuracies.append(accuracy(alone, x_test, y_test))
    return accuracies


def compare(methods, epochs=20, seed=0, limit=None, prepare=None):
    """Train a teacher, a scratch student and one student per method (each
    `(teacher_layers, student_layers)` keyed by recipe name); print and
    return {name: test accuracy}. `prepare(distiller, x_train)` runs before
    a method's fit (e.g. factor transfer's paraphraser pre-training)."""
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=epochs, batch_size=64, verbose=0)
    keras.utils.set_random_seed(seed)
    teacher = cnn(32, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(x_train, y_train, **fit)
    results = {"teacher": accuracy(teacher, x_test, y_test)}
    for name in ["scratch", *methods]:
        keras.utils.set_random_seed(seed + 1)  # every student starts alike
        student = cnn(4, f"student_{name}")
        start = time.time()
        train = (x_train, y_train)
        if name == "scratch":
            model = student
        else:
            # CRD keeps a memory row per training example: it is told their number, and each
            # batch carries the examples' positions (with_index; the Distiller takes them out).
            indexed = recipes.needs_index(name)
            extra = {"num_data": len(x_train)} if indexed else {}
            model = recipes.distiller(name, teacher, student, *methods[name], **extra)
            if prepare:
                prepare(model, x_train)
            if indexed:
                train = with_index(x_train, y_train)
        model.compile(keras.optimizers.Adam(3e-3), ce)
        model.fit(*train, **fit)
        results[name] = accuracy(student, x_test, y_test)
        print(f"{name:<10} test accuracy {results[name]:.4f}  ({time.time() - start:.1f}s)", flush=True)
    print(f"{'teacher':<10} test accuracy {results['teacher']:.4f}")
    return results


def run_cli(main, description):
    """`--epochs` / `--seed` command line shared by the family examples."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
