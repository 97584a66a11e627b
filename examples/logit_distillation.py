"""Logit methods on digits: KD, logit regression, DKD and DIST, each with
its published setting (keras_kd.recipes), against a scratch student.

    python examples/logit_distillation.py --epochs 20
"""

from digits_setup import compare, run_cli

METHODS = {name: (None, None) for name in ("kd", "logit_mse", "dkd", "dist")}


def main(epochs=20, seed=0, limit=None):
    return compare(METHODS, epochs, seed, limit)


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
