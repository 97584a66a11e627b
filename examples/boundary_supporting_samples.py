"""Boundary supporting samples (Heo et al., AAAI 2019) on digits: KD plus
a KD term on adversarial samples near the teacher's decision boundaries,
against the same KD without them and a scratch student, with the same
budget (epochs, batches, optimizer, KD term and its schedule).

Both KD students use the reference's KD (T = 3) and its weight schedule
(4 -> 1, as `KDLoss` weights divided by T^2); the BSS student adds the BSS
term with the reference's schedule (2 -> 0 at 3/4 of training), 10 attack
steps of size 0.3, a quarter of each batch attacked, pixels kept in [0, 1].

    python examples/boundary_supporting_samples.py --epochs 20
"""

import time

import keras
from digits_setup import accuracy, cnn, load, run_cli

import keras_kd
from keras_kd.schemes.boundary import BoundarySupportingDistiller, bss_schedulers

TEMPERATURE = 3.0


def kd_terms():
    return [keras_kd.Term(keras_kd.losses.KDLoss(temperature=TEMPERATURE), weight=4.0 / TEMPERATURE**2)]


def main(epochs=20, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}
    keras.utils.set_random_seed(seed)
    teacher = cnn(32, "teacher")
    teacher.compile(keras.optimizers.Adam(3e-3), ce)
    teacher.fit(x_train, y_train, **fit)
    results = {"teacher": accuracy(teacher, x_test, y_test)}

    for name in ("scratch", "kd", "kd+bss"):
        keras.utils.set_random_seed(seed + 1)  # every student starts alike
        student = cnn(4, f"student_{name.replace('+', '_')}")
        schedules = bss_schedulers(epochs, kd_term="kd_loss", kd_temperature=TEMPERATURE)
        if name == "scratch":
            model, callbacks = student, []
        elif name == "kd":
            model, callbacks = keras_kd.Distiller(teacher, student, kd_terms()), schedules[1:]
        else:
            model = BoundarySupportingDistiller(teacher, student, kd_terms(), input_range=(0.0, 1.0), seed=seed)
            callbacks = schedules
        start = time.time()
        model.compile(keras.optimizers.Adam(3e-3), ce)
        model.fit(x_train, y_train, callbacks=callbacks, **fit)
        results[name] = accuracy(student, x_test, y_test)
        print(f"{name:<8} test accuracy {results[name]:.4f}  ({time.time() - start:.1f}s)", flush=True)

    print(f"\n{'method':<8}{'test accuracy':>14}")
    for name, value in results.items():
        print(f"{name:<8}{value:>14.4f}")
    return results


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
