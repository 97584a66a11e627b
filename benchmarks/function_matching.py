"""Function matching (Beyer et al., CVPR 2022) against plain KD and scratch at equal budget.

    python benchmarks/function_matching.py                  # digits, MNIST, CIFAR-10: ~30 min on 2 busy cores
    python benchmarks/function_matching.py --only digits    # one part; the others stay in the results file
    python benchmarks/function_matching.py --cifar-seeds 0,1

Rows, for each dataset and student seed: the scratch student (cross-entropy),
plain KD (`recipes.distiller("kd")`: KL at T=4 weighted 0.9 + 0.1
cross-entropy) and function matching (`recipes.distiller("function_matching")`:
KL at T=1, no label loss, the teacher and the student both fed the same
MixUp view of every batch, Beta(1, 1) ratio). Every row of a seed starts
from the same student weights, sees the same batches (the same crop/shift
augmentation of the data pipeline, `datasets.load(augment=True)`) for the
same epochs with the same optimizer: SGD momentum 0.9, decoupled weight
decay 5e-4, cosine learning rate (`quality.optimizer`). The teacher is
trained once per dataset (seed 0) and shared by every seed.

- digits (scikit-learn, 898 training / 899 test images, 8x8): cnn_large ->
  cnn_small, lr 0.05, batch 64, teacher 30 epochs, students 30 epochs (the
  short schedule) and 4x as many (the long one: the paper's point is that
  function matching needs patience), seeds 0, 1, 2.
- MNIST (`../shared/data/mnist.npz`, the first 10,000 training images, all
  10,000 test images): cnn_large -> cnn_small, lr 0.05, batch 128, teacher
  10 epochs, students 5 epochs, seeds 0, 1, 2, and 4x as many epochs for
  seed 0.
- CIFAR-10 (`../shared/data/cifar10_jpeg.npz`): `quality.CifarConfig`'s
  budget (first 10,000 training images, flip + crop, resnet20 teacher 15
  epochs, cached under `--cache` by quality.py; resnet8 students 5 epochs,
  batch 64, lr 0.05), seed 0.

Results: `benchmarks/results/function_matching.{json,md}`, written after each
dataset; a run of some parts keeps the other parts' rows from the file.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import RESULTS, data_dir, write_results  # noqa: E402

from keras_kd import datasets, recipes  # noqa: E402

NAME = "function_matching"
METHODS = ("scratch", "kd", "function_matching")
PARTS = ("digits", "mnist", "cifar10")


def configs(args):
    """{part: (CifarConfig, {schedule name: {"epochs": student epochs, "seeds": student seeds}})}."""
    digits = quality.CifarConfig(
        dataset="digits",
        pairs=[["cnn_large", "cnn_small"]],
        methods=list(METHODS[1:]),
        schemes=[],
        train=None,
        teacher_epochs=args.digits_epochs,
        epochs=args.digits_epochs,
        batch_size=64,
    )
    mnist = dataclasses.replace(
        digits,
        dataset="mnist",
        train=args.mnist_train,
        teacher_epochs=args.mnist_teacher_epochs,
        epochs=args.mnist_epochs,
        batch_size=128,
    )
    cifar = quality.CifarConfig(methods=list(METHODS[1:]), schemes=[], epochs=args.cifar_epochs)
    def schedules(epochs, seeds, long_seeds):
        short = {"short": {"epochs": epochs, "seeds": seeds}}
        return {**short, "long": {"epochs": args.long_factor * epochs, "seeds": long_seeds}} if long_seeds else short

    return {
        "digits": (digits, schedules(digits.epochs, args.seeds, args.seeds if args.long_factor else [])),
        "mnist": (mnist, schedules(mnist.epochs, args.seeds, args.mnist_long_seeds if args.long_factor else [])),
        "cifar10": (cifar, schedules(cifar.epochs, args.cifar_seeds, [])),
    }


def load(config):
    if config.dataset == "cifar10":
        return quality.load_data(config)
    folder = None if config.dataset == "digits" else str(data_dir())
    return datasets.load(
        config.dataset, batch_size=config.batch_size, data_dir=folder, augment=config.augment, seed=config.seed,
        limit=config.train,
    )  # fmt: skip


def run_part(part, config, schedules, cache):
    data = load(config)
    x_test, y_test = data.numpy("test")
    steps = int(np.ceil(data.num_train / config.batch_size))
    teacher_name, student_name = config.pairs[0]
    teacher, seconds = quality.train_teacher(config, teacher_name, data, cache)
    rows = [
        {
            "dataset": part,
            "method": "teacher",
            "model": teacher_name,
            "accuracy": quality.accuracy(teacher, x_test, y_test),
            "params": teacher.count_params(),
            "seconds": seconds,
        }
    ]
    print(json.dumps(rows[-1]), flush=True)
    for schedule, plan in schedules.items():
        epochs = plan["epochs"]
        for seed in plan["seeds"]:
            student_config = dataclasses.replace(config, seed=seed)  # student weights and batch order
            for method in METHODS:
                student = quality.new_student(student_config, student_name, data)
                model = student if method == "scratch" else recipes.distiller(method, teacher, student)
                start = time.time()
                losses = quality.fit(student_config, model, data, steps, epochs=epochs)
                rows.append(
                    {
                        "dataset": part,
                        "schedule": schedule,
                        "epochs": epochs,
                        "seed": seed,
                        "method": method,
                        "model": student_name,
                        "accuracy": quality.accuracy(student, x_test, y_test),
                        "params": student.count_params(),
                        "seconds": time.time() - start,
                        "final_loss": float(losses[-1]),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    return {
        "config": dataclasses.asdict(config),
        "schedules": schedules,
        "num_train": data.num_train,
        "num_test": len(y_test),
        "rows": rows,
    }


def summarize(part_result):
    """{schedule: {method: stats}, and the paired differences of function matching}."""
    rows = [r for r in part_result["rows"] if r["method"] != "teacher"]
    summary = {}
    for schedule, plan in part_result["schedules"].items():
        by = {(r["method"], r["seed"]): 100 * r["accuracy"] for r in rows if r["schedule"] == schedule}
        seeds = plan["seeds"]
        stats = {}
        for method in METHODS:
            values = [by[(method, s)] for s in seeds if (method, s) in by]
            stats[method] = {
                "per_seed": values,
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
            }
        for base in ("scratch", "kd"):
            diffs = [by[("function_matching", s)] - by[(base, s)] for s in seeds if ("function_matching", s) in by]
            stats[f"function_matching_minus_{base}"] = {
                "per_seed": diffs,
                "mean": statistics.fmean(diffs) if diffs else None,
                "std": statistics.stdev(diffs) if len(diffs) > 1 else None,
                "wins": sum(d > 0 for d in diffs),
                "verdict": verdict(diffs, "plain KD" if base == "kd" else "scratch"),
            }
        summary[schedule] = stats
    return summary


def verdict(diffs, base):
    """"beats <base>" / "loses to <base>" on every seed, else where it stands on average."""
    if not diffs:
        return f"not compared with {base}"
    if all(d > 0 for d in diffs):
        return f"beats {base}"
    if all(d < 0 for d in diffs):
        return f"loses to {base}"
    mean = statistics.fmean(diffs)
    side = "ahead of" if mean > 0 else "behind" if mean < 0 else "level with"
    return f"is {side} {base} on average but not on every seed"


def fmt(value, digits=2):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(results):
    lines = [
        "# Function matching vs plain KD vs scratch, equal budget (top-1 test accuracy, %)",
        "",
        "Function matching (Beyer et al., CVPR 2022; `recipes.distiller(\"function_matching\")`): KL at T=1, no "
        "label loss, teacher and student fed the same MixUp view of each batch (Beta(1, 1) ratio, one per batch). "
        "Plain KD: `recipes.distiller(\"kd\")` (T=4, 0.9 KD + 0.1 CE). Per seed, all three students start from the "
        "same weights and see the same batches (the pipeline's shift/crop augmentation) for the same epochs with "
        "the same optimizer (SGD momentum 0.9, weight decay 5e-4, cosine). One teacher per dataset. "
        "std: sample standard deviation over seeds. Δ: paired difference per seed, mean ± std.",
        "",
        "| dataset | teacher → student | schedule | method | accuracy per seed | mean | std | Δ FM − scratch "
        "| Δ FM − KD |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for part in PARTS:
        if part not in results:
            continue
        result = results[part]
        config = result["config"]
        pair = " → ".join(config["pairs"][0])
        teacher = next(r for r in result["rows"] if r["method"] == "teacher")
        lines.append(f"| {part} | {pair} | teacher {config['teacher_epochs']} ep | teacher | "
                     f"{100 * teacher['accuracy']:.2f} | | | | |")  # fmt: skip
        summary = summarize(result)
        for schedule, plan in result["schedules"].items():
            stats, epochs = summary[schedule], plan["epochs"]
            for method in METHODS:
                s = stats[method]
                deltas = ["", ""]
                if method == "function_matching":
                    deltas = [
                        f"{fmt(stats[f'function_matching_minus_{b}']['mean'])} ± "
                        f"{fmt(stats[f'function_matching_minus_{b}']['std'])}"
                        for b in ("scratch", "kd")
                    ]
                lines.append(
                    f"| {part} | {pair} | {schedule}, {epochs} ep | {method} | "
                    f"{', '.join(f'{v:.2f}' for v in s['per_seed'])} | {fmt(s['mean'])} | {fmt(s['std'])} | "
                    f"{deltas[0]} | {deltas[1]} |"
                )
            n = len(stats["scratch"]["per_seed"])
            kd, scratch = stats["function_matching_minus_kd"], stats["function_matching_minus_scratch"]
            verdicts.append(
                f"- {part}, {schedule} schedule ({epochs} epochs, {n} seed{'s' if n > 1 else ''}, "
                f"{result['num_train']:,} training / {result['num_test']:,} test images): function matching "
                f"{kd['verdict']} ({fmt(kd['mean'])} points, ahead on {kd['wins']} of {n}) and "
                f"{scratch['verdict']} ({fmt(scratch['mean'])} points, ahead on {scratch['wins']} of {n})."
            )
    return "\n".join(lines + ["", "Verdict at this budget:", "", *verdicts]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated parts of {list(PARTS)} (default: all, in that order)")
    parser.add_argument("--seeds", default="0,1,2", help="student seeds for digits and MNIST")
    parser.add_argument("--cifar-seeds", default="0")
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--long-factor", type=int, default=4, help="long schedules: this many times the epochs")
    parser.add_argument("--mnist-long-seeds", default="0", help="seeds of MNIST's long schedule ('' for none)")
    parser.add_argument("--mnist-epochs", type=int, default=5)
    parser.add_argument("--mnist-teacher-epochs", type=int, default=10)
    parser.add_argument("--mnist-train", type=int, default=10000, help="first N MNIST training images")
    parser.add_argument("--cifar-epochs", type=int, default=5)
    parser.add_argument("--cache", default="~/.cache/keras_kd/benchmarks", help="folder of trained teachers")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.cifar_seeds = [int(s) for s in args.cifar_seeds.split(",")]
    args.mnist_long_seeds = [int(s) for s in args.mnist_long_seeds.split(",") if s]
    parts = PARTS if not args.only else tuple(p for p in PARTS if p in args.only.split(","))
    unknown = set(args.only.split(",")) - set(PARTS) if args.only else set()
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
    path = RESULTS / f"{NAME}.json"
    results = json.loads(path.read_text()).get("results", {}) if path.exists() else {}
    cache = Path(args.cache).expanduser()
    for part in parts:
        config, schedules = configs(args)[part]
        start = time.time()
        results[part] = {**run_part(part, config, schedules, cache), "wall_seconds": time.time() - start}
        summaries = {name: summarize(result) for name, result in results.items()}
        text = markdown(results)
        write_results(NAME, {"results": results, "summary": summaries}, text)
        print(text, flush=True)
    return results


if __name__ == "__main__":
    main()
