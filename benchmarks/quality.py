"""Student quality on real data: MNIST in Hinton's setting, every method on CIFAR.

    python benchmarks/quality.py                       # both parts, the CPU budget below
    python benchmarks/quality.py --only mnist          # MNIST only (3 seeds)
    python benchmarks/quality.py --only cifar          # the CIFAR-10 method table only
    python benchmarks/quality.py --only cifar --config benchmarks/configs/cifar100_crd.yaml

MNIST (Hinton et al. 2015, without their jitter): a 1200-1200 MLP teacher
(dropout 0.5, input dropout 0.2), 800-800 MLP students with no
regularisation, scratch and KD (T=4, 0.9 KD + 0.1 CE), Adam 1e-3, batch 128.
One teacher (seed 0); each student seed gives the scratch and the KD student
the same initial weights and batch order. Test errors out of 10,000.

CIFAR (the layout of the CRD benchmark's CIFAR-100 table, Tian et al. 2020):
for each teacher -> student pair, the teacher, the scratch student and the
student trained with each method of `keras_kd.recipes` at its published
weights (`recipes.distiller`, layers from the zoo's naming convention;
factor transfer pre-trains its paraphraser first). Every student of a pair
starts from the same weights and sees the same batches for the same epochs
with the same optimizer: SGD with momentum 0.9 and weight decay 5e-4 in the
form `weight_decay_form` names, cosine or step learning rate. Below the methods,
rows that are not one loss (`SCHEMES`, same data, epochs and optimizer):
Ba & Caruana's shallow mimic net trained on labels and on the teacher's
logits; filter grafting of two students (the first from the scratch
student's weights, the second from another seed; the first is reported);
and one round of Noisy Student, where the scratch student (re-trained)
labels the next `train` training images, whose labels are not used, and an
equal-size student with dropout 0.5 and stochastic depth 0.2 learns from
both sets with the same augmentation as input noise.

The default CIFAR budget fits a 2-core CPU (about an hour): CIFAR-10, the
first 10,000 training images (flip + crop augmentation), all 10,000 test
images, resnet20 -> resnet8, teacher 15 epochs, students 5 epochs, batch
64, learning rate 0.05 with cosine decay. `benchmarks/configs/cifar100_crd.yaml`
holds the full protocol of the CRD paper (CIFAR-100, 240 epochs, batch 64,
learning rate 0.05 divided by 10 at epochs 150, 180 and 210, weight decay
5e-4, its teacher/student pairs) for a GPU; `--data-dir` or
`KERAS_KD_DATA_DIR` points at prepared data, else tensorflow-datasets
downloads it.

How the default table differs from the paper's protocol, besides its budget
(the YAML configs reproduce the paper on both points):

- Weight decay. The default `weight_decay_form: "decoupled"` is Keras'
  `SGD(weight_decay=5e-4)`: each step first shrinks every weight by
  `lr * 5e-4 * w`, outside the momentum, then `v = 0.9 v - lr g; w += v`.
  The paper trains with PyTorch's `SGD(weight_decay=5e-4)`, coupled L2: the
  gradient becomes `g + 5e-4 w` before the momentum, so the decay is
  accumulated by it and, in the steady state, shrinks the weights by about
  `lr * 5e-4 * w / (1 - 0.9)` per step: ten times the decoupled form. The
  YAML configs set `weight_decay_form: "coupled"`
  (`keras_kd.optimizers.CoupledSGD`: the same equations on every trainable
  variable, BatchNormalization and biases included as in RepDistiller; Keras
  keeps the learning rate in its momentum velocity, which equals PyTorch's
  update at a constant rate and differs only for the few steps after each of
  the step schedule's divisions by 10).
- Input normalisation. The default `normalize: false` feeds images in
  [0, 1]; the paper standardises each channel with CIFAR-100's mean
  (0.5071, 0.4867, 0.4408) and std (0.2675, 0.2565, 0.2761). The YAML
  configs set `normalize: true`: a fixed `keras.layers.Normalization` with
  these values (`CHANNEL_STATS`) in front of every teacher and student, so
  the data, the augmentation and a TFLite export stay in [0, 1].

The default keeps the decoupled form and [0, 1] inputs because its recorded
rows were trained so (`--resume` compares configs).

Each finished row is written at once to `benchmarks/results/<name>.json`, so
`--resume` continues an interrupted run, or adds methods to a finished table
(rows are kept when everything but the method list is unchanged); trained
teachers are kept under `--cache` and reused. Results: `benchmarks/results/quality_mnist.{json,md}`
and `quality_<dataset>.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, data_dir, load_mnist, write_results  # noqa: E402
from mnist_kd import mlp  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import datasets, models, recipes  # noqa: E402
from keras_kd.optimizers import CoupledSGD  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
# The CRD table's rows in its order, then the methods it does not cover.
CRD_ORDER = [
    "kd",
    "fitnet",
    "at",
    "sp",
    "cc",
    "vid",
    "rkd",
    "pkt",
    "ab",
    "ft",
    "fsp",
    "nst",
    "crd",
]
FEATURE_METHODS = [name for name in recipes.names() if recipes.get_recipe(name).on != "logits"]


def all_methods():
    return CRD_ORDER + [name for name in recipes.names() if name not in CRD_ORDER]


# Rows that are not one loss in a Distiller: other students or training schemes (see `scheme_row`).
SCHEMES = {
    "mimic_scratch": "mimic net, labels only, a tenth of the learning rate",
    "mimic": "mimic net, teacher's logits (Ba & Caruana), a tenth of the learning rate",
    "grafting": "filter grafting, 2 peers (peer 1)",
    "noisy_student": "noisy student, 1 round",
}


@dataclasses.dataclass
class CifarConfig:
    dataset: str = "cifar10"
    pairs: list = dataclasses.field(default_factory=lambda: [["resnet20", "resnet8"]])
    methods: list = dataclasses.field(default_factory=all_methods)
    schemes: list = dataclasses.field(default_factory=lambda: list(SCHEMES))
    train: int = 10000  # first N training images; None: all
    teacher_epochs: int = 15
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.05
    teacher_learning_rate: float = None  # None: learning_rate
    schedule: str = "cosine"  # or "step"
    milestones: list = dataclasses.field(default_factory=lambda: [150, 180, 210])  # epochs, for "step"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # "decoupled": Keras' SGD(weight_decay=...), w -= lr * wd * w each step outside the momentum (the quick
    # table's rows were trained so); "coupled": PyTorch's SGD(weight_decay=...), g += wd * w inside the momentum
    # (keras_kd.optimizers.CoupledSGD), the CRD protocol's form.
    weight_decay_form: str = "decoupled"
    # Standardise the inputs per channel, (x - mean) / std, in a fixed layer at the front of every teacher and
    # student (`CHANNEL_STATS`), as RepDistiller's transforms.Normalize; False: inputs in [0, 1].
    normalize: bool = False
    augment: bool = True
    seed: int = 0

    @classmethod
    def from_file(cls, path, **overrides):
        values = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown keys in {path}: {sorted(unknown)}")
        return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})

    def validate(self):
        unknown = sorted(set(self.methods) - set(recipes.names()))
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; available: {recipes.names()}")
        unknown = sorted(set(self.schemes) - set(SCHEMES))
        if unknown:
            raise ValueError(f"Unknown schemes {unknown}; available: {sorted(SCHEMES)}")
        for pair in self.pairs:
            for name in pair:
                models.describe(name)  # raises naming the valid models
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be 'cosine' or 'step', got {self.schedule!r}")
        if self.weight_decay_form not in ("decoupled", "coupled"):
            raise ValueError(f"weight_decay_form must be 'decoupled' or 'coupled', got {self.weight_decay_form!r}")
        if not isinstance(self.normalize, bool):
            raise ValueError(f"normalize must be true or false, got {self.normalize!r}")


# Settings added after rows were recorded: a results file without them was trained with these values.
LATER_SETTINGS = {"weight_decay_form": "decoupled", "normalize": False}

# Per-channel (mean, std) of the training images in [0, 1], as the PyTorch protocols normalise them:
# CIFAR-100 as RepDistiller's dataset/cifar100.py, CIFAR-10 as torchdistill's configs/sample/cifar10.
# Other datasets: computed from the training images the run loads (`channel_stats`).
CHANNEL_STATS = {
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
}


def optimizer(config, steps_per_epoch, epochs, learning_rate=None):
    learning_rate = config.learning_rate if learning_rate is None else learning_rate
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, max(1, steps_per_epoch * epochs))
    else:
        boundaries = [m * steps_per_epoch for m in config.milestones]
        rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [learning_rate * 0.1**i for i in range(len(boundaries) + 1)]
        )
    if config.weight_decay_form == "coupled":
        return CoupledSGD(rate, momentum=config.momentum, coupled_weight_decay=config.weight_decay)
    return keras.optimizers.SGD(rate, momentum=config.momentum, weight_decay=config.weight_decay)


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=500, verbose=0), -1) == y))


class Results:
    """Rows kept in benchmarks/results/<name>.json as they finish."""

    def __init__(self, name, config, resume):
        self.name, self.path = name, RESULTS / f"{name}.json"
        old = json.loads(self.path.read_text()) if resume and self.path.exists() else {}

        # Rows stay comparable when only the lists of methods and schemes change (a method added later);
        # a setting left at None equals a setting the old file does not have.
        def settings(values):
            return {
                key: value for key, value in values.items() if key not in ("methods", "schemes") and value is not None
            }

        recorded = {**{k: v for k, v in LATER_SETTINGS.items() if k in config}, **old.get("config", {})}
        same = bool(old) and settings(recorded) == settings(config)
        if resume and old and not same:
            print(f"--resume: {self.path} has another config; starting afresh", flush=True)
        self.rows = old.get("rows", []) if same else []
        self.config = config

    def find(self, **keys):
        return next((r for r in self.rows if all(r.get(k) == v for k, v in keys.items())), None)

    def add(self, row):
        self.rows.append(row)
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"config": self.config, "rows": self.rows}, indent=2) + "\n")
        print(json.dumps(row), flush=True)


# ---------------------------------------------------------------- MNIST


def run_mnist(seeds=(0, 1, 2), epochs=20, temperature=4.0, batch_size=128, resume=False):
    config = {
        "seeds": list(seeds),
        "epochs": epochs,
        "temperature": temperature,
        "batch_size": batch_size,
    }
    results = Results("quality_mnist", config, resume)
    x_train, y_train, x_test, y_test = load_mnist()
    fit = dict(epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)

    def errors(model):
        return int(np.sum(np.argmax(model.predict(x_test, batch_size=1000, verbose=0), -1) != y_test))

    keras.utils.set_random_seed(0)
    teacher = mlp([1200, 1200], "teacher", dropout=0.5, input_dropout=0.2)
    teacher.compile(keras.optimizers.Adam(1e-3), CE)
    start = time.time()
    teacher.fit(x_train, y_train, **fit)
    teacher_row = {
        "model": "teacher",
        "seed": 0,
        "test_errors": errors(teacher),
        "seconds": time.time() - start,
    }
    if not results.find(model="teacher"):
        results.add(teacher_row)
    for seed in seeds:
        for method in ("scratch", "kd"):
            if results.find(model=method, seed=seed):
                continue
            keras.utils.set_random_seed(seed + 1)
            student = mlp([800, 800], f"student_{method}")
            model = student
            if method == "kd":
                terms = [keras_kd.Term(keras_kd.losses.KDLoss(temperature=temperature), weight=0.9)]
                model = keras_kd.Distiller(teacher, student, terms, student_loss_weight=0.1)
            model.compile(keras.optimizers.Adam(1e-3), CE)
            keras.utils.set_random_seed(seed + 2)
            start = time.time()
            model.fit(x_train, y_train, **fit)
            results.add(
                {
                    "model": method,
                    "seed": seed,
                    "test_errors": errors(student),
                    "seconds": time.time() - start,
                }
            )

    def summary(method):
        values = [r["test_errors"] for r in results.rows if r["model"] == method]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return values, statistics.mean(values), spread

    lines = [
        "# MNIST, Hinton et al.'s setting (test errors out of 10,000)",
        "",
        f"Teacher MLP 1200-1200 (dropout 0.5, input dropout 0.2, seed 0); students MLP 800-800, no "
        f"regularisation; {epochs} epochs, batch {batch_size}, Adam 1e-3, no jitter; KD: 0.9 KD at "
        f"T={temperature:g} + 0.1 CE. Student seeds {list(seeds)} (same initial weights and batches for "
        "scratch and KD within a seed). The paper reports 67 / 146 / 74 errors with longer training and jitter.",
        "",
        "| model | params | errors per seed | mean | std | paper |",
        "|---|---:|---|---:|---:|---:|",
    ]
    params = {
        "teacher": teacher.count_params(),
        "scratch": mlp([800, 800], "s").count_params(),
    }
    params["kd"] = params["scratch"]
    for method, paper in (("teacher", 67), ("scratch", 146), ("kd", 74)):
        values, mean, spread = summary(method)
        lines.append(
            f"| {method} | {params[method]:,} | {', '.join(map(str, values))} | {mean:.1f} | {spread:.1f} | {paper} |"
        )
    (_, scratch, _), (_, kd, _) = summary("scratch"), summary("kd")
    gains = [
        results.find(model="scratch", seed=s)["test_errors"] - results.find(model="kd", seed=s)["test_errors"]
        for s in seeds
    ]
    lines += [
        "",
        f"KD student: {scratch - kd:+.1f} errors fewer than scratch on average; per seed {gains}.",
    ]
    markdown = "\n".join(lines) + "\n"
    payload = {"config": config, "rows": results.rows, "kd_gain_errors_per_seed": gains}
    write_results("quality_mnist", payload, markdown)
    print(markdown, flush=True)
    return payload


# ---------------------------------------------------------------- CIFAR


def train_teacher(config, name, data, cache):
    learning_rate = config.teacher_learning_rate or config.learning_rate
    variant = ("-coupled" if config.weight_decay_form == "coupled" else "") + ("-norm" if config.normalize else "")
    path = Path(cache) / (
        f"{config.dataset}-{name}-n{config.train}-e{config.teacher_epochs}-b{config.batch_size}"
        f"-{config.schedule}-lr{learning_rate}{variant}-s{config.seed}.keras"
    )
    if path.exists():
        return keras.saving.load_model(path), 0.0
    keras.utils.set_random_seed(config.seed)
    teacher = build(config, name, data, name="teacher")
    steps = int(np.ceil(data.num_train / config.batch_size))
    teacher.compile(optimizer(config, steps, config.teacher_epochs, learning_rate), CE)
    start = time.time()
    teacher.fit(data.train, epochs=config.teacher_epochs, verbose=2)
    seconds = time.time() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    teacher.save(path)
    return teacher, seconds


def load_data(config, **overrides):
    """The CIFAR part's data: `$KERAS_KD_DATA_DIR`, else ../shared/data for CIFAR-10, else tensorflow-datasets."""
    folder = os.environ.get(datasets.ENV_VAR) or (str(data_dir()) if config.dataset == "cifar10" else None)
    options = {
        "batch_size": config.batch_size,
        "augment": config.augment,
        "seed": config.seed,
        "limit": config.train,
        **overrides,
    }
    return datasets.load(config.dataset, data_dir=folder, **options)


def run_cifar(config, resume=False, cache="~/.cache/keras_kd/benchmarks"):
    config.validate()
    cache = Path(cache).expanduser()
    name = f"quality_{config.dataset}"
    results = Results(name, dataclasses.asdict(config), resume)
    data = load_data(config)
    x_test, y_test = data.numpy("test")
    steps = int(np.ceil(data.num_train / config.batch_size))
    for teacher_name, student_name in config.pairs:
        pair = f"{teacher_name}->{student_name}"
        teacher, seconds = train_teacher(config, teacher_name, data, cache)
        if not results.find(pair=pair, method="teacher"):
            results.add(
                {
                    "pair": pair,
                    "method": "teacher",
                    "accuracy": accuracy(teacher, x_test, y_test),
                    "params": teacher.count_params(),
                    "seconds": seconds,
                }
            )
        for method in ["scratch", *config.methods, *config.schemes]:
            if results.find(pair=pair, method=method):
                continue
            start = time.time()
            row = scheme_row if method in SCHEMES else method_row
            student, losses, extra = row(method, config, teacher, student_name, data, steps)
            results.add(
                {
                    "pair": pair,
                    "method": method,
                    "accuracy": accuracy(student, x_test, y_test),
                    "params": student.count_params(),
                    "seconds": time.time() - start,
                    "final_loss": float(losses[-1]),
                    "finite": bool(np.all(np.isfinite(losses))),
                    **extra,
                }
            )
    markdown, summary = cifar_table(config, results.rows, data.num_train, len(y_test))
    payload = {
        "config": dataclasses.asdict(config),
        "rows": results.rows,
        "summary": summary,
    }
    write_results(name, payload, markdown)
    print(markdown, flush=True)
    return payload


def channel_stats(config, data):
    """(mean, std) per channel of `config.dataset`: `CHANNEL_STATS`, else computed from the training images."""
    if config.dataset in CHANNEL_STATS:
        return CHANNEL_STATS[config.dataset]
    x = data.numpy("train")[0]
    axes = tuple(range(x.ndim - 1))
    return x.mean(axes).tolist(), x.std(axes).tolist()


def build(config, architecture, data, /, **kwargs):
    """Zoo model `architecture`, behind the fixed per-channel standardisation when `config.normalize` (inputs
    stay in [0, 1]: the data pipeline, augmentation and a TFLite export see unnormalised images)."""
    model = models.get(architecture, data.input_shape, data.num_classes, **kwargs)
    return models.with_input_normalization(model, *channel_stats(config, data)) if config.normalize else model


def new_student(config, name, data, **kwargs):
    keras.utils.set_random_seed(config.seed + 1)  # same initial student for every row
    return build(config, name, data, **{"name": "student", **kwargs})


def fit(config, model, data, steps, epochs=None, learning_rate=None):
    """Trains `model` (compiled here) on the pair's batches; returns its losses per epoch."""
    epochs = epochs or config.epochs
    model.compile(optimizer(config, steps, epochs, learning_rate), CE)
    keras.utils.set_random_seed(config.seed + 2)  # same batches
    return model.fit(data.train, epochs=epochs, verbose=0).history["loss"]


def method_row(method, config, teacher, student_name, data, steps):
    """The scratch student, or the student trained with one recipe."""
    student = new_student(config, student_name, data)
    if method == "scratch":
        return student, fit(config, student, data, steps), {}
    # CRD keeps a memory row per training example: its batches carry their positions.
    indexed = recipes.get_recipe(method).loss.requires_index
    extra = {"num_data": data.num_train} if indexed else {}
    model = recipes.distiller(method, teacher, student, **extra)
    recipes.pretrain(model, data.numpy("train")[0])
    return student, fit(config, model, load_data(config, index=True) if indexed else data, steps), {}


def scheme_row(method, config, teacher, student_name, data, steps):
    """A row of `SCHEMES`: (the model whose accuracy is reported, losses, extra fields)."""
    if method in ("mimic_scratch", "mimic"):
        # Ba & Caruana's shallow net (zoo defaults), on labels or regressing the teacher's logits.
        # k = 250 (the zoo default), or half the input size for inputs too small for it (digits in the tests).
        bottleneck = min(250, math.prod(data.input_shape) // 2)
        student = new_student(config, "mimic", data, bottleneck=bottleneck)
        model = student if method == "mimic_scratch" else recipes.distiller("logit_mse", teacher, student)
        # A tenth of the learning rate: the un-normalised shallow net diverges at the ResNets' rate (0.05 gave
        # chance accuracy on labels and an infinite logit loss).
        learning_rate = config.learning_rate / 10
        losses = fit(config, model, data, steps, learning_rate=learning_rate)
        extra = {"student": "mimic", "learning_rate": learning_rate}
        if method == "mimic":  # recorded: a teacher re-trained on a CPU can differ from the table's
            x_test, y_test = data.numpy("test")
            extra["teacher_accuracy"] = accuracy(teacher, x_test, y_test)
        return student, losses, extra
    if method == "grafting":
        # Peer 1 starts from the scratch student's weights; peer 2 from another seed.
        peers = [new_student(config, student_name, data)]
        keras.utils.set_random_seed(config.seed + 3)
        peers.append(build(config, student_name, data, name="peer2"))
        trainer = keras_kd.schemes.GraftingTrainer(peers)
        losses = fit(config, trainer, data, steps)
        x_test, y_test = data.numpy("test")
        return peers[0], losses, {"peer2_accuracy": accuracy(peers[1], x_test, y_test)}
    if method == "noisy_student":
        return noisy_student_row(config, student_name, data, steps)
    raise ValueError(f"Unknown scheme {method!r}; available: {sorted(SCHEMES)}")


def noisy_student_row(config, student_name, data, steps):
    """One round of Noisy Student: the scratch student (retrained, same weights and batches) labels the next
    `config.train` training images (their labels unused); an equal-size student with the paper's model noise
    (dropout 0.5, stochastic depth 0.2) and the same flip + shift augmentation learns from both sets."""
    teacher = new_student(config, student_name, data)
    fit(config, teacher, data, steps)
    x_labeled, y_labeled = data.numpy("train")
    more = load_data(config, limit=2 * len(x_labeled), augment=False)
    x_unlabeled = more.numpy("train")[0][len(x_labeled) :]
    noise = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomTranslation(0.125, 0.125, fill_mode="constant")]
        if config.augment
        else []
    )
    # The paper's model noise, where the architecture has it (the zoo ResNets).
    takes_noise = {"dropout", "stochastic_depth"} <= set(
        inspect.signature(models._entry(student_name).builder).parameters
    )
    model_noise = {"dropout": 0.5, "stochastic_depth": 0.2} if takes_noise else {}
    scheme = keras_kd.schemes.NoisyStudent(
        teacher,
        lambda round_index: new_student(config, student_name, data, **model_noise),
        rounds=1,
        noise=noise,
        seed=config.seed,
    )
    train_steps = int(np.ceil((len(x_labeled) + len(x_unlabeled)) / config.batch_size))
    keras.utils.set_random_seed(config.seed + 2)
    student, history = scheme.run(
        (x_labeled, y_labeled),
        x_unlabeled,
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=lambda round_index: optimizer(config, train_steps, config.epochs),
    )
    x_test, y_test = data.numpy("test")
    extra = {"teacher_accuracy": accuracy(teacher, x_test, y_test), "unlabeled": len(x_unlabeled), **model_noise}
    return student, history[-1]["history"]["loss"], extra


def cifar_table(config, rows, num_train, num_test):
    pairs = [f"{t}->{s}" for t, s in config.pairs]
    by = {(r["pair"], r["method"]): r for r in rows}

    def accuracy_of(pair, method):
        row = by.get((pair, method))
        return None if row is None else 100 * row["accuracy"]

    def cells(pair, method):
        value, scratch, kd = (accuracy_of(pair, m) for m in (method, "scratch", "kd"))
        if value is None:
            return ["n/a", "", ""]
        versus = [
            f"{value - base:+.2f}" if base is not None and method not in ("teacher", "scratch", against) else ""
            for base, against in ((scratch, "scratch"), (kd, "kd"))
        ]
        return [f"{value:.2f}", *versus]

    header = [
        "| method | " + " | ".join(f"{p.replace('->', ' → ')} | Δ scratch | Δ KD" for p in pairs) + " |",
        "|---|" + "---:|---:|---:|" * len(pairs),
    ]
    lines = [
        f"# {config.dataset}: every method at its published weights (top-1 test accuracy, %)",
        "",
        f"Budget: first {num_train:,} training images (augment={config.augment}), {num_test:,} test images; teacher "
        f"{config.teacher_epochs} epochs, students {config.epochs} epochs; batch {config.batch_size}; SGD "
        f"momentum {config.momentum}, weight decay {config.weight_decay} ({config.weight_decay_form}), learning "
        f"rate {config.learning_rate} ({config.schedule}); inputs "
        f"{'standardised per channel' if config.normalize else 'in [0, 1]'}; seed {config.seed}, one run. "
        "Δ: points above the scratch student (same initial "
        "weights, same batches) and above the KD student. Weights: `keras_kd.recipes` (the CRD scripts' `-r/-a/-b`).",
        "",
        *header,
    ]
    for method, label in [("teacher", "teacher"), ("scratch", "student (scratch)")] + [(m, m) for m in config.methods]:
        lines.append(f"| {label} | " + " | ".join(" | ".join(cells(p, method)) for p in pairs) + " |")
    if config.schemes:
        lines += ["", "Other students and training schemes, same data, epochs and optimizer (see `SCHEMES`):", ""]
        lines += header
        for method in config.schemes:
            params = {by[(p, method)]["params"] for p in pairs if (p, method) in by}
            label = f"{method}: {SCHEMES[method]}" + (f", {min(params):,} params" if params else "")
            # Teachers re-trained on a CPU are not bit-identical: say which one a row learned from.
            taught = {by[(p, method)].get("teacher_accuracy") for p in pairs if (p, method) in by} - {None}
            label += "".join(f"; its teacher {100 * t:.2f}%" for t in sorted(taught))
            lines.append(f"| {label} | " + " | ".join(" | ".join(cells(p, method)) for p in pairs) + " |")
    summary = {}
    for pair in pairs:
        scratch = by.get((pair, "scratch"))
        if scratch is None:
            continue
        features = [m for m in config.methods if m in FEATURE_METHODS and (pair, m) in by]
        beat = [m for m in features if by[(pair, m)]["accuracy"] > scratch["accuracy"]]
        kd = by.get((pair, "kd"))
        summary[pair] = {
            "kd_beats_scratch": None if kd is None else kd["accuracy"] > scratch["accuracy"],
            "feature_methods_beating_scratch": beat,
            "feature_methods_run": features,
        }
        lines += [
            "",
            f"{pair}: KD beats scratch: {summary[pair]['kd_beats_scratch']}; feature methods above scratch: "
            f"{len(beat)} of {len(features)} ({', '.join(beat) or 'none'}).",
        ]
    return "\n".join(lines) + "\n", summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["mnist", "cifar"], help="run one part")
    parser.add_argument("--config", help="YAML file of CIFAR settings (see CifarConfig)")
    parser.add_argument("--methods", help="comma-separated CIFAR methods (default: all recipes)")
    parser.add_argument("--epochs", type=int, help="CIFAR student epochs")
    parser.add_argument("--teacher-epochs", type=int)
    parser.add_argument("--train", type=int, help="first N CIFAR training images")
    parser.add_argument("--mnist-epochs", type=int, default=20)
    parser.add_argument("--mnist-seeds", default="0,1,2")
    parser.add_argument("--resume", action="store_true", help="keep finished rows of the same config")
    parser.add_argument(
        "--cache",
        default="~/.cache/keras_kd/benchmarks",
        help="folder for trained teachers",
    )
    args = parser.parse_args(argv)
    if args.only in (None, "mnist"):
        seeds = [int(s) for s in args.mnist_seeds.split(",")]
        run_mnist(seeds, args.mnist_epochs, resume=args.resume)
    if args.only in (None, "cifar"):
        overrides = {
            "epochs": args.epochs,
            "teacher_epochs": args.teacher_epochs,
            "train": args.train,
        }
        if args.methods:
            overrides["methods"] = args.methods.split(",")
        if args.config:
            config = CifarConfig.from_file(args.config, **overrides)
        else:
            config = CifarConfig(**{k: v for k, v in overrides.items() if v is not None})
        run_cifar(config, resume=args.resume, cache=args.cache)


if __name__ == "__main__":
    main()
