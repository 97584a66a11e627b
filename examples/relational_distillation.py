"""Relational methods on digits: similarity preserving, correlation
congruence, RKD and PKT on the pooled embedding, each with its published
setting (keras_kd.recipes), against a scratch student.

    python examples/relational_distillation.py --epochs 20
"""

from digits_setup import compare, run_cli

METHODS = {name: ("pool", "pool") for name in ("sp", "cc", "rkd", "pkt")}


def main(epochs=20, seed=0, limit=None):
    return compare(METHODS, epochs, seed, limit)


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
