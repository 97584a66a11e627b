"""The default `keras-kd distill` job over several seeds.

    python benchmarks/mainjob_seeds.py [--seeds 0,1,2] [--dataset digits] [job options as KEY=VALUE ...]

Runs `keras_kd.job.run` with the default configuration (exactly what
`keras-kd distill` runs with no arguments) once per seed, and reports per
model (teacher, scratch student, distilled student) the test accuracy per
seed, mean and standard deviation, the distilled student's gain over
scratch, and the share of the teacher's lead over the scratch student that
distillation closed, `(distilled - scratch) / (teacher - scratch)`.
Results: `benchmarks/results/mainjob_seeds.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from keras_kd import job, report  # noqa: E402

MODELS = ("teacher", "scratch", "distilled")


def run(seeds, name="mainjob_seeds", **overrides):
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            config = job.DistillConfig(seed=seed, output=folder, overwrite=True, verbose=0, **overrides)
            start = time.time()
            result = job.run(config)
        models = result["models"]
        rows.append(
            {
                "seed": seed,
                **{key: models[key]["accuracy"] for key in MODELS},
                "params": {key: models[key]["params"] for key in MODELS},
                "gap_closed": report.gap_closed(models),
                "seconds": time.time() - start,
            }
        )
        print(rows[-1], flush=True)
    markdown = table(config, rows)
    write_results(name, {"config": config.to_dict(), "rows": rows}, markdown)
    print(markdown)
    return rows


def table(config, rows):
    seeds = ", ".join(str(row["seed"]) for row in rows)
    params = rows[0]["params"]
    lines = [
        f"# `keras-kd distill` over seeds ({config.dataset}, {config.method})",
        "",
        f"`keras_kd.job.run` with the default configuration, seeds {seeds}: teacher {config.teacher} "
        f"({config.teacher_epochs} epochs), student {config.student} ({config.epochs} epochs, scratch and "
        f"distilled from the same initial weights), batch {config.batch_size}, Adam {config.learning_rate} cosine, "
        f"method {config.method}"
        + (f" at T = {config.temperature}" if config.temperature else "")
        + f". Test accuracy in %. Wall time per seed: {np.mean([r['seconds'] for r in rows]):.0f} s on average.",
        "",
        "| model | architecture | params | per seed | mean | std |",
        "|---|---|---:|---|---:|---:|",
    ]
    architectures = {"teacher": config.teacher, "scratch": config.student, "distilled": config.student}
    for key in MODELS:
        values = 100 * np.array([row[key] for row in rows])
        lines.append(
            f"| {key} | {architectures[key]} | {params[key]:,} | {', '.join(f'{v:.2f}' for v in values)} | "
            f"{values.mean():.2f} | {values.std():.2f} |"
        )
    gains = 100 * np.array([row["distilled"] - row["scratch"] for row in rows])
    leads = 100 * np.array([row["teacher"] - row["scratch"] for row in rows])
    closed = [row["gap_closed"] for row in rows]
    shown = [f"{c:.0%}" if c is not None else "n/a (teacher not ahead)" for c in closed]
    valid = [c for c in closed if c is not None]
    lines += [
        "",
        f"- teacher's lead over scratch: {', '.join(f'{v:+.2f}' for v in leads)} points (mean {leads.mean():+.2f})",
        f"- distilled over scratch: {', '.join(f'{v:+.2f}' for v in gains)} points (mean {gains.mean():+.2f})",
        f"- share of the lead closed: {', '.join(shown)}"
        + (f"; mean {np.mean(valid):.0%}, pooled {gains.mean() / leads.mean():.0%}" if valid else ""),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--name", default="mainjob_seeds", help="results file name")
    parser.add_argument("overrides", nargs="*", help="DistillConfig fields as KEY=VALUE (YAML values)")
    args = parser.parse_args(argv)
    import yaml

    overrides = {}
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key.replace("-", "_")] = yaml.safe_load(value)
    run([int(s) for s in args.seeds.split(",")], name=args.name, **overrides)


if __name__ == "__main__":
    main()
