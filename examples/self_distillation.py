"""Self distillation ("Be Your Own Teacher") on digits: a small CNN trained
with an auxiliary head after its first block, against the same CNN trained
alone from the same initial weights, with the same optimizer, epochs and
batches. Also reports the head as an early exit.

    python examples/self_distillation.py --epochs 30
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from digits_setup import accuracy, cnn, load

from keras_kd.schemes.self_distillation import SelfDistillation

WIDTH = 4  # first-block channels, the students' width in the other digits examples


def main(epochs=30, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}

    keras.utils.set_random_seed(seed)
    model = cnn(WIDTH, "cnn")
    initial = model.get_weights()

    start = time.time()
    alone = keras.models.clone_model(model)
    alone.set_weights(initial)
    keras.utils.set_random_seed(seed + 1)  # the same batch order in both runs
    alone.compile(keras.optimizers.Adam(3e-3), ce)
    alone.fit(x_train, y_train, **fit)
    results = {"alone": accuracy(alone, x_test, y_test)}
    alone_seconds = time.time() - start

    start = time.time()
    keras.utils.set_random_seed(seed + 1)
    # The block names follow digits_setup (block1, block2), not stage{i}: name the cut.
    sd = SelfDistillation(model, sections=["block1"])  # T=3, alpha=0.3, beta=0.03
    sd.compile(keras.optimizers.Adam(3e-3), ce)
    sd.fit(x_train, y_train, **fit)
    results["self_distillation"] = accuracy(sd.export_model(), x_test, y_test)
    results["self_distillation_exit1"] = accuracy(sd.export_head(0), x_test, y_test)
    sd_seconds = time.time() - start

    print(f"{'model':<32} {'test accuracy':>13}")
    print(f"{'cnn trained alone':<32} {results['alone']:>13.4f}")
    print(f"{'cnn with self distillation':<32} {results['self_distillation']:>13.4f}")
    print(f"{'  its early exit after block1':<32} {results['self_distillation_exit1']:>13.4f}")
    print(f"training time: alone {alone_seconds:.1f}s, self distillation {sd_seconds:.1f}s ({epochs} epochs)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
