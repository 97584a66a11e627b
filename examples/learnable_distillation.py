"""Methods with learnable heads on digits: VID, factor transfer (with the
teacher-side paraphraser pre-trained first), CRD (a memory row per training
example: its batches carry their positions, keras_kd.datasets.with_index) and
ReviewKD (one term over every stage and the flattened features), each with its
published setting (keras_kd.recipes), against a scratch student.

    python examples/learnable_distillation.py --epochs 20
"""

from digits_setup import compare, run_cli

from keras_kd import recipes

METHODS = {
    "vid": ("block2", "block2"),
    "ft": ("block2", "block2"),
    "crd": ("pool", "pool"),
    # As recipes.layers_for picks them: the teacher's pre-ReLU stages, the student's stages, then the
    # features fed to the classifier (here flattened, not pooled: a 1x1 map).
    "reviewkd": (["bn1", "bn2", "pool"], ["block1", "block2", "pool"]),
}


def pretrain_paraphrasers(distiller, x_train, epochs=10):
    """Factor transfer's first stage: the paraphraser learns to reconstruct
    the teacher's feature map, before the student trains."""
    for losses in recipes.pretrain(distiller, x_train, epochs=epochs).values():
        print(f"paraphraser reconstruction loss {losses[0]:.4f} -> {losses[-1]:.4f}")


def main(epochs=20, seed=0, limit=None):
    return compare(METHODS, epochs, seed, limit, prepare=pretrain_paraphrasers)


if __name__ == "__main__":
    run_cli(main, __doc__.splitlines()[0])
