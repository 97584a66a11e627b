"""What a run leaves behind: the printed table, `report.md`, the plots and
the config to repeat it. Everything reads the report dict of
`keras_kd.job.run`, so a `report.json` can be re-rendered later."""

import platform
from pathlib import Path

import yaml

from keras_kd import files

ROWS = (("teacher", "teacher"), ("scratch", "scratch student"), ("distilled", "distilled student"))


def versions():
    """Versions of what produced a run."""
    import keras
    import numpy
    import tensorflow

    import keras_kd

    return {
        "keras_kd": keras_kd.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _rows(report):
    models = report.get("models", {})
    # Teacher assistants (`keras-kd distill --assistant`) between the teacher and the students, in chain order.
    assistants = sorted((key for key in models if key.startswith("assistant")), key=lambda key: int(key[9:] or 0))
    for key, label in (ROWS[0], *((key, f"assistant {key[9:]}") for key in assistants), *ROWS[1:]):
        entry = models.get(key)
        if entry:
            yield key, label, entry


def gap_closed(models):
    """(distilled - scratch) / (teacher - scratch): the share of the
    teacher's lead over the scratch student that distillation recovered
    (1 = the teacher's accuracy, 0 = none, negative = worse than scratch).
    None when the teacher is not better than the scratch student."""
    if not all(key in models for key in ("teacher", "scratch", "distilled")):
        return None
    lead = models["teacher"]["accuracy"] - models["scratch"]["accuracy"]
    if lead <= 0:
        return None
    return (models["distilled"]["accuracy"] - models["scratch"]["accuracy"]) / lead


def table(report):
    """A plain-text table: params and test accuracy of each model, the
    distilled student's gain over scratch and its TFLite file."""
    lines = [f"{'model':<22}{'architecture':<18}{'params':>12}{'test accuracy':>16}"]
    for _, label, entry in _rows(report):
        lines.append(f"{label:<22}{entry['architecture']:<18}{entry['params']:>12,}{entry['accuracy']:>16.4f}")
    models = report.get("models", {})
    if "scratch" in models and "distilled" in models:
        gain = 100 * (models["distilled"]["accuracy"] - models["scratch"]["accuracy"])
        lines.append(f"distillation gain over scratch: {gain:+.2f} points")
        closed = gap_closed(models)
        if closed is not None:
            lines.append(f"share of the teacher-scratch gap closed: {closed:.0%}")
    if "tflite" in report:
        tflite = report["tflite"]
        lines.append(
            f"student.tflite ({tflite['quantize']}): {tflite['bytes'] / 1024:.1f} KiB, "
            f"test accuracy {tflite['accuracy']:.4f}"
        )
    return "\n".join(lines)


def write_markdown(report, path):
    config, data = report["config"], report.get("data", {})
    lines = [
        f"# keras_kd run: {config['method']} on {config['dataset']}",
        "",
        f"Status: {report['status']}. Data: {data.get('name')} ({data.get('source')}), "
        f"{data.get('num_train')} train / {data.get('num_test')} test examples, "
        f"{data.get('num_classes')} classes. Seed {config['seed']}, {config['epochs']} epochs "
        f"(teacher {config['teacher_epochs']}), batch {config['batch_size']}, Adam {config['learning_rate']} "
        "with cosine decay."
        + (
            f" The student learned through teacher assistant(s) {config['assistant']} (TAKD: each distilled from "
            "the model before it with the same method and epochs)."
            if config.get("assistant")
            else ""
        ),
        "",
        "| model | architecture | params | test accuracy |",
        "|---|---|---:|---:|",
    ]
    for _, label, entry in _rows(report):
        lines.append(f"| {label} | {entry['architecture']} | {entry['params']:,} | {entry['accuracy']:.4f} |")
    if "tflite" in report:
        tflite = report["tflite"]
        lines.append(
            f"| student.tflite ({tflite['quantize']}) | {tflite['bytes']:,} bytes | | {tflite['accuracy']:.4f} |"
        )
    if report.get("terms"):
        lines += ["", f"Terms (supervised loss weight {report['student_loss_weight']}):", ""]
        for term in report["terms"]:
            layers = (
                f" on {term['teacher_layer']} -> {term['student_layer']}" if term["teacher_layer"] else " on outputs"
            )
            warmup = f", {term['schedule']}" if term.get("schedule", "constant") != "constant" else ""
            lines.append(f"- `{term['name']}`: {term['loss']}, weight {term['weight']}{warmup}{layers}")
    lines += ["", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {name} | {stage['seconds']:.1f} |" for name, stage in report["stages"].items()]
    images = [name for name in report.get("files", {}).values() if name.endswith(".png")]
    lines += [""] + [f"![{name}]({name})" for name in images]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), ""]
    files.write_text(path, "\n".join(lines))
    return path


def write_config(config, path):
    """The run's settings as YAML: `keras-kd distill --config <path>` repeats it."""
    settings = config.to_dict()
    settings.pop("overwrite", None)
    settings.pop("output", None)
    files.write_text(path, yaml.safe_dump(settings, sort_keys=False))
    return path


def plot_all(report, folder):
    """Writes the PNG plots; returns {key: path}."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    folder = Path(folder)
    paths = {}
    if report.get("histories"):
        paths["curves_plot"] = plot_curves(report["histories"], folder / "training_curves.png")
    if report.get("models"):
        paths["size_plot"] = plot_accuracy_vs_size(report, folder / "accuracy_vs_size.png")
    return paths


def plot_curves(histories, path):
    """One panel per logged quantity (every loss term, the supervised loss,
    the total, accuracy); a colour per model, dashed on the test split."""
    import matplotlib.pyplot as plt

    keys = []
    for history in histories.values():
        keys += [k for k in history if not k.startswith("val_") and k not in keys]
    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    colors = dict(zip(histories, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for axis, key in zip(axes.flat, keys):
        for model, history in histories.items():
            for prefix, style in (("", "-"), ("val_", "--")):
                values = history.get(prefix + key)
                if values:
                    epochs = range(1, len(values) + 1)
                    split = "test" if prefix else "train"
                    axis.plot(epochs, values, style, color=colors[model], label=f"{model} {split}")
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
        if "loss" in key and all(v > 0 for h in histories.values() for v in h.get(key, [])):
            axis.set_yscale("log")
    for axis in list(axes.flat)[len(keys) :]:
        axis.axis("off")
    figure.tight_layout()
    _save_figure(figure, path)
    return path


def plot_accuracy_vs_size(report, path):
    """Test accuracy against parameter count (log scale) for each model."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    markers = {"teacher": "s", "scratch": "o", "distilled": "*"}
    for key, label, entry in _rows(report):
        axis.scatter(
            entry["params"],
            100 * entry["accuracy"],
            s=120 if key == "distilled" else 60,
            marker=markers.get(key, "D"),
            label=f"{label} ({entry['architecture']})",
        )
    axis.set_xscale("log")
    axis.set_xlabel("parameters")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{report['config']['method']} on {report['config']['dataset']}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save_figure(figure, path)
    return path


def _save_figure(figure, path):
    """Saves and closes `figure`; the PNG appears whole or not at all."""
    import matplotlib.pyplot as plt

    try:
        with files.atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=100, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(figure)
