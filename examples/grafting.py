"""Filter grafting on digits: two CNN peers of one architecture, built
under different seeds, trained together with layer-level grafting after
every epoch (Meng et al., CVPR 2020), against the same two CNNs trained
alone from the same initial weights, with the same optimizer, epochs and
batches.

    python examples/grafting.py --epochs 20
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from digits_setup import cnn, load, run_cli, train_alone  # noqa: E402

from keras_kd.schemes.grafting import GraftingTrainer  # noqa: E402

WIDTH = 4  # the peers' first-stage channels: grafting averages weights, so the peers share one architecture
PEERS = 2


def main(epochs=20, seed=0, limit=None):
    x_train, x_test, y_train, y_test = load(seed, limit)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fit = {"epochs": epochs, "batch_size": 64, "verbose": 0}

    peers = []
    for k in range(1, PEERS + 1):
        keras.utils.set_random_seed(seed + 10 * k)  # different initial weights: what grafting exchanges
        peers.append(cnn(WIDTH, f"peer{k}"))
    start = time.time()
    alone = train_alone(peers, x_train, y_train, x_test, y_test, seed, fit)
    results = {f"peer{k}_alone": value for k, value in enumerate(alone, start=1)}
    alone_seconds = time.time() - start

    start = time.time()
    keras.utils.set_random_seed(seed + 1)
    grafting = GraftingTrainer(peers)  # the paper's a = 0.4, c = 500, 10 bins; grafts after every epoch
    grafting.compile(keras.optimizers.Adam(3e-3), ce)
    history = grafting.fit(x_train, y_train, **fit)
    for k, value in enumerate(grafting.evaluate_peers(x_test, y_test), start=1):
        results[f"peer{k}_grafted"] = value
    grafted_seconds = time.time() - start

    print(f"{'peer':<16} {'alone':>7} {'grafted':>8} {'last alpha':>11}")
    for k in range(1, PEERS + 1):
        name = f"peer{k} (cnn {WIDTH})"
        alpha = history.history[f"graft_coef_peer{k}"][-1]
        print(f"{name:<16} {results[f'peer{k}_alone']:>7.4f} {results[f'peer{k}_grafted']:>8.4f} {alpha:>11.2f}")
    print(f"training time: alone {alone_seconds:.1f}s, grafted {grafted_seconds:.1f}s ({epochs} epochs)")
    return results


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
