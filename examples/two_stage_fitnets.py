"""Two-stage FitNets (Romero et al. 2015) on scikit-learn's digits.

Stage one trains the student up to its guided layer (and the regressor, a
1x1 conv connector) on the teacher's hint alone; stage two switches the hint
off and trains the whole student with KD. `keras_kd.callbacks.HintStage`
makes the switch inside one `fit`. Compared with the same terms trained
together from the start, KD alone and a scratch student (same initial
weights and budget).

    python examples/two_stage_fitnets.py --epochs 20
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from digits_setup import accuracy, cnn, load  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd.callbacks import HintStage  # noqa: E402


def terms(hint=True):
    kd = keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9)
    if not hint:
        return [kd]
    return [keras_kd.Term(keras_kd.losses.FitNetLoss(), "block1", "block1", connector="conv1x1", weight=100.0), kd]


def main(epochs=20, seed=0, limit=None, hint_epochs=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    hint_epochs = hint_epochs or max(1, epochs // 4)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = dict(epochs=epochs, batch_size=64, verbose=0)
    keras.utils.set_random_seed(seed)
    teacher = cnn(32, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(x_train, y_train, **fit)
    results = {"teacher": accuracy(teacher, x_test, y_test)}
    setups = {
        "scratch": (None, []),
        "KD": (terms(hint=False), []),
        "FitNets + KD, one stage": (terms(), []),
        f"two-stage (hint {hint_epochs} ep.)": (terms(), [HintStage(hint_epochs)]),
    }
    for name, (student_terms, callbacks) in setups.items():
        keras.utils.set_random_seed(seed + 1)
        student = cnn(4, "student")
        model = student if student_terms is None else keras_kd.Distiller(teacher, student, student_terms, 0.1)
        model.compile(keras.optimizers.Adam(3e-3), ce)
        model.fit(x_train, y_train, callbacks=callbacks, **fit)
        results[name] = accuracy(student, x_test, y_test)
    for name, value in results.items():
        print(f"{name:<26} test accuracy {value:.4f}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.seed)
