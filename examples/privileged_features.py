"""Privileged-feature distillation: the teacher sees features that exist only
offline, the student only the online ones (Lopez-Paz et al., "Unifying
Distillation and Privileged Information", ICLR 2016; the cross-modal
direction that distillation surveys close with), with the paper's
generalized distillation (`generalized_distiller`).

On scikit-learn's digits the "online" feature is the top half of each 8x8
image (what a cheap sensor would give) and the "offline" feature the bottom
half (only available when the data were labelled). Batches are dicts; the
Distiller hands each model the inputs it names. The student, trained on the
top half alone, is compared with the same student distilled from a teacher
that saw both halves, with the same budget and initial weights.

    python examples/privileged_features.py --epochs 60
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_kd  # noqa: E402


def halves(images):
    return {"online": images[:, :4].reshape(len(images), -1), "offline": images[:, 4:].reshape(len(images), -1)}


def mlp(inputs, name, hidden=64):
    x = inputs[0] if len(inputs) == 1 else keras.layers.Concatenate()(inputs)
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name=name)


def generalized_distiller(teacher, student, temperature=4.0, imitation=0.9):
    """Lopez-Paz et al.'s generalized distillation, as in their code
    (github.com/lopezpaz/distillation_privileged_information, `code/mnist.py`):

        (1 - imitation) * CE(y, softmax(f_s)) + imitation * T^2 * KL(softmax(f_t / T) || softmax(f_s))

    The teacher's output is softened by `T`, the student's is NOT (their
    student's "soft" output is its plain softmax); the KL differs from their
    cross-entropy by the teacher's entropy, a constant. That is what sets it
    apart from Hinton's KD (`KDLoss(T)` divides both sides by `T`): here the
    teacher is wrapped to output `f_t / T` and the term is `KDLoss` at `T = 1`
    (its `T^2` factor is then 1, so the weight carries `imitation * T^2`).
    The paper's `lambda` is `imitation`; its code searches
    T in {1, 2, 5, 10, 20, 50} and lambda in {0, 0.1, ..., 1}.
    """
    inputs = teacher.inputs[0] if len(teacher.inputs) == 1 else teacher.inputs
    softened = keras.layers.Rescaling(1.0 / temperature, name="divide_by_temperature")(teacher.outputs[0])
    soft_teacher = keras.Model(inputs, softened, name=f"{teacher.name}_over_t")
    term = keras_kd.Term(keras_kd.losses.KDLoss(temperature=1.0), weight=imitation * temperature**2)
    return keras_kd.Distiller(soft_teacher, student, [term], student_loss_weight=1.0 - imitation)


def main(epochs=60, seed=0, limit=None, temperature=4.0, imitation=0.9):
    data = load_digits()
    images = (data.data / 16.0).astype("float32").reshape(-1, 8, 8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, data.target, test_size=0.5, stratify=data.target, random_state=seed
    )
    if limit:
        x_train, y_train, x_test, y_test = x_train[:limit], y_train[:limit], x_test[:limit], y_test[:limit]
    train, test = halves(x_train), halves(x_test)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=epochs, batch_size=32, verbose=0)

    def accuracy(model, features):
        return float(np.mean(np.argmax(model.predict(features, verbose=0), -1) == y_test))

    keras.utils.set_random_seed(seed)
    online, offline = keras.Input((32,), name="online"), keras.Input((32,), name="offline")
    teacher = mlp([online, offline], "teacher", hidden=128)
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(train, y_train, **fit)
    results = {"teacher (both halves)": accuracy(teacher, test)}

    def student(name):
        keras.utils.set_random_seed(seed + 1)  # both students start from the same weights
        return mlp([keras.Input((32,), name="online")], name)

    scratch = student("scratch")
    scratch.compile(keras.optimizers.Adam(3e-3), ce)
    scratch.fit(train["online"], y_train, **fit)
    results["student, top half, scratch"] = accuracy(scratch, test["online"])

    distilled = student("distilled")
    distiller = generalized_distiller(teacher, distilled, temperature, imitation)
    distiller.compile(keras.optimizers.Adam(3e-3), ce)
    distiller.fit(train, y_train, **fit)  # dict batches: the student reads "online" only
    results["student, top half, distilled"] = accuracy(distilled, test["online"])

    for name, value in results.items():
        print(f"{name:<32} test accuracy {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.seed)
