"""Seconds per epoch of distillation on each Keras backend, side by side.

    python benchmarks/speed_backends.py                       # TF, JAX and PyTorch on this machine's CPU
    python benchmarks/speed_backends.py --gpu                 # JAX on a GPU (CIFAR ResNets, see below)

Every row trains the same student on the same batches, in one process per
backend (`KERAS_BACKEND` is fixed at import), with Keras' default
`jit_compile="auto"` (XLA on TensorFlow and JAX, eager on PyTorch):

- `student.fit`: a plain student step (the lower bound);
- the teacher's forward pass alone, in inference mode (compiled where the
  backend compiles);
- `keras.distillation.Distiller` and `keras_kd.Distiller`, each with logits
  KD (T=3) plus a feature term (MSE between the two networks' pooled
  embeddings, which have the same width).

Each figure is the fastest epoch after the first (the first holds tracing
and compilation). CPU (default): MNIST, the first `--train` images, batch
128, `cnn_large` -> `cnn` (widths 16-128), float32, TensorFlow, JAX and
PyTorch. GPU (`--gpu`, JAX only): `resnet56` -> `resnet20` on CIFAR-shaped
32x32x3 inputs at batch 128 and 512, float32 and `mixed_bfloat16`; the
inputs are random (the timing does not depend on pixel values, and the
GPU machine has no copy of CIFAR-10), fed from device-resident arrays.
Results: `benchmarks/results/speed_backends.{json,md}` (CPU) and
`benchmarks/results/speed_gpu.{json,md}` (GPU).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BACKENDS = ("tensorflow", "jax", "torch")
ROWS = {
    "student": "student.fit",
    "teacher": "teacher forward pass",
    "keras_distillation": "keras.distillation.Distiller, logits + feature",
    "keras_kd": "keras_kd.Distiller, logits + feature",
}
TEMPERATURE = 3.0


def child(args):
    """Times every row on the backend this process runs (`KERAS_BACKEND`)."""
    import keras
    import numpy as np

    import keras_kd
    from keras_kd import models

    sys.path.insert(0, str(HERE))
    from timing import EpochTimer, after_first

    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    if args.gpu:
        teacher_name, student_name, shape, kwargs = "resnet56", "resnet20", (32, 32, 3), {}
        rng = np.random.default_rng(args.seed)
        x = rng.random((args.train, *shape), dtype="float32")
        y = rng.integers(0, 10, args.train).astype("int32")
    else:
        from common import data_dir

        teacher_name, student_name, shape, kwargs = "cnn_large", "cnn_small", (28, 28, 1), {"widths": (16, 128)}
        with np.load(Path(data_dir()) / "mnist.npz") as data:
            x = (data["x_train"][: args.train].astype("float32") / 255.0).reshape(-1, *shape)
            y = data["y_train"][: args.train].astype("int32")

    def build(name, role, **extra):
        keras.utils.set_random_seed(args.seed + (role == "student"))
        return models.get(name, shape, 10, name=role, **extra)

    def fit_seconds(model):
        model.compile(keras.optimizers.Adam(1e-3), ce)
        timer = EpochTimer()
        model.fit(x, y, batch_size=batch_size, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[timer])
        return after_first(timer.seconds)

    def teacher_seconds(teacher):
        # Keras' own compiled inference step over the same batches.
        times = []
        for _ in range(args.epochs):
            start = time.perf_counter()
            teacher.predict(x, batch_size=batch_size, verbose=0)
            times.append(time.perf_counter() - start)
        return after_first(times)

    results = []
    for policy in args.policies:
        keras.config.set_dtype_policy(policy)
        for batch_size in args.batch_sizes:
            teacher = build(teacher_name, "teacher")
            seconds = {}
            for row in args.rows:
                start = time.perf_counter()
                if row == "student":
                    seconds[row] = fit_seconds(build(student_name, "student", **kwargs))
                elif row == "teacher":
                    seconds[row] = teacher_seconds(teacher)
                elif row == "keras_distillation":
                    losses = [
                        keras.distillation.LogitsDistillation(temperature=TEMPERATURE),
                        keras.distillation.FeatureDistillation("mse", "embedding", "embedding"),
                    ]
                    seconds[row] = fit_seconds(
                        keras.distillation.Distiller(
                            teacher, build(student_name, "student", **kwargs), losses, student_loss_weight=0.5
                        )
                    )
                else:
                    terms = [
                        keras_kd.Term(keras_kd.losses.KDLoss(temperature=TEMPERATURE), weight=0.5),
                        keras_kd.Term(keras_kd.losses.FitNetLoss(), "embedding", "embedding", weight=0.5),
                    ]
                    seconds[row] = fit_seconds(
                        keras_kd.Distiller(
                            teacher, build(student_name, "student", **kwargs), terms, student_loss_weight=0.5
                        )
                    )
                print(f"{keras.backend.backend()} {policy} batch {batch_size} {row}: {seconds[row]:.3f} s/epoch "
                      f"({time.perf_counter() - start:.0f} s with compilation)", file=sys.stderr, flush=True)
            result = {"backend": keras.backend.backend(), "policy": policy, "batch_size": batch_size,
                      "seconds": seconds, "ratios": ratios(seconds)}
            results.append(result)
            if args.partial:  # survives a timeout
                with open(args.partial, "a") as out:
                    out.write(json.dumps(result) + "\n")
    keras.config.set_dtype_policy("float32")
    return results


def ratios(seconds):
    out = {}
    if {"keras_kd", "student", "teacher"} <= set(seconds):
        out["keras_kd_vs_student_plus_teacher"] = seconds["keras_kd"] / (seconds["student"] + seconds["teacher"])
    if {"keras_kd", "keras_distillation"} <= set(seconds):
        out["keras_distillation_vs_keras_kd"] = seconds["keras_distillation"] / seconds["keras_kd"]
    return out


def markdown(title, description, results):
    lines = [f"# {title}", "", description, "",
             "| backend | policy | batch | " + " | ".join(ROWS.values()) + " | keras_kd / (student + teacher) "
             "| keras.distillation / keras_kd |",
             "|---|---|---:|" + "---:|" * (len(ROWS) + 2)]
    for r in results:
        cells = [f"{r['seconds'][row]:.3f}" if row in r["seconds"] else "-" for row in ROWS]
        ratio = [f"{r['ratios'][k]:.2f}" if k in r["ratios"] else "-"
                 for k in ("keras_kd_vs_student_plus_teacher", "keras_distillation_vs_keras_kd")]
        lines.append(f"| {r['backend']} | {r['policy']} | {r['batch_size']} | " + " | ".join(cells + ratio) + " |")
    lines += ["", "Targets: keras_kd / (student + teacher) <= 1.10; keras.distillation / keras_kd >= 1.3 "
              "(the feature term makes `keras.distillation` run the student twice per step)."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="JAX on a GPU with CIFAR ResNets")
    parser.add_argument("--backends", nargs="+", default=None, choices=BACKENDS)
    parser.add_argument("--train", type=int, default=None, help="examples per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None)
    parser.add_argument("--policies", nargs="+", default=None)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", default=str(HERE / "results"), help="folder of the JSON and Markdown results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--partial", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up).")
    args.train = args.train or (10240 if args.gpu else 10000)
    args.batch_sizes = args.batch_sizes or ([128, 512] if args.gpu else [128])
    args.policies = args.policies or (["float32", "mixed_bfloat16"] if args.gpu else ["float32"])
    if args.child:
        child(args)
        return
    backends = args.backends or (["jax"] if args.gpu else list(BACKENDS))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "speed_gpu" if args.gpu else "speed_backends"
    partial = out / f"{stem}.partial.jsonl"
    partial.unlink(missing_ok=True)
    for backend in backends:
        command = [sys.executable, __file__, "--child", "--partial", str(partial), "--train", str(args.train),
                   "--epochs", str(args.epochs), "--seed", str(args.seed), "--rows", *args.rows,
                   "--batch-sizes", *map(str, args.batch_sizes), "--policies", *args.policies]
        if args.gpu:
            command.append("--gpu")
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run(command, env=env, check=True)
    results = [json.loads(line) for line in partial.read_text().splitlines()]
    partial.unlink()
    if args.gpu:
        import jax

        device = jax.devices()[0].device_kind
        title = "Distillation speed on a GPU (JAX backend), seconds per epoch"
        description = (f"{device}; resnet56 -> resnet20, {args.train} random 32x32x3 inputs per epoch, "
                       f"{args.epochs} epochs per row, the fastest epoch after the first; one run.")
    else:
        title = "Distillation speed per Keras backend (CPU), seconds per epoch"
        description = (f"MNIST, first {args.train} training images, cnn_large -> cnn (widths 16-128), float32, "
                       f"{args.epochs} epochs per row, the fastest epoch after the first; one run on this "
                       f"machine ({os.cpu_count()} CPU cores), one process per backend.")
    (out / f"{stem}.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(title, description, results))
    print(markdown(title, description, results))


if __name__ == "__main__":
    main()
