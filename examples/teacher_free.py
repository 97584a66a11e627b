"""Teacher-free KD (Yuan et al., CVPR 2020) on digits: a manually designed
virtual teacher (Tf-KD_reg) and self-training (Tf-KD_self), each against
its fair baseline with the same budget.

- tf_kd_reg vs scratch: E epochs each, no teacher anywhere.
- tf_kd_self vs scratch_2x: the scratch student (E epochs) teaches a fresh
  copy of itself for E more epochs; "double training" (the reference's
  control) trains the scratch student E more epochs instead.

    python examples/teacher_free.py --epochs 20
"""

import time

import keras
from digits_setup import accuracy, cnn, load, run_cli

import keras_kd
from keras_kd.schemes.teacher_free import self_teacher, virtual_teacher_distiller

NUM_CLASSES = 10
# Reference Tf-KD_self setting (MobileNetV2/ShuffleNetV2 on CIFAR-100):
# alpha = 0.95, T = 20, multiplier = 1; KDLoss weight alpha * multiplier / K.
SELF_ALPHA, SELF_TEMPERATURE = 0.95, 20.0


def main(epochs=20, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}

    def student(name):
        keras.utils.set_random_seed(seed + 1)  # every student starts alike
        return cnn(4, f"student_{name}")

    def train(name, model, report=None):
        start = time.time()
        model.compile(keras.optimizers.Adam(3e-3), ce)
        model.fit(x_train, y_train, **fit)
        results[name] = accuracy(report or model, x_test, y_test)
        print(f"{name:<12} test accuracy {results[name]:.4f}  ({time.time() - start:.1f}s)", flush=True)

    results = {}
    scratch = student("scratch")
    train("scratch", scratch)
    regularized = student("tf_kd_reg")
    train("tf_kd_reg", virtual_teacher_distiller(regularized), regularized)

    teacher = self_teacher(scratch)  # frozen copy, taken before the scratch student trains on
    fresh = student("tf_kd_self")
    distiller = keras_kd.Distiller(
        teacher,
        fresh,
        [keras_kd.Term(keras_kd.losses.KDLoss(temperature=SELF_TEMPERATURE), weight=SELF_ALPHA / NUM_CLASSES)],
        student_loss_weight=1.0 - SELF_ALPHA,
    )
    train("tf_kd_self", distiller, fresh)
    train("scratch_2x", scratch)  # E more epochs: the same total budget as tf_kd_self

    print(f"\n{'method':<12}{'test accuracy':>14}")
    for name, value in results.items():
        print(f"{name:<12}{value:>14.4f}")
    return results


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
