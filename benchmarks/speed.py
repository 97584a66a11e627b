"""Seconds per epoch and peak memory of distillation, side by side.

    python benchmarks/speed.py [--train 10000] [--epochs 5] [--statistic min|median] [--batch-size 128] [--skip-memory]

Same teacher (`cnn_large`, trained one epoch), student (a `cnn` with widths
16-128, so its 128-d embedding matches the teacher's for the feature term
that `keras.distillation` requires to have equal shapes), data (the first
`--train` MNIST images, one unshuffled in-memory `tf.data` pipeline) and
batch size for every row:

- plain `student.fit` (the student's share, a lower bound);
- the teacher's forward pass alone, in a compiled function;
- `keras.distillation.Distiller` with logits KD, and with logits + a feature
  term (MSE on the embeddings);
- `keras_kd.Distiller` with the same terms, and with `TeacherCache`;
- with and without `jit_compile` (XLA), under float32 and under the
  `mixed_bfloat16` policy (the mixed policy for CPUs and TPUs; teacher and
  student both built under it).

Times come from one process: each row's figure is the fastest epoch after
the first (warm-up, tracing), `--statistic min`, as `timeit` advises: on a
shared machine slower repeats come from other load, not from the code (a
fixed NumPy workload timed before and after the rows, `machine_noise` in
the results, shows how much this machine's speed drifts); `--statistic
median` gives the median instead, and every epoch's time is in the JSON.
Peak memory comes from one fresh
process per row and jit setting (2 epochs): the highest resident set while
the row trains, sampled every 5 ms, above the resident set just before it
(data, teacher and an initialised runtime already in memory). Results: `benchmarks/results/speed.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, write_results  # noqa: E402
from timing import EpochTimer, after_first  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import datasets, models  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
TEMPERATURE = 3.0
POLICIES = ("float32", "mixed_bfloat16")
ROWS = {
    "student": "student.fit",
    "teacher": "teacher forward pass",
    "keras_logits": "keras.distillation.Distiller, logits",
    "keras_kd_logits": "keras_kd.Distiller, logits",
    "keras_feature": "keras.distillation.Distiller, logits + feature",
    "keras_kd_feature": "keras_kd.Distiller, logits + feature",
    "cache": "keras_kd.Distiller, logits + feature, TeacherCache",
}
MIXED_ROWS = ("student", "teacher", "keras_feature", "keras_kd_feature", "cache")
TARGETS = (
    ("keras_kd_vs_student_plus_teacher", "<= 1.10"),
    ("keras_distillation_vs_keras_kd", ">= 1.3"),
    ("cache_vs_student", "<= 1.15"),
)


def machine_noise(repeats=20):
    """Seconds of a fixed NumPy workload (20 matmuls of 1500 x 1500), `repeats` times: how much this
    machine's speed varies by itself."""
    import numpy as np

    a = np.random.default_rng(0).random((1500, 1500), dtype="float32")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(20):
            a @ a
        times.append(time.perf_counter() - start)
    return {"seconds": times, "min": min(times), "median": statistics.median(times), "max": max(times)}


def rss_mib():
    with open("/proc/self/status") as status:  # Linux
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


class PeakRSS:
    """Samples this process's resident set every 5 ms in a thread; `peak`
    is the highest value seen between `start()` and `stop()`."""

    def start(self):
        self.peak, self._stop = rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mib())

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        return self.peak


class Bench:
    """One teacher, one data pipeline; `epoch_seconds(row, jit)` times a row."""

    def __init__(self, train, batch_size, seed, teacher_path):
        self.seed, self.batch_size = seed, batch_size
        data = datasets.load(
            "mnist",
            batch_size=batch_size,
            data_dir=str(data_dir()),
            seed=seed,
            limit=train,
        )
        self.input_shape = data.input_shape
        x, y = data.numpy("train")
        self.ordered = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)
        if Path(teacher_path).exists():
            self.teacher = keras.saving.load_model(teacher_path)
        else:
            keras.utils.set_random_seed(seed)
            self.teacher = models.get("cnn_large", self.input_shape, 10, name="teacher")
            self.teacher.compile(keras.optimizers.Adam(3e-3), CE)
            self.teacher.fit(self.ordered, epochs=1, verbose=0)
            self.teacher.save(teacher_path)

    def teacher_under_policy(self):
        if keras.mixed_precision.global_policy().name == "float32":
            return self.teacher
        teacher = models.get("cnn_large", self.input_shape, 10, name="teacher")  # built under the policy
        teacher.set_weights(self.teacher.get_weights())
        return teacher

    def student(self):
        keras.utils.set_random_seed(self.seed + 1)
        return models.get("cnn_small", self.input_shape, 10, widths=(16, 128), name="student")

    def model(self, row, teacher):
        feature = row.endswith("feature") or row == "cache"
        if row == "student":
            return self.student()
        if row.startswith("keras_kd") or row == "cache":
            terms = [keras_kd.Term(keras_kd.losses.KDLoss(temperature=TEMPERATURE), weight=0.5)]
            if feature:
                terms.append(
                    keras_kd.Term(
                        keras_kd.losses.FitNetLoss(),
                        "embedding",
                        "embedding",
                        weight=0.5,
                    )
                )
            return keras_kd.Distiller(teacher, self.student(), terms, student_loss_weight=0.5)
        losses = [keras.distillation.LogitsDistillation(temperature=TEMPERATURE)]
        if feature:
            losses.append(keras.distillation.FeatureDistillation("mse", "embedding", "embedding"))
        return keras.distillation.Distiller(teacher, self.student(), losses, student_loss_weight=0.5)

    def epoch_seconds(self, row, jit, epochs):
        teacher = self.teacher_under_policy()
        if row == "teacher":
            forward = tf.function(lambda batch: teacher(batch, training=False), jit_compile=jit)
            passes = []
            for _ in range(epochs):
                start = time.perf_counter()
                for batch, _labels in self.ordered:
                    forward(batch)
                passes.append(time.perf_counter() - start)
            return passes
        model = self.model(row, teacher)
        model.compile(keras.optimizers.Adam(1e-3), CE, jit_compile=jit)
        timer = EpochTimer()
        callbacks = [timer, keras_kd.callbacks.TeacherCache()] if row == "cache" else [timer]
        model.fit(self.ordered, epochs=epochs, verbose=0, callbacks=callbacks)
        return timer.seconds


def measure_memory(args):
    """Child process: peak resident memory while one row trains, above the
    resident memory just before it (data, teacher, initialised runtime)."""
    bench = Bench(args.train, args.batch_size, args.seed, args.teacher)
    for batch, _labels in bench.ordered:  # fills the pipeline's cache
        bench.teacher(batch, training=False)
    gc.collect()
    sampler = PeakRSS()
    sampler.start()
    baseline = sampler.peak
    bench.epoch_seconds(args.memory_row, bool(args.jit), epochs=2)
    print(json.dumps({"baseline_mib": baseline, "peak_mib": sampler.stop()}))


def memory_of(row, jit, args):
    command = [
        sys.executable,
        __file__,
        "--memory-row",
        row,
        "--jit",
        str(int(jit)),
        "--teacher",
        args.teacher,
    ]
    command += [
        "--train",
        str(args.train),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode:
        raise RuntimeError(f"memory run of {row} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def ratios_of(seconds):
    ratios = {}
    for key in {(policy, jit) for _row, policy, jit in seconds}:
        s = {row: seconds.get((row, *key)) for row in ROWS}
        if None in (
            s["student"],
            s["teacher"],
            s["keras_kd_feature"],
            s["keras_feature"],
            s["cache"],
        ):
            continue
        ratios[key] = {
            "keras_kd_vs_student_plus_teacher": s["keras_kd_feature"] / (s["student"] + s["teacher"]),
            "keras_distillation_vs_keras_kd": s["keras_feature"] / s["keras_kd_feature"],
            "cache_vs_student": s["cache"] / s["student"],
        }
    return ratios


def markdown(args, bench, seconds, memory, ratios, noise):
    columns = [(policy, jit) for policy in POLICIES for jit in (False, True)]
    lines = [
        "# Distillation speed (seconds per epoch) and peak memory",
        "",
        f"MNIST, first {args.train} training images, batch {args.batch_size}, {args.epochs} epochs per row, "
        f"the {'fastest' if args.statistic == 'min' else 'median'} epoch after the first; one run on this machine "
        f"({os.cpu_count()} CPU cores). Teacher cnn_large ({bench.teacher.count_params():,} params), student "
        f"cnn widths 16-128 ({bench.student().count_params():,} params). Peak memory: the highest resident "
        "set while the row trains 2 epochs in its own process, above that process's resident set just before "
        "(data, teacher and an initialised runtime), sampled every 5 ms. Machine noise: a fixed NumPy workload "
        + "; ".join(
            f"{when} the rows took {n['min']:.2f}-{n['max']:.2f} s (median {n['median']:.2f}) over "
            f"{len(n['seconds'])} repeats"
            for when, n in noise.items()
        )
        + ".",
        "",
        "| configuration | "
        + " | ".join(f"{p}, jit={j}" for p, j in columns)
        + " | peak MiB, jit=False | peak MiB, jit=True |",
        "|---|" + "---:|" * (len(columns) + 2),
    ]
    for row, label in ROWS.items():
        cells = [f"{seconds[(row, *c)]:.3f}" if (row, *c) in seconds else "-" for c in columns]
        cells += [f"{memory[(row, jit)]:.0f}" if (row, jit) in memory else "-" for jit in (False, True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| ratio | " + " | ".join(f"{p}, jit={j}" for p, j in columns) + " | target |",
    ]
    lines.append("|---|" + "---:|" * len(columns) + "---|")
    for key, target in TARGETS:
        cells = [f"{ratios[c][key]:.2f}" if c in ratios else "-" for c in columns]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines) + "\n"


def main(args):
    if args.memory_row:
        return measure_memory(args)
    with tempfile.TemporaryDirectory() as folder:
        args.teacher = args.teacher or os.path.join(folder, "teacher.keras")
        bench = Bench(args.train, args.batch_size, args.seed, args.teacher)
        seconds, memory, raw = {}, {}, []
        noise = {"before": machine_noise()}
        for policy in POLICIES:
            keras.mixed_precision.set_global_policy(policy)
            for jit in (False, True):
                for row in ROWS if policy == "float32" else MIXED_ROWS:
                    epochs = bench.epoch_seconds(row, jit, args.epochs)
                    seconds[(row, policy, jit)] = after_first(epochs, args.statistic)
                    raw.append(
                        {
                            "row": row,
                            "policy": policy,
                            "jit_compile": jit,
                            "epoch_seconds": epochs,
                        }
                    )
                    print(f"{ROWS[row]:<52} {policy:<15} jit={jit!s:<5} {seconds[(row, policy, jit)]:.3f} s/epoch")
        keras.mixed_precision.set_global_policy("float32")
        noise["after"] = machine_noise()
        if not args.skip_memory:
            for row in ROWS:
                for jit in (False, True):
                    result = memory_of(row, jit, args)
                    memory[(row, jit)] = result["peak_mib"] - result["baseline_mib"]
                    raw.append({"row": row, "jit_compile": jit, "memory": result})
                    print(
                        f"{ROWS[row]:<52} jit={jit!s:<5} peak +{memory[(row, jit)]:.0f} MiB",
                        flush=True,
                    )
        ratios = ratios_of(seconds)
        text = markdown(args, bench, seconds, memory, ratios, noise)
    payload = {
        "config": {k: v for k, v in vars(args).items() if k not in ("teacher", "memory_row", "jit")},
        "rows": raw,
        "seconds_per_epoch": [
            {"row": r, "policy": p, "jit_compile": j, "seconds": v} for (r, p, j), v in seconds.items()
        ],
        "peak_memory_mib": [{"row": r, "jit_compile": j, "mib": v} for (r, j), v in memory.items()],
        "ratios": [{"policy": p, "jit_compile": j, **v} for (p, j), v in ratios.items()],
        "machine_noise": noise,
    }
    paths = write_results("speed", payload, text)
    print(text)
    print(f"wrote {paths[0]} and {paths[1]}")
    return payload


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--statistic", choices=["min", "median"], default="min", help="of the epochs after the first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-memory", action="store_true", help="no peak-memory processes")
    parser.add_argument("--teacher", help=argparse.SUPPRESS)
    parser.add_argument("--memory-row", choices=list(ROWS), help=argparse.SUPPRESS)
    parser.add_argument("--jit", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    main(parse())
