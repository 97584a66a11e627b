"""Adversarial distillation (Xu, Hsu & Huang, arXiv:1709.00513) on digits:
a conditional discriminator on logits added to KD, and on its own next to
the supervised loss, against plain KD and a scratch student with the same
budget (same epochs, batches and student optimizer).

    python examples/adversarial_distillation.py --epochs 20
"""

import time

import keras
from digits_setup import accuracy, cnn, load, run_cli

import keras_kd
from keras_kd.schemes.adversarial import AdversarialDistiller


def kd_terms():
    return keras_kd.recipes.get("kd")  # KDLoss(T=4), weight 0.9 (supervised weight 0.1)


def main(epochs=20, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}
    keras.utils.set_random_seed(seed)
    teacher = cnn(32, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(x_train, y_train, **fit)
    results = {"teacher": accuracy(teacher, x_test, y_test)}

    kd_weight = keras_kd.recipes.student_loss_weight("kd")
    methods = {
        "scratch": lambda s: s,
        "kd": lambda s: keras_kd.Distiller(teacher, s, kd_terms(), student_loss_weight=kd_weight),
        "kd+adv": lambda s: AdversarialDistiller(teacher, s, kd_terms(), student_loss_weight=kd_weight),
        "ce+adv": lambda s: AdversarialDistiller(teacher, s, student_loss_weight=1.0),
    }
    for name, build in methods.items():
        keras.utils.set_random_seed(seed + 1)  # every student starts alike
        student = cnn(4, f"student_{name.replace('+', '_')}")
        model = build(student)
        start = time.time()
        if isinstance(model, AdversarialDistiller):
            model.compile(keras.optimizers.Adam(3e-3), ce, discriminator_optimizer=keras.optimizers.Adam(1e-4))
        else:
            model.compile(keras.optimizers.Adam(3e-3), ce)
        history = model.fit(x_train, y_train, **fit).history
        results[name] = accuracy(student, x_test, y_test)
        extra = (
            f"  discriminator_loss {history['discriminator_loss'][-1]:.3f}" if "discriminator_loss" in history else ""
        )
        print(f"{name:<8} test accuracy {results[name]:.4f}  ({time.time() - start:.1f}s){extra}", flush=True)

    print(f"\n{'method':<8}{'test accuracy':>14}")
    for name, value in results.items():
        print(f"{name:<8}{value:>14.4f}")
    return results


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
