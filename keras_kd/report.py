"""What a run leaves behind: the printed table, `report.md`, the plots and
the config to repeat it. Everything reads the report dict of
`keras_kd.job.run`, so a `report.json` can be re-rendered later."""

import math
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
    lines += _tflite_contract(report.get("tflite", {}))
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


def _tensor_text(tensor):
    shape = ", ".join("batch" if i == 0 else ("any" if d == -1 else str(d)) for i, d in enumerate(tensor["shape"]))
    scale, zero_point = tensor.get("quantization", (0.0, 0))
    quantized = f", quantized with scale {scale:g} and zero point {zero_point}" if scale else ""
    return f"`{tensor['dtype']}`, shape ({shape}){quantized}"


def _tflite_contract(tflite):
    """What a program that runs `student.tflite` must feed it and what it gets back."""
    if "input" not in tflite:  # a report from before the contract was recorded
        return []
    source, output = tflite["input"], tflite["output"]
    low, high = source["range"]
    if source.get("scale") in (None, 1, 1.0):
        pixels = f"pixels scaled to [{low:g}, {high:g}] as in training"
    else:
        pixels = (
            f"raw pixels from {low:g} to {high:g}, as the dataset stores them (not divided by anything: a Rescaling "
            f"layer inside the file multiplies them by {source['scale']:g}, as training did)"
        )
    labels = tflite.get("labels", "labels.txt")
    return [
        "",
        "## Using student.tflite",
        "",
        f"- Input: {_tensor_text(source)} (the batch size may vary): {pixels}.",
        (
            f"- Output: {_tensor_text(output)}: {output['meaning']}, one per class. Apply a softmax for "
            f"probabilities; the predicted class is the argmax i, named on line i + 1 of `{labels}` (one class "
            "name per line)."
        ),
        (
            f"- Test accuracy {tflite['accuracy']:.4f}, measured in the LiteRT interpreter on raw inputs as above "
            f"(quantization: {tflite['quantize']})."
        ),
    ]


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


SUPERVISED = ("loss", "student_loss", "accuracy")


def _model_label(key):
    labels = dict(ROWS)
    if key.startswith("assistant"):
        return f"assistant {key[9:]}"
    return labels.get(key, key)


def _color(key):
    """The same colour for a model in every plot: teacher, scratch, distilled, then the assistants."""
    if key.startswith("assistant"):
        return f"C{2 + int(key[9:] or 1)}"  # assistant1 -> C3
    return {"teacher": "C0", "scratch": "C1", "distilled": "C2"}.get(key, "C7")


def _curve_panels(histories):
    """[(title, y label, [(model, history key)])]: like with like.

    A distilled model's (or assistant's) `loss` is its weighted total, with
    T^2-scaled terms, so its cross-entropy is `student_loss`; a model trained
    on labels alone logs its cross-entropy as `loss`. Each distillation term is
    logged before its weight and goes to a panel of its own kind."""
    cross_entropy, terms, accuracy, other = [], [], [], {}
    for model, history in histories.items():
        distilled = "student_loss" in history
        cross_entropy.append((model, "student_loss" if distilled else "loss"))
        if "accuracy" in history:
            accuracy.append((model, "accuracy"))
        for key in history:
            if key.startswith("val_") or key in SUPERVISED:
                continue
            if distilled:
                terms.append((model, key))
            else:
                other.setdefault(key, []).append((model, key))
    panels = [("cross-entropy on the labels", "cross-entropy (nats)", cross_entropy)]
    if terms:
        panels.append(("distillation terms (before weighting)", "term value", terms))
    if accuracy:
        panels.append(("accuracy", "accuracy (%)", accuracy))
    panels += [(key, key, curves) for key, curves in other.items()]
    return [panel for panel in panels if any(histories[m].get(k) for m, k in panel[2])]


def plot_curves(histories, path):
    """Training curves: the cross-entropy of every model in one panel (the
    distilled student's supervised loss, not its weighted total), the
    distillation terms in their own panel, accuracy in a third; solid on the
    training split, dashed on the test split. Legends sit outside the axes."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    panels = _curve_panels(histories)
    columns = min(3, len(panels)) or 1
    rows = -(-len(panels) // columns) or 1
    figure = plt.figure(figsize=(4.6 * columns, 3.4 * rows + 0.9), layout="constrained")
    model_colors = {model: _color(model) for model in histories}
    term_colors = iter(plt.get_cmap("Dark2").colors)
    for number, (title, ylabel, curves) in enumerate(panels, 1):
        axis = figure.add_subplot(rows, columns, number)
        several = len({model for model, _ in curves}) > 1
        handles = []
        for model, key in curves:
            is_term = "term" in title
            color = next(term_colors) if is_term else model_colors[model]
            for prefix, style in (("", "-"), ("val_", "--")):
                values = histories[model].get(prefix + key)
                if values:
                    values = [100 * v for v in values] if key == "accuracy" else values
                    # A one-epoch run has one point per curve: a marker keeps it visible.
                    marker = "o" if len(values) == 1 else None
                    axis.plot(range(1, len(values) + 1), values, style, color=color, marker=marker)
            if is_term:
                name = f"{_model_label(model)}: {key}" if several else key
                handles.append(Line2D([], [], color=color, label=name))
        values = [v for model, key in curves for p in ("", "val_") for v in histories[model].get(p + key, [])]
        if title != "accuracy" and values and min(values) > 0 and max(values) / min(values) > 20:
            axis.set_yscale("log")  # losses that fall by orders of magnitude
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if handles:  # the terms' own legend, under their panel
            axis.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    # One legend for every panel: a colour per model, the line style per split.
    shown = [model for model in histories if any(model == m and "term" not in t for t, _, c in panels for m, _ in c)]
    handles = [Line2D([], [], color=model_colors[model], label=_model_label(model)) for model in shown]
    handles += [
        Line2D([], [], color="grey", linestyle="-", label="train"),
        Line2D([], [], color="grey", linestyle="--", label="test"),
    ]
    figure.legend(handles=handles, loc="outside upper center", ncol=len(handles), frameon=False)
    # Training metrics are running means over the epoch's batches as the model saw them (augmented or mixed),
    # which is why a distilled student trained on mixed images can score lower on "train" than on "test".
    figure.supxlabel(
        "train: mean over each epoch's training batches, as augmented; test: the test split after each epoch",
        fontsize=8,
        color="dimgrey",
    )
    _save_figure(figure, path)
    return path


def plot_accuracy_vs_size(report, path):
    """Test accuracy against parameter count (log axis, ticks written out
    with thousands separators) for each model; an arrow from the scratch
    to the distilled student shows what distillation changed."""
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axis = plt.subplots(figsize=(6, 4.6), layout="constrained")
    markers = {"teacher": "s", "scratch": "o", "distilled": "*"}
    points = {}
    for key, label, entry in _rows(report):
        x, y = entry["params"], 100 * entry["accuracy"]
        points[key] = (x, y)
        color = _color(key)
        # The scratch student's circle is hollow: the distilled student's star, at the same size, shows inside it.
        fill = {"facecolors": "none", "edgecolors": color, "linewidths": 1.5} if key == "scratch" else {"color": color}
        axis.scatter(
            x,
            y,
            s={"distilled": 160, "scratch": 130}.get(key, 70),
            marker=markers.get(key, "D"),
            label=f"{label} ({entry['architecture']}, {entry['params']:,} parameters)",
            zorder=3,
            **fill,
        )
    if "scratch" in points and "distilled" in points and points["scratch"] != points["distilled"]:
        (x, start), (_, end) = points["scratch"], points["distilled"]
        axis.annotate("", (x, end), (x, start), arrowprops={"arrowstyle": "->", "color": "grey"}, zorder=2)
        axis.annotate(f"{end - start:+.2f} points", (x, (start + end) / 2), xytext=(10, 0),
                      textcoords="offset points", va="center", fontsize=8, color="dimgrey")
    xs = [x for x, _ in points.values()]
    ys = [y for _, y in points.values()]
    # A factor of 2 on each side of a log axis and 15% of the span (at least 1 point) keep every marker inside.
    axis.set_xscale("log")
    axis.set_xlim(min(xs) / 2, max(xs) * 2)
    decades = math.log10(max(xs) / min(xs)) + 2 * math.log10(2)
    pad = max(0.15 * (max(ys) - min(ys)), 1.0)
    axis.set_ylim(min(ys) - pad, min(max(ys) + pad, 100 + pad / 2))
    # 1-2-5 ticks over a narrow range; over more than 2.5 decades their labels would collide.
    axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_xlabel("parameters (log scale)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(f"{report['config']['method']} on {report['config']['dataset']}")
    axis.grid(alpha=0.3, which="both")
    figure.legend(fontsize=8, loc="outside lower center", frameon=False)
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
