"""The complete distillation job behind `keras-kd distill`.

    config = keras_kd.job.DistillConfig(dataset="digits", method="kd")
    report = keras_kd.job.run(config)

Stages: teacher (train a zoo model, or load a `.keras` file), scratch
student (the same student trained on labels alone with the same budget),
distilled student, evaluation of all three, TFLite export of the distilled
student (`student.tflite` takes raw pixels, with the dataset's scaling as a
Rescaling layer inside, and returns logits; `labels.txt` names the classes),
then the run folder: `report.json`, `report.md`, the models and the
plots. The job runs on every Keras backend (`KERAS_BACKEND=jax` or `torch`
too: the data are `tf.data` pipelines, which Keras' `fit` accepts on each);
TFLite export needs TensorFlow, so elsewhere that stage is skipped and
`report.json` says why (and `quantize` other than "none" is refused before
any training). With `assistant`, the student learns through teacher assistants
(TAKD, Mirzadeh et al. 2020): each is distilled from the model before it
with the same method and epochs, and reported as a stage of its own.
Every stage writes its files as it finishes, so an interrupted run keeps
what was done (and `report.json` says where it stopped). Each file is
written whole or not at all (`keras_kd.files`), and `report.json` lists a
file only once it is complete. The run folder is claimed exclusively: of two
runs given the same `output`, one stops with an error; `overwrite` moves the
previous run aside and deletes it once the new run has started.
"""

import dataclasses
import json
import os
import re
import secrets
import shutil
import socket
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import yaml

from keras_kd import backend, datasets, export, files, models, recipes, report
from keras_kd.progress import StageProgress
from keras_kd.validation import validate_positive, validate_positive_int, validate_seed

# Per-dataset defaults: pairs from the literature that fit the data's size. On digits the
# teacher memorises its 898 training images (its T=1 outputs on them put 0.15% of the mass
# off the label), so KD on those images teaches little: the default is function matching
# (same mixup view for both networks, a long schedule), measured in
# benchmarks/results/mainjob_seeds.md.
DEFAULTS = {
    "digits": {
        "teacher": "cnn_large",
        "student": "mlp_small",
        "method": "function_matching",
        "epochs": 500,
        "teacher_epochs": 60,
        "batch_size": 32,
    },
    "mnist": {"teacher": "hinton_teacher", "student": "hinton_student", "epochs": 15, "batch_size": 128},
    "fashion_mnist": {"teacher": "cnn_large", "student": "cnn_small", "epochs": 15, "batch_size": 128},
    "cifar10": {"teacher": "resnet56", "student": "resnet20", "epochs": 30, "batch_size": 128},
    "cifar100": {"teacher": "resnet32x4", "student": "resnet8x4", "epochs": 30, "batch_size": 128},
}
FALLBACK = {"teacher": "cnn_large", "student": "cnn_small", "epochs": 15, "batch_size": 128}
for _defaults in (*DEFAULTS.values(), FALLBACK):
    _defaults.setdefault("method", "kd")


@dataclasses.dataclass
class DistillConfig:
    """Everything that defines a run; `report.json` and `config.yaml` store it.

    Fields left None take the dataset's default (`DEFAULTS`).
    """

    dataset: str = "digits"
    data_dir: str = None
    teacher: str = None  # a zoo name or a .keras file
    student: str = None  # a zoo name
    # Teacher assistant(s) between them (TAKD): zoo names or .keras files, largest first, joined by ",".
    assistant: str = None
    method: str = None  # a recipe name, or several joined by "+" (e.g. "kd+at")
    epochs: int = None
    teacher_epochs: int = None  # defaults to `epochs` (the dataset's own default when `epochs` is left to it)
    batch_size: int = None
    learning_rate: float = 3e-3
    temperature: float = None  # overrides the recipe's for methods that have one
    augment: bool = False
    seed: int = 0
    limit: int = None  # use the first `limit` examples of each split
    quantize: str = "none"  # of student.tflite: none, float16, dynamic, int8
    output: str = None  # run folder; default runs/<dataset>-<method>-<time>
    overwrite: bool = False
    # "auto": one progress line per training stage (keras_kd.progress); 0: the stage lines only;
    # 1 or 2: Keras' own `fit` output (a progress bar, or a line per epoch).
    verbose: object = "auto"

    def __post_init__(self):
        defaults = dict(DEFAULTS.get(self.dataset, FALLBACK))
        if self.epochs is not None:
            defaults.pop("teacher_epochs", None)  # a chosen `epochs` sets the teacher's too, unless given
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.teacher_epochs is None:
            self.teacher_epochs = self.epochs
        self.validate()

    def validate(self):
        # Stored as the checked Python numbers, so config.yaml holds plain values.
        for key in ("epochs", "teacher_epochs", "batch_size"):
            setattr(self, key, validate_positive_int(key, getattr(self, key)))
        self.limit = validate_positive_int("limit", self.limit, allow_none=True)
        self.seed = validate_seed("seed", self.seed)
        for key in ("learning_rate", "temperature"):
            if getattr(self, key) is not None:  # finite: inf or NaN would train to a NaN model
                setattr(self, key, validate_positive(key, getattr(self, key)))
        if not (self.verbose == "auto" or (type(self.verbose) is int and self.verbose in (0, 1, 2))):
            raise ValueError(f"`verbose` must be 'auto', 0, 1 or 2. Received: verbose={self.verbose!r}")
        if self.quantize not in ("none", "float16", "dynamic", "int8"):
            raise ValueError(
                f"`quantize` must be one of none, float16, dynamic, int8. Received: quantize={self.quantize!r}"
            )
        if self.quantize != "none":  # asked for explicitly: fail now, not after training
            backend.require_tensorflow(f"quantize={self.quantize!r} (TFLite export)")
        for name in self.methods:
            recipes.get_recipe(name)
        if self.student not in models.names():
            raise ValueError(f"Unknown student model {self.student!r}. Available models: {models.names()}")
        if not self.teacher.endswith(".keras") and self.teacher not in models.names():
            raise ValueError(
                f"Unknown teacher {self.teacher!r}: give a .keras file or a zoo model. "
                f"Available models: {models.names()}"
            )
        for name in self.assistants:
            if not name.endswith(".keras") and name not in models.names():
                raise ValueError(
                    f"Unknown assistant {name!r}: give a .keras file or a zoo model. Available models: {models.names()}"
                )

    @property
    def assistants(self):
        """The teacher assistants, largest first (none without `assistant`)."""
        if self.assistant is None:
            return []
        if not isinstance(self.assistant, str):
            raise ValueError(f"`assistant` must be a string (names joined by ','). Received: assistant={self.assistant!r}")
        return [name.strip() for name in self.assistant.split(",") if name.strip()]

    @property
    def methods(self):
        names = [name.strip() for name in re.split(r"[+,]", self.method) if name.strip()]
        if not names:
            raise ValueError(f"`method` names no method. Received: method={self.method!r}")
        return names

    @classmethod
    def from_file(cls, path, **overrides):
        """Reads a YAML or JSON file of the same fields; `overrides` win."""
        text = Path(path).read_text()
        try:
            settings = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            kind = "JSON" if str(path).endswith(".json") else "YAML"
            detail = " ".join(str(error).split())
            raise ValueError(f"Config file {str(path)!r} is not valid {kind}: {detail}") from None
        if not isinstance(settings, dict):
            raise ValueError(f"Config file {path} must hold a mapping of settings. Received: {type(settings).__name__}")
        settings = {key.replace("-", "_"): value for key, value in settings.items()}
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ValueError(f"Unknown setting(s) {unknown} in {path}. Valid settings: {sorted(fields)}")
        return cls(**{**settings, **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self):
        return dataclasses.asdict(self)


def _log(message):
    print(message, flush=True)


def load_model(path, what="model"):
    """`keras.saving.load_model(path, compile=False)` with clear errors: no
    file, a file that is not a `.keras` archive (Keras calls a truncated one
    "File not found"), or one Keras cannot rebuild."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No {what} file at {str(path)!r}.")
    if os.path.isdir(path) or not zipfile.is_zipfile(path):
        raise ValueError(
            f"Could not load the {what} from {str(path)!r}: it is not a valid Keras file (a .keras file is a zip "
            "archive; this one is truncated, corrupt or of another format)."
        )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"Could not load the {what} from {str(path)!r}: {error}") from error


def load_teacher(path, data, role="teacher"):
    """Loads a teacher (or assistant, `role`) file and checks it fits `data`'s inputs and classes."""
    teacher = load_model(path, role)
    output_shape = tuple(teacher.outputs[0].shape)
    if output_shape[-1] != data.num_classes:
        raise ValueError(
            f"{role.capitalize()} {path!r} outputs {output_shape[-1]} classes, but dataset {data.name!r} has "
            f"{data.num_classes} classes."
        )
    input_shape = tuple(teacher.inputs[0].shape[1:])
    if input_shape != tuple(data.input_shape):
        raise ValueError(
            f"{role.capitalize()} {path!r} takes inputs of shape {input_shape}, but dataset {data.name!r} has "
            f"images of shape {tuple(data.input_shape)}."
        )
    return teacher


def check_logits(teacher, data):
    """Distillation needs logits: refuse a teacher whose outputs are
    probabilities (rows of non-negative values summing to one)."""
    x, _ = data.numpy("test")
    outputs = np.asarray(teacher(x[:16], training=False))
    if np.all(outputs >= 0) and np.allclose(outputs.sum(-1), 1.0, atol=1e-3):
        raise ValueError(
            f"Teacher {teacher.name!r} outputs probabilities (a softmax); distillation compares logits. "
            "Remove the final activation and save the teacher again."
        )


def build_terms(config, teacher, student, num_data=None):
    """`recipes.combined` for `config.method`: the terms (layers from the
    naming convention), the supervised weight and the schedule callbacks
    (DKD's and ReviewKD's warm-up over `config.epochs`)."""
    return recipes.combined(
        config.methods, teacher, student, temperature=config.temperature, epochs=config.epochs, num_data=num_data
    )


def _optimizer(config, steps_per_epoch, epochs):
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(1, steps_per_epoch * epochs))
    return keras.optimizers.Adam(schedule)


def accuracy(model, x, y, batch_size=256):
    return float(np.mean(np.argmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1) == y))


def _history(history):
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def default_output(config):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    method = "+".join(config.methods)
    return str(Path("runs") / f"{config.dataset}-{method}-{stamp}")


class _Run:
    """The run folder and its report, written after every stage."""

    def __init__(self, config):
        self.config = config
        self.folder = Path(config.output or default_output(config))
        self.started = time.time()
        self.report = {
            "status": "running",
            "config": config.to_dict(),
            "versions": report.versions(),
            # Who writes the folder: `overwrite` leaves a folder alone while its run is alive.
            "process": {"host": socket.gethostname(), "pid": os.getpid()},
            "stages": {},
            "models": {},
            "histories": {},
            "files": {},
        }
        self.report["config"]["output"] = str(self.folder)
        claim_folder(self.folder, config.overwrite, self._text())

    def stage(self, number, name, message):
        _log(f"[{number}/5] {name}: {message}")
        return time.time()

    def finish_stage(self, name, start, **details):
        seconds = time.time() - start
        self.report["stages"][name] = {"seconds": round(seconds, 2), **details}
        self.save()
        _log(f"      {name} done in {seconds:.1f}s (elapsed {time.time() - self.started:.1f}s)")

    def add_file(self, key, path):
        """Lists a finished file in the report (call it only once `path` is complete)."""
        self.report["files"][key] = Path(path).name
        return path

    def save_model(self, key, model, name):
        """Saves `model` as `<folder>/<name>` (atomically), then lists it."""
        return self.add_file(key, files.save_model(model, self.folder / name))

    def _text(self):
        self.report["elapsed_seconds"] = round(time.time() - self.started, 2)
        return json.dumps(self.report, indent=2) + "\n"

    def save(self):
        files.write_text(self.folder / "report.json", self._text())


def _alive(process):
    """True when `process` (a report's "process") is a live process on this host."""
    if not isinstance(process, dict) or process.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(process["pid"]), 0)
    except (KeyError, TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _running_in(folder):
    """The pid of a live run writing `folder`, or None."""
    try:
        previous = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(previous, dict) and previous.get("status") == "running" and _alive(previous.get("process")):
        return previous["process"]["pid"]
    return None


def claim_folder(folder, overwrite, first_report):
    """Makes `folder` the run folder of this process, exclusively.

    The claim is the creation of `report.json` with O_EXCL: of two runs
    given the same folder at once, exactly one creates it, and the other
    stops with a FileExistsError. A folder that holds files needs
    `overwrite`; then the previous run is renamed aside in one step (never
    mixed with the new run's files) and deleted once the new run holds the
    folder. A folder whose run is still alive is never taken.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--output {str(folder)!r} is a file; give a folder for the run (new or empty).")
    busy = FileExistsError(f"Output folder {str(folder)!r} is in use by another keras-kd run; choose another --output.")
    replaced = None
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Output folder {str(folder)!r} exists and is not empty; choose another --output "
                "or pass --overwrite."
            )
        pid = _running_in(folder)
        if pid is not None:
            raise FileExistsError(
                f"Output folder {str(folder)!r} is in use by a keras-kd run that is still going (pid {pid}); "
                "--overwrite replaces finished runs only. Choose another --output."
            )
        replaced = folder.with_name(f".{folder.name}.replaced-{secrets.token_hex(4)}")
        try:
            os.rename(folder, replaced)
        except FileNotFoundError:  # another run moved it first
            replaced = None
    folder.mkdir(parents=True, exist_ok=True)
    try:
        files.create_text(folder / "report.json", first_report)
    except FileExistsError:
        raise busy from None
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def _load(config, index=False):
    return datasets.load(
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        augment=config.augment,
        seed=config.seed,
        limit=config.limit,
        index=index,
    )


def run(config):
    """Runs the job for `config` (a `DistillConfig`); returns the report dict.

    A Ctrl-C (KeyboardInterrupt) stops the run: the files of the finished
    stages stay, `report.json` records `status: "interrupted"`, and the
    interrupt propagates.
    """
    keras.utils.set_random_seed(config.seed)
    data = _load(config)
    for split, count in (("training", data.num_train), ("test", data.num_test)):
        if count == 0:
            raise ValueError(
                f"Dataset {data.name!r} ({data.source}) has no {split} examples: there is nothing to "
                f"{'train on' if split == 'training' else 'evaluate on'}."
            )
    if config.teacher.endswith(".keras"):
        teacher = load_teacher(config.teacher, data)
        check_logits(teacher, data)
    else:
        teacher = None
    check_pairs(config, data, teacher)
    keras.utils.set_random_seed(config.seed)  # the check's models drew from the seeded generators
    job = _Run(config)
    job.report["backend"] = backend.name()
    job.report["data"] = {
        "name": data.name,
        "source": data.source,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "num_train": data.num_train,
        "num_test": data.num_test,
    }
    try:
        _stages(config, data, teacher, job)
    except KeyboardInterrupt:
        job.report["status"] = "interrupted"
        job.save()
        _log(f"Interrupted. Finished stages kept in {job.folder}")
        raise
    except Exception as error:
        job.report["status"] = "failed"
        job.report["error"] = f"{type(error).__name__}: {error}"
        job.save()
        raise
    return job.report


def _stages(config, data, teacher, job):
    x_test, y_test = data.numpy("test")
    steps = int(np.ceil(data.num_train / config.batch_size))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    # The pipeline shuffles itself; shuffle=False keeps Keras from warning about it.
    fit = dict(validation_data=data.test, verbose=_keras_verbose(config), shuffle=False)
    folder = job.folder

    start = job.stage(
        1, "teacher", f"{'training ' + config.teacher if teacher is None else 'loading ' + config.teacher}"
    )
    if teacher is None:
        teacher = models.get(config.teacher, data.input_shape, data.num_classes, name="teacher")
        teacher.compile(_optimizer(config, steps, config.teacher_epochs), loss, metrics=["accuracy"])
        job.report["histories"]["teacher"] = _history(
            teacher.fit(data.train, epochs=config.teacher_epochs, callbacks=_progress(config), **fit)
        )
        job.save_model("teacher", teacher, "teacher.keras")
    job.report["models"]["teacher"] = _model_entry(teacher, config.teacher, accuracy(teacher, x_test, y_test))
    job.finish_stage("teacher", start, accuracy=job.report["models"]["teacher"]["accuracy"])

    start = job.stage(2, "scratch student", f"training {config.student} on labels alone ({config.epochs} epochs)")
    keras.utils.set_random_seed(config.seed + 1)  # the distilled student starts from the same weights
    scratch = models.get(config.student, data.input_shape, data.num_classes, name="scratch_student")
    scratch.compile(_optimizer(config, steps, config.epochs), loss, metrics=["accuracy"])
    job.report["histories"]["scratch"] = _history(
        scratch.fit(data.train, epochs=config.epochs, callbacks=_progress(config), **fit)
    )
    job.report["models"]["scratch"] = _model_entry(scratch, config.student, accuracy(scratch, x_test, y_test))
    job.finish_stage("scratch student", start, accuracy=job.report["models"]["scratch"]["accuracy"])

    through = f" through assistant(s) {', '.join(Path(a).name for a in config.assistants)}" if config.assistants else ""
    start = job.stage(3, "distillation", f"{config.method} into {config.student}{through} ({config.epochs} epochs)")
    keras.utils.set_random_seed(config.seed + 1)
    student = models.get(config.student, data.input_shape, data.num_classes, name="student")
    if config.assistants:  # TAKD: the student learns from the last assistant
        teacher = _assistant_stages(config, data, teacher, job, loss, fit)
        start = time.time()
    distiller, schedule, history = _distill(config, data, teacher, student, loss, fit)
    student_loss_weight = distiller.student_loss_weight
    job.report["histories"]["distilled"] = _history(history)
    job.save_model("student", student, "student.keras")
    job.report["models"]["distilled"] = _model_entry(student, config.student, accuracy(student, x_test, y_test))
    warmups = {c.term: f"linear warm-up over epochs 1-{c.epochs} of {config.epochs}" for c in schedule}
    job.report["terms"] = [
        {
            "name": term.name,
            "loss": type(term.loss).__name__,
            "weight": term.weight,
            "teacher_layer": term.teacher_layer,
            "student_layer": term.student_layer,
            "config": json.loads(json.dumps(term.loss.get_config(), default=str)),
            "schedule": warmups.get(term.name, "constant"),
        }
        for term in distiller.terms
    ]
    job.report["student_loss_weight"] = student_loss_weight
    job.finish_stage("distillation", start, accuracy=job.report["models"]["distilled"]["accuracy"])

    if backend.is_tensorflow():
        _export_stage(config, data, student, job, x_test, y_test)
    else:
        reason = f"TFLite export needs the TensorFlow backend of Keras; this run uses {backend.name()!r}"
        _log(f"[4/5] export: skipped ({reason})")
        job.report["stages"]["export"] = {"seconds": 0.0, "skipped": reason}
        job.save()

    start = job.stage(5, "report", "plots, report.json and report.md")
    job.report["status"] = "complete"
    for key, path in report.plot_all(job.report, folder).items():
        job.add_file(key, path)
    job.add_file("config", report.write_config(config, folder / "config.yaml"))
    job.add_file("report_md", report.write_markdown(job.report, folder / "report.md"))
    job.finish_stage("report", start)
    _log("\n" + report.table(job.report))
    _log(f"\nRun folder: {folder}")


def _keras_verbose(config):
    """`fit`'s own verbosity: silent under "auto", whose `StageProgress` line replaces Keras'
    progress bar (about 1 kB of ANSI-coloured redraws per epoch, even into a file)."""
    return 0 if config.verbose == "auto" else config.verbose


def _progress(config):
    """The progress callback of a training stage: one under "auto", none otherwise."""
    return [StageProgress()] if config.verbose == "auto" else []


def _export_stage(config, data, student, job, x_test, y_test):
    """Stage 4: `student.tflite` (quantized as `config.quantize`), which takes
    raw pixels (the dataset's scaling is a Rescaling layer inside it) and
    returns logits, `labels.txt` beside it, and its test accuracy measured on
    raw pixels through the file."""
    start = job.stage(4, "export", f"TFLite ({config.quantize})")
    scale = np.float32(data.pixel_scale)

    def raw(x):  # the stored pixels (integers: digits 0..16, uint8 0..255), as a phone would feed them
        return x if data.pixel_scale == 1 else np.rint(x / scale)

    # The training split is read only for int8 calibration (on CIFAR it is about 600 MB of float32);
    # `to_tflite` calibrates on its first 200 examples.
    representative = raw(data.numpy("train", count=200)[0]) if config.quantize == "int8" else None
    path = export.to_tflite(
        student,
        job.folder / "student.tflite",
        quantize=config.quantize,
        representative_data=representative,
        input_scale=data.pixel_scale,
    )
    job.add_file("tflite", path)
    labels = files.write_text(job.folder / "labels.txt", "".join(f"{name}\n" for name in data.class_names))
    job.add_file("labels", labels)
    contract = export.describe(path)
    # Raw pixels run from 0 to 1 / scale (16 for digits, 255 for uint8); float data is taken as already scaled.
    top = 1.0 if data.pixel_scale == 1 else round(1 / data.pixel_scale)
    job.report["tflite"] = {
        "quantize": config.quantize,
        "bytes": os.path.getsize(path),
        "accuracy": export.evaluate_tflite(path, (raw(x_test), y_test), num_classes=data.num_classes),
        "input": {**contract["input"], "range": [0, top]},
        "output": {**contract["output"], "meaning": "logits"},
        "labels": Path(labels).name,
    }
    job.finish_stage("export", start, bytes=job.report["tflite"]["bytes"])


def check_pairs(config, data, teacher=None):
    """Builds every distillation of the run (teacher -> assistants ->
    student) once on untrained models, so that a method that cannot compare
    a pair (say attention transfer into an MLP) fails with the Distiller's
    message before any training."""
    names = [name for name in config.assistants] + [config.student]
    mentor = teacher if teacher is not None else models.get(config.teacher, data.input_shape, data.num_classes)
    for name in names:
        if name.endswith(".keras"):
            model = load_teacher(name, data, role="assistant")
        else:
            model = models.get(name, data.input_shape, data.num_classes)
        build_terms(config, mentor, model, num_data=data.num_train).distiller(mentor, model)
        mentor = model


def _distill(config, data, teacher, student, loss, fit):
    """Distils `teacher` into `student` with `config.method` (terms, weights,
    schedule and augmentation from `recipes.combined`) for `config.epochs`;
    returns (distiller, schedule callbacks, history)."""
    combination = build_terms(config, teacher, student, num_data=data.num_train)
    distiller = combination.distiller(teacher, student)
    if recipes.needs_pretraining(distiller):  # the whole training split in memory: only when needed
        recipes.pretrain(distiller, data.numpy("train")[0])
    steps = int(np.ceil(data.num_train / config.batch_size))
    distiller.compile(_optimizer(config, steps, config.epochs), loss, metrics=["accuracy"])
    # CRD's memory is indexed by example: the same batches, carrying each example's position.
    train = _load(config, index=True).train if recipes.needs_index(config.methods) else data.train
    callbacks = [*combination.callbacks, *_progress(config)]
    history = distiller.fit(train, epochs=config.epochs, callbacks=callbacks, **fit)
    return distiller, combination.callbacks, history


def _assistant_stages(config, data, teacher, job, loss, fit):
    """The teacher-assistant chain of Mirzadeh et al. (AAAI 2020), as
    `keras_kd.schemes.TeacherAssistant` (`dense=False`): each assistant is
    distilled from the model before it (the teacher first) with the
    student's method, optimizer and epochs, then saved (`assistant<i>.keras`),
    evaluated and reported as a stage of its own. Returns the last
    assistant, the student's teacher."""
    x_test, y_test = data.numpy("test")
    mentor, mentor_key = teacher, "teacher"
    for i, name in enumerate(config.assistants, 1):
        key = f"assistant{i}"
        start = time.time()
        _log(f"      {key}: distilling the {mentor_key} into {Path(name).name} ({config.epochs} epochs)")
        keras.utils.set_random_seed(config.seed + 1 + i)
        if name.endswith(".keras"):  # its architecture and starting weights
            assistant = load_teacher(name, data, role="assistant")
            assistant.trainable = True
        else:
            assistant = models.get(name, data.input_shape, data.num_classes, name=key)
        _, _, history = _distill(config, data, mentor, assistant, loss, fit)
        job.report["histories"][key] = _history(history)
        job.save_model(key, assistant, f"{key}.keras")
        job.report["models"][key] = _model_entry(assistant, name, accuracy(assistant, x_test, y_test))
        job.finish_stage(key, start, teacher=mentor_key, accuracy=job.report["models"][key]["accuracy"])
        mentor, mentor_key = assistant, key
    return mentor


def _model_entry(model, architecture, test_accuracy):
    return {
        "architecture": Path(architecture).name,
        "params": int(model.count_params()),
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "accuracy": test_accuracy,
    }
