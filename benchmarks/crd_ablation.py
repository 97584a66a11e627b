"""Which step of CRD matters: the reference's positive against the old one.

    python benchmarks/crd_ablation.py [--seed 0]

keras_kd's first CRD scored the student anchor against the teacher's
*current* embedding of the same example (detached) and a FIFO queue of recent
embeddings, where the paper's code uses the example's own memory row (a
momentum average of its earlier embeddings) and a memory indexed by example.
This trains the CRD student of `crd_weight.py` (same budget, teacher, seed,
batches) with `CRDLoss` changed in that one step: the positive is the other
network's current embedding, as the old loss had it; memory, negatives, Z and
the momentum update stay as in the reference. Results:
`benchmarks/results/crd_ablation.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import RESULTS, write_results  # noqa: E402

from keras_kd import Distiller, recipes  # noqa: E402
from keras_kd.losses.crd import CRDLoss  # noqa: E402


class CurrentPositiveCRD(CRDLoss):
    """CRDLoss whose positive is the other network's current embedding
    (detached), as in keras_kd's first CRD; all else as in the reference."""

    def call(self, y_true, student):
        teacher, index = y_true
        layer = self._layer
        teacher_embedding, student_embedding = layer((teacher, student))
        negatives = self.draw_negatives(ops.shape(student_embedding)[0])
        memory_teacher, memory_student = (
            ops.stop_gradient(ops.convert_to_tensor(memory)) for memory in (layer.memory_teacher, layer.memory_student)
        )
        student_scores = self._current_positive_scores(student_embedding, teacher_embedding, memory_teacher, negatives)
        teacher_scores = self._current_positive_scores(teacher_embedding, student_embedding, memory_student, negatives)
        value = self._nce(student_scores, layer.z_student, True) + self._nce(teacher_scores, layer.z_teacher, True)
        index = ops.cast(index, "int32")
        self._update(layer.memory_teacher, index, teacher_embedding)
        self._update(layer.memory_student, index, student_embedding)
        return value


def run(seed, cache="~/.cache/keras_kd/benchmarks"):
    base = quality.CifarConfig()
    config = dataclasses.replace(base, seed=seed)
    data = quality.load_data(config)
    x_test, y_test = data.numpy("test")
    teacher, _ = quality.train_teacher(base, "resnet20", quality.load_data(base), Path(cache).expanduser())
    steps = int(np.ceil(data.num_train / base.batch_size))
    student = quality.new_student(config, "resnet8", data)
    loss = CurrentPositiveCRD(num_data=data.num_train)
    teacher_layers, student_layers = recipes.layers_for("crd", teacher, student)
    terms = recipes.get("crd", teacher_layers, student_layers, num_data=data.num_train)  # layers, weight
    term = terms[0]
    term.loss = loss
    distiller = Distiller(teacher, student, terms, student_loss_weight=recipes.student_loss_weight("crd"))
    start = time.time()
    quality.fit(config, distiller, quality.load_data(config, index=True), steps)
    logs = distiller.history.history
    row = {
        "seed": seed,
        "method": "crd, current-embedding positive",
        "weight": term.weight,
        "accuracy": quality.accuracy(student, x_test, y_test),
        "crd_loss": logs["crd_loss"],
        "student_loss": logs["student_loss"],
        "seconds": time.time() - start,
    }
    print(row, flush=True)
    reference = json.loads((RESULTS / "crd_weight.json").read_text())
    same_seed = {r["method"]: r for r in reference["rows"] if r["seed"] == seed}
    lines = [
        "# CRD ablation: the positive (resnet20 -> resnet8, CIFAR-10 budget of quality.py)",
        "",
        f"Seed {seed}; scratch and reference rows from `crd_weight.md` (same teacher, initial student, batches).",
        "",
        "| student | accuracy % | CRD term per epoch |",
        "|---|---:|---|",
    ]
    for name, r in [("scratch", same_seed.get("scratch")), ("crd (reference positive)", same_seed.get("crd")),
                    (row["method"], row)]:
        if r is not None:
            curve = ", ".join(f"{v:.2f}" for v in r["crd_loss"]) if r.get("crd_loss") else ""
            lines.append(f"| {name} | {100 * r['accuracy']:.2f} | {curve} |")
    write_results("crd_ablation", {"rows": [row]}, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="~/.cache/keras_kd/benchmarks")
    args = parser.parse_args(argv)
    run(args.seed, args.cache)


if __name__ == "__main__":
    main()
