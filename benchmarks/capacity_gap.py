"""The capacity gap: teacher assistants and early-stopped teachers against plain KD.

    python benchmarks/capacity_gap.py                       # digits, MNIST, CIFAR-10 (about 35 CPU minutes)
    python benchmarks/capacity_gap.py --only digits --seeds 0,1,2
    python benchmarks/capacity_gap.py --only cifar --resume  # keep finished rows

When the student is much smaller than its teacher, plain KD can leave it
below the same student trained on labels alone (issue 17: cnn_tiny, 462
params, from a 94,634-param cnn_large on digits). For students from the
smallest zoo model up, every arm trains the same student, from the same
initial weights, for the same epochs with the same optimizer:

- `scratch`: labels alone;
- `kd`: the `kd` recipe (T = 4, 0.9 KD + 0.1 CE) from the teacher;
- `takd`: the same recipe from a teacher assistant that was itself distilled
  from the teacher with the same recipe and epochs (Mirzadeh et al., AAAI
  2020; `keras_kd.schemes.TeacherAssistant`); the assistant's training is an
  extra cost, reported, shared by the students that use the same assistant;
- `dgkd`: the same recipe from the teacher and the assistant together, one
  of the two dropped at random per mini-batch (Son et al., ICCV 2021;
  `TeacherAssistant(dense=True, drop_count=1)`);
- `es_teacher`: the recipe from the teacher's checkpoint at an early epoch of
  its own training (Cho & Hariharan, ICCV 2019; saved by
  `keras_kd.callbacks.TeacherCheckpoints` during the one teacher run);
- `eskd`: the recipe from the final teacher for the first half of the epochs,
  then labels alone (`WeightScheduler.early_stop("kd_loss", 0.5)`);
- `short_teacher` (digits): the recipe from the same teacher trained for a
  tenth of the epochs on its own cosine schedule, what `keras-kd distill
  --teacher-epochs` gives.

Digits (`keras_kd.datasets.load("digits")`, the seed-0 split: 898 train /
899 test 8x8 images): cnn_large teacher, 60 epochs, batch 32, Adam 3e-3
with cosine decay (the `keras-kd distill` defaults); one teacher (checkpoint
at epoch 15), three student seeds (initial weights, batch order,
assistants); students cnn_tiny (assistant cnn_small) and cnn_small, the
command's default (assistant `cnn_mid`, a 16-32-64 cnn). MNIST: the first
10,000 training images, all 10,000 test images, the same optimizer, batch
32, 4 epochs for the teacher (checkpoint at epoch 1) and each student, one
seed; cnn_tiny (assistant cnn_small) and mlp_tiny (assistant mlp_small).
CIFAR-10: `benchmarks/quality.py`'s budget and its cached resnet20 teacher
(first 10,000 training images with flips and shifts, SGD 0.05 cosine,
batch 64, 5 epochs), cnn_small with a resnet8 assistant, one seed; that
teacher has no early checkpoint, so only scratch, KD and TAKD. Rows are
written to `benchmarks/results/capacity_gap.json` as they finish; the
tables after each dataset (`capacity_gap.md`). Teachers are kept under
`--cache`.
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

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402
from common import RESULTS, data_dir, write_results  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import callbacks, datasets, models, recipes  # noqa: E402
from keras_kd.models.cnn import cnn  # noqa: E402
from keras_kd.schemes import TeacherAssistant  # noqa: E402

NAME = "capacity_gap"
CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
ARMS = {
    "scratch": "labels alone",
    "kd": "KD from the teacher",
    "takd": "TAKD: KD from the assistant (itself distilled from the teacher)",
    "dgkd": "DGKD: KD from teacher and assistant, one dropped per batch",
    "es_teacher": "KD from the teacher's early checkpoint",
    "eskd": "ESKD: KD for the first half of the epochs, then labels alone",
    "short_teacher": "KD from a teacher trained for a tenth of the epochs (its own schedule; --teacher-epochs)",
}
ESKD_FRACTION = 0.5


@dataclasses.dataclass
class Setting:
    dataset: str
    teacher: str
    students: dict  # student -> its assistant ("cnn_mid" is widths 16-32-64, between cnn_small and cnn_large)
    epochs: int
    teacher_epochs: int
    batch_size: int
    seeds: list
    arms: list
    es_epoch: int = None  # the teacher checkpoint of the es_teacher arm
    short_teacher_epochs: int = None  # the short_teacher arm: a teacher trained this many epochs (own schedule)
    learning_rate: float = 3e-3
    train: int = None  # first N training images


def build(name, input_shape, classes, model_name):
    if name == "cnn_mid":
        return cnn(input_shape, classes, widths=(16, 32, 64), name=model_name)
    return models.get(name, input_shape, classes, name=model_name)


class Results:
    """Rows in benchmarks/results/capacity_gap.json, written as they finish."""

    def __init__(self, resume):
        self.path = RESULTS / f"{NAME}.json"
        old = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.rows = old.get("rows", [])
        self.settings = old.get("settings", {})
        self.resume = resume

    def start(self, setting):
        """Keeps the dataset's rows on `--resume` when only the seeds, students or arms changed."""
        settings = dataclasses.asdict(setting)
        added = ("seeds", "students", "arms", "short_teacher_epochs")
        fixed = lambda values: {k: v for k, v in (values or {}).items() if k not in added}  # noqa: E731
        if not (self.resume and fixed(self.settings.get(setting.dataset)) == fixed(settings)):
            self.rows = [r for r in self.rows if r["dataset"] != setting.dataset]
        self.settings[setting.dataset] = settings

    def find(self, **keys):
        return next((r for r in self.rows if all(r.get(k) == v for k, v in keys.items())), None)

    def add(self, row):
        self.rows.append(row)
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"settings": self.settings, "rows": self.rows}, indent=2) + "\n")
        print(json.dumps(row), flush=True)


class ArrayBench:
    """Digits and MNIST: arrays in memory, a fresh seeded pipeline per run (same batches in every arm)."""

    def __init__(self, setting, x_train, y_train, x_test, y_test, input_shape):
        self.setting = setting
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.input_shape = input_shape
        self.steps = int(np.ceil(len(y_train) / setting.batch_size))

    def model(self, name, seed, model_name):
        keras.utils.set_random_seed(seed)
        return build(name, self.input_shape, 10, model_name)

    def train(self, model, seed, epochs=None, callbacks_=()):
        epochs = epochs or self.setting.epochs
        rate = keras.optimizers.schedules.CosineDecay(self.setting.learning_rate, self.steps * epochs)
        model.compile(keras.optimizers.Adam(rate), CE)
        data = (
            tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train))
            .shuffle(len(self.y_train), seed=seed, reshuffle_each_iteration=True)
            .batch(self.setting.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
        keras.utils.set_random_seed(seed)
        model.fit(data, epochs=epochs, verbose=0, callbacks=list(callbacks_))

    def accuracy(self, model):
        return float(np.mean(np.argmax(model.predict(self.x_test, batch_size=1000, verbose=0), -1) == self.y_test))


class CifarBench:
    """CIFAR-10 through benchmarks/quality.py: its data, cached teacher, students and optimizer."""

    def __init__(self, setting, cache):
        self.setting = setting
        self.config = quality.CifarConfig(methods=[], schemes=[], pairs=[[setting.teacher, "cnn_tiny"]])
        self.data = quality.load_data(self.config)
        self.x_test, self.y_test = self.data.numpy("test")
        self.input_shape = self.data.input_shape
        self.steps = int(np.ceil(self.data.num_train / self.config.batch_size))
        self.cache = cache

    def teacher(self):
        return quality.train_teacher(self.config, self.setting.teacher, self.data, self.cache)

    def model(self, name, seed, model_name):
        keras.utils.set_random_seed(seed)
        return build(name, self.input_shape, 10, model_name)

    def train(self, model, seed, epochs=None, callbacks_=()):
        config = dataclasses.replace(self.config, seed=seed)
        epochs = epochs or self.setting.epochs
        model.compile(quality.optimizer(config, self.steps, epochs), CE)
        keras.utils.set_random_seed(seed)
        model.fit(self.data.train, epochs=epochs, verbose=0, callbacks=list(callbacks_))

    def accuracy(self, model):
        return quality.accuracy(model, self.x_test, self.y_test)


def kd(teacher, student):
    weight = recipes.student_loss_weight("kd")
    return keras_kd.Distiller(teacher, student, recipes.get("kd"), student_loss_weight=weight)


def cached_teacher(setting, bench, cache, epochs, es_epoch=None):
    """The teacher trained `epochs` epochs (seed 0) and its checkpoint at `es_epoch`, kept under `cache`;
    (teacher, checkpoint or None, seconds of training or None when read from the cache)."""
    stem = (
        f"capacity_gap-{setting.dataset}-{setting.teacher}-n{setting.train}-e{epochs}-b{setting.batch_size}"
        f"-lr{setting.learning_rate}"
    )
    checkpoints = callbacks.TeacherCheckpoints([es_epoch or 1], cache, stem)
    final, seconds = Path(cache) / f"{stem}.keras", None
    if not (final.exists() and os.path.exists(checkpoints.path(es_epoch or 1))):
        start = time.time()
        teacher = bench.model(setting.teacher, 0, "teacher")
        bench.train(teacher, 0, epochs, [checkpoints])
        seconds = time.time() - start
        teacher.save(final)
    early = keras.saving.load_model(checkpoints.path(es_epoch), compile=False) if es_epoch else None
    return keras.saving.load_model(final, compile=False), early, seconds


def run_setting(setting, bench, results, cache, teacher=None, early_teacher=None):
    """Teachers (unless given; kept under `cache` with the early checkpoint), then per seed: assistants, then
    every student in every arm."""
    results.start(setting)
    name = setting.dataset
    seconds = short_teacher = short_seconds = None
    if teacher is None:
        teacher, early_teacher, seconds = cached_teacher(
            setting, bench, cache, setting.teacher_epochs, setting.es_epoch
        )
    if "short_teacher" in setting.arms:
        short_teacher, _, short_seconds = cached_teacher(setting, bench, cache, setting.short_teacher_epochs)
    for model, arm in ((teacher, "teacher"), (early_teacher, "early_teacher"), (short_teacher, "short_teacher_model")):
        if model is not None and not results.find(dataset=name, arm=arm):
            row = {"dataset": name, "arm": arm, "model": setting.teacher, "params": model.count_params()}
            row.update(accuracy=bench.accuracy(model), seconds={"teacher": seconds}.get(arm, short_seconds))
            if arm == "early_teacher":
                row.update(epoch=setting.es_epoch, seconds=0.0)
            if arm == "short_teacher_model":
                row["epochs"] = setting.short_teacher_epochs
            results.add(row)
    for seed in setting.seeds:
        assistants = {}

        def assistant(architecture):
            if architecture not in assistants:
                start = time.time()
                model = bench.model(architecture, 1000 * seed + 7, "assistant")
                bench.train(kd(teacher, model), 1000 * seed + 2)
                assistants[architecture] = model
                if not results.find(dataset=name, arm="assistant", model=architecture, seed=seed):
                    results.add(
                        {
                            "dataset": name,
                            "arm": "assistant",
                            "model": architecture,
                            "seed": seed,
                            "params": model.count_params(),
                            "accuracy": bench.accuracy(model),
                            "seconds": time.time() - start,
                        }
                    )
            return assistants[architecture]

        for student_name, assistant_name in setting.students.items():
            for arm in setting.arms:
                source = {"es_teacher": early_teacher, "short_teacher": short_teacher}.get(arm, teacher)
                if source is None:
                    continue
                if results.find(dataset=name, arm=arm, model=student_name, seed=seed):
                    continue
                student = bench.model(student_name, 1000 * seed + 1, "student")  # the same weights in every arm
                extra, train_callbacks = {}, []
                if arm in ("takd", "dgkd"):
                    chain = TeacherAssistant(
                        teacher, assistant(assistant_name), student, dense=arm == "dgkd",
                        drop_count=1 if arm == "dgkd" else None, seed=seed,
                    )  # fmt: skip
                    model = chain.distiller(2)  # the assistant was trained above (stage 1, shared)
                    extra["assistant"] = assistant_name
                elif arm == "scratch":
                    model = student
                else:
                    model = kd(source, student)
                    if arm == "eskd":
                        train_callbacks = [callbacks.WeightScheduler.early_stop("kd_loss", ESKD_FRACTION)]
                        extra["kd_epochs"] = callbacks.warmup_epochs(ESKD_FRACTION, setting.epochs)
                start = time.time()
                bench.train(model, 1000 * seed + 2, callbacks_=train_callbacks)
                row = {"dataset": name, "arm": arm, "model": student_name, "seed": seed}
                row.update(params=student.count_params(), accuracy=bench.accuracy(student))
                row.update(seconds=time.time() - start, **extra)
                results.add(row)
    return teacher


def _stats(values):
    mean = 100 * statistics.mean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, spread


def tables(setting, rows):
    """Markdown for one dataset: accuracy per arm, then each arm against scratch and KD per seed."""
    name = setting.dataset
    rows = [r for r in rows if r["dataset"] == name]
    by = {(r["arm"], r.get("model"), r.get("seed")): r for r in rows}
    teacher = next(r for r in rows if r["arm"] == "teacher")
    early = next((r for r in rows if r["arm"] == "early_teacher"), None)
    short = next((r for r in rows if r["arm"] == "short_teacher_model"), None)
    arms = [a for a in setting.arms if any(r["arm"] == a for r in rows)]
    seeds = sorted({r["seed"] for r in rows if r["arm"] in arms})
    n = len(seeds)
    lines = [
        f"## {name}",
        "",
        f"Teacher {setting.teacher} ({teacher['params']:,} params): {100 * teacher['accuracy']:.2f}% "
        f"({setting.teacher_epochs} epochs)"
        + (f"; its checkpoint at epoch {early['epoch']}: {100 * early['accuracy']:.2f}%" if early else "")
        + (f"; the same teacher trained {short['epochs']} epochs: {100 * short['accuracy']:.2f}%" if short else "")
        + f". Students {setting.epochs} epochs, batch {setting.batch_size}; seeds {seeds} "
        + ("(mean ± standard deviation over seeds)." if n > 1 else "(one run)."),
        "",
    ]
    assistants = sorted({(r["model"], r["params"]) for r in rows if r["arm"] == "assistant"}, key=lambda a: a[1])
    for architecture, params in assistants:
        values = [r["accuracy"] for r in rows if r["arm"] == "assistant" and r["model"] == architecture]
        mean, spread = _stats(values)
        lines.append(
            f"Assistant {architecture} ({params:,} params), distilled from the teacher with the same recipe and "
            f"epochs: {mean:.2f}%" + (f" ± {spread:.2f}" if n > 1 else "") + "."
        )
    lines += ["", "| student | params | assistant | " + " | ".join(arms) + " |"]
    lines.append("|---|---:|---|" + "---:|" * len(arms))
    summary = {}
    for student, assistant in setting.students.items():
        cells = []
        for arm in arms:
            values = [by[(arm, student, s)]["accuracy"] for s in seeds if (arm, student, s) in by]
            if not values:
                cells.append("n/a")
                continue
            mean, spread = _stats(values)
            cells.append(f"{mean:.2f} ± {spread:.2f}" if len(values) > 1 else f"{mean:.2f}")
        params = next((r["params"] for r in rows if r.get("model") == student and r["arm"] in arms), 0)
        lines.append(f"| {student} | {params:,} | {assistant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Difference in points against scratch / against KD, mean over seeds (how many seeds above), same initial "
        "weights" + (" and batches:" if name != "cifar10" else " (the augmented pipeline's batches differ):"),
        "",
        "| student | " + " | ".join(a for a in arms if a != "scratch") + " |",
        "|---|" + "---|" * (len(arms) - 1),
    ]
    for student in setting.students:
        cells = []
        summary[student] = {}
        for arm in arms:
            if arm == "scratch":
                continue
            pairs = [
                tuple(by[(a, student, s)]["accuracy"] for a in (arm, "scratch", "kd"))
                for s in seeds
                if (arm, student, s) in by and ("scratch", student, s) in by and ("kd", student, s) in by
            ]
            if not pairs:
                cells.append("n/a")
                continue
            vs_scratch = [100 * (a - b) for a, b, _ in pairs]
            vs_kd = [100 * (a - k) for a, _, k in pairs]
            summary[student][arm] = {
                "vs_scratch_mean": statistics.mean(vs_scratch),
                "vs_kd_mean": statistics.mean(vs_kd),
                "above_scratch": sum(v > 0 for v in vs_scratch),
                "above_kd": sum(v > 0 for v in vs_kd),
                "runs": len(pairs),
            }
            text = f"{statistics.mean(vs_scratch):+.2f} ({sum(v > 0 for v in vs_scratch)}/{len(pairs)} above)"
            if arm != "kd":
                text += f" / {statistics.mean(vs_kd):+.2f} ({sum(v > 0 for v in vs_kd)}/{len(pairs)} above)"
            cells.append(text)
        lines.append(f"| {student} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Verdict: 'helps' or 'hurts' when every seed moves the same way, else 'no clear effect' (one digits test "
        "image is 0.11 points); with one seed, only 'above' or 'below' in that run:",
        "",
    ]
    for student, arms_summary in summary.items():
        for arm, s in arms_summary.items():
            def verdict(mean, above):
                if s["runs"] == 1:
                    return "above (one run)" if mean > 0 else "below (one run)" if mean < 0 else "equal (one run)"
                if above == s["runs"]:
                    return "helps"
                if above == 0 and mean < 0:
                    return "hurts"
                return "no clear effect"

            against = f"vs scratch {verdict(s['vs_scratch_mean'], s['above_scratch'])} ({s['vs_scratch_mean']:+.2f})"
            if arm != "kd":
                against += f", vs KD {verdict(s['vs_kd_mean'], s['above_kd'])} ({s['vs_kd_mean']:+.2f})"
            lines.append(f"- {student}, {arm}: {against}")
    return "\n".join(lines) + "\n", summary


def summary_lines(summaries):
    """Per arm: the students (dataset/student) it lifts above scratch and above KD in every seed, and those
    it leaves below KD in every seed."""
    lines = []
    for arm in [a for a in ARMS if a != "scratch"]:
        cases = [
            (f"{dataset}/{student}", s)
            for dataset, students in summaries.items()
            for student, arms in students.items()
            for a, s in arms.items()
            if a == arm
        ]
        if not cases:
            continue

        def where(test):
            found = [f"{name} ({'%+.2f' % value(s)})" for name, s in cases if test(s)]
            return ", ".join(found) if found else "none"

        value = lambda s: s["vs_scratch_mean"]  # noqa: E731
        text = f"- `{arm}`: above scratch in every seed: {where(lambda s: s['above_scratch'] == s['runs'])}"
        if arm != "kd":
            value = lambda s: s["vs_kd_mean"]  # noqa: E731
            text += f"; above KD in every seed: {where(lambda s: s['above_kd'] == s['runs'] and s['vs_kd_mean'] > 0)}"
            text += f"; below KD in every seed: {where(lambda s: s['above_kd'] == 0 and s['vs_kd_mean'] < 0)}"
        lines.append(text + f" (of {len(cases)} students; points in brackets, 3 seeds on digits, 1 elsewhere).")
    return lines


def write(results, settings):
    parts = [
        "# The capacity gap: teacher assistants and early-stopped teachers",
        "",
        "Top-1 test accuracy (%) of each student; every arm trains the same student from the same initial weights "
        "for the same epochs with the same optimizer (`benchmarks/capacity_gap.py`). Arms: "
        + "; ".join(f"`{arm}` {text}" for arm, text in ARMS.items())
        + ". KD everywhere is the `kd` recipe (T = 4, 0.9 KD + 0.1 CE). Assistants' training is extra, "
        "shared by the students with the same assistant. Seconds per run are in the JSON file.",
        "",
    ]
    summaries, sections = {}, []
    for setting in settings:
        if any(r["dataset"] == setting.dataset for r in results.rows):
            markdown, summaries[setting.dataset] = tables(setting, results.rows)
            sections.append(markdown)
    parts += ["## Summary: where each remedy moves the student", ""] + summary_lines(summaries) + [""] + sections
    payload = {"settings": results.settings, "rows": results.rows, "summary": summaries}
    write_results(NAME, payload, "\n".join(parts))


def settings_for(seeds_digits, seeds_other):
    """The budget of each dataset (about 35 minutes on a shared 2-core CPU)."""
    return {
        "digits": Setting(
            "digits", "cnn_large", {"cnn_tiny": "cnn_small", "cnn_small": "cnn_mid"},
            epochs=60, teacher_epochs=60, batch_size=32, seeds=seeds_digits, arms=list(ARMS), es_epoch=15,
            short_teacher_epochs=6,
        ),
        "mnist": Setting(
            "mnist", "cnn_large", {"cnn_tiny": "cnn_small", "mlp_tiny": "mlp_small"},
            epochs=4, teacher_epochs=4, batch_size=32, seeds=seeds_other,
            arms=["scratch", "kd", "takd", "es_teacher"], es_epoch=1, train=10000,
        ),
        "cifar": Setting(
            "cifar10", "resnet20", {"cnn_small": "resnet8"},
            epochs=5, teacher_epochs=15, batch_size=64, seeds=seeds_other,
            arms=["scratch", "kd", "takd"], learning_rate=0.05, train=10000,
        ),
    }  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="digits,mnist,cifar", help="comma-separated: digits, mnist, cifar")
    parser.add_argument("--seeds", default="0,1,2", help="digits student seeds")
    parser.add_argument("--other-seeds", default="0", help="MNIST and CIFAR-10 student seeds")
    parser.add_argument("--resume", action="store_true", help="keep finished rows of the same settings")
    parser.add_argument("--cache", default="~/.cache/keras_kd/benchmarks", help="quality.py's teacher cache")
    parser.add_argument("--tables", action="store_true", help="only rewrite the tables from the JSON rows")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    other = [int(s) for s in args.other_seeds.split(",")]
    all_settings = settings_for(seeds, other)
    results = Results(args.resume)
    if args.tables:
        write(results, [all_settings[k] for k in ("digits", "mnist", "cifar")])
        return
    cache = Path(args.cache).expanduser()
    for key in args.only.split(","):
        setting = all_settings[key]
        start = time.time()
        if key == "digits":
            data = datasets.load("digits", seed=0)  # the seed-0 split for every student seed
            bench = ArrayBench(setting, *data.numpy("train"), *data.numpy("test"), data.input_shape)
            run_setting(setting, bench, results, cache)
        elif key == "mnist":
            data = datasets.load("mnist", data_dir=str(data_dir()), limit=setting.train)  # all 10,000 test images
            bench = ArrayBench(setting, *data.numpy("train"), *data.numpy("test"), data.input_shape)
            run_setting(setting, bench, results, cache)
        else:
            bench = CifarBench(setting, cache)
            teacher, _ = bench.teacher()
            run_setting(setting, bench, results, cache, teacher=teacher)
        print(f"{key} done in {time.time() - start:.0f}s", flush=True)
        write(results, [all_settings[k] for k in ("digits", "mnist", "cifar")])
    print((RESULTS / f"{NAME}.md").read_text(), flush=True)


if __name__ == "__main__":
    main()
