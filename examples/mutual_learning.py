"""Deep mutual learning on digits: two small CNN peers trained together
against the same two CNNs trained independently from the same initial
weights, with the same optimizer, epochs and batches.

    python examples/mutual_learning.py --epochs 30
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
from digits_setup import cnn, load, train_alone

from keras_kd.schemes.mutual import MutualLearning

WIDTHS = (2, 4)  # the peers' first-stage channels; small, so both have room to improve


def main(epochs=30, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}

    keras.utils.set_random_seed(seed)
    peers = [cnn(width, f"peer{k}") for k, width in enumerate(WIDTHS, start=1)]
    start = time.time()
    alone = train_alone(peers, x_train, y_train, x_test, y_test, seed, fit)
    results = {f"peer{k}_independent": value for k, value in enumerate(alone, start=1)}
    independent_seconds = time.time() - start

    start = time.time()
    keras.utils.set_random_seed(seed + 1)
    mutual = MutualLearning(peers, temperature=1.0, kd_weight=1.0)  # the paper's setting
    mutual.compile(keras.optimizers.Adam(3e-3), ce)
    mutual.fit(x_train, y_train, **fit)
    for k, value in enumerate(mutual.evaluate_peers(x_test, y_test), start=1):
        results[f"peer{k}_mutual"] = value
    mutual_seconds = time.time() - start

    print(f"{'peer':<18} {'independent':>11} {'mutual':>8}")
    for k, width in enumerate(WIDTHS, start=1):
        name = f"peer{k} (cnn {width})"
        print(f"{name:<18} {results[f'peer{k}_independent']:>11.4f} {results[f'peer{k}_mutual']:>8.4f}")
    print(f"training time: independent {independent_seconds:.1f}s, mutual {mutual_seconds:.1f}s ({epochs} epochs)")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    main(**vars(parser.parse_args()))
