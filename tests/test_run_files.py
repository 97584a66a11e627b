"""Reliability of the job and the `keras-kd` command (issue 15): files are
written whole or not at all, the report lists only complete files, the run
folder is claimed exclusively, and bad input is one line (exit 2) while bugs
keep their traceback."""

import json
import threading
import zipfile

import keras
import numpy as np
import pytest

import keras_kd
from keras_kd import backend, cli, files, job, report
from tests.faults import disk_full, leftovers

TINY = ["--epochs", "1", "--limit", "120", "--verbose", "0"]


def distill(output, *args):
    return cli.main(["distill", *TINY, "--output", str(output), *args])


def read_report(folder):
    return json.loads((folder / "report.json").read_text())


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _report_dict():
    config = job.DistillConfig(epochs=1)
    entry = {"architecture": "mlp_small", "params": 10, "accuracy": 0.5}
    return {
        "status": "complete",
        "config": config.to_dict(),
        "versions": {"keras": keras.__version__},
        "stages": {"teacher": {"seconds": 1.0}},
        "models": {"teacher": entry, "scratch": entry, "distilled": entry},
        "histories": {"teacher": {"loss": [1.0, 0.5]}},
        "files": {},
    }


def _write_run_report(folder):
    run = job._Run.__new__(job._Run)  # the report writer alone, without claiming a folder
    run.folder, run.started, run.report = folder, 0.0, _report_dict()
    run.save()


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(64)])


WRITERS = {
    "report.json": ("report.json", _write_run_report),
    "report.md": ("report.md", lambda folder: report.write_markdown(_report_dict(), folder / "report.md")),
    "config.yaml": ("config.yaml", lambda folder: report.write_config(job.DistillConfig(), folder / "config.yaml")),
    "plot": ("curves.png", lambda folder: report.plot_curves({"teacher": {"loss": [1.0]}}, folder / "curves.png")),
    "model": ("m.keras", lambda folder: files.save_model(_model(), folder / "m.keras")),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_full_disk_keeps_the_previous_file(tmp_path, writer):
    name, write = WRITERS[writer]
    (tmp_path / name).write_bytes(b"the previous, complete file")
    with disk_full(200), pytest.raises(OSError, match="File too large"):
        write(tmp_path)
    assert (tmp_path / name).read_bytes() == b"the previous, complete file"
    assert leftovers(tmp_path) == []
    write(tmp_path)  # with room, the new file replaces it
    assert (tmp_path / name).read_bytes() != b"the previous, complete file"


def test_ctrl_c_while_saving_the_teacher_leaves_no_file(tmp_path, monkeypatch, capsys):
    from keras.src.saving import saving_lib

    def interrupted(*args, **kwargs):  # the archive's header is written, the weights are not
        raise KeyboardInterrupt

    monkeypatch.setattr(saving_lib, "_save_state", interrupted)
    assert distill(tmp_path / "run") == 130
    folder = tmp_path / "run"
    assert sorted(path.name for path in folder.iterdir()) == ["report.json"]
    saved = read_report(folder)
    assert saved["status"] == "interrupted" and saved["files"] == {}


def test_ctrl_c_during_export_lists_no_tflite(tmp_path, monkeypatch):
    def interrupted(model, path, **kwargs):
        with files.atomic_path(path) as temporary:
            temporary.write_bytes(b"half a flatbuffer")
            raise KeyboardInterrupt

    monkeypatch.setattr(keras_kd.export, "to_tflite", interrupted)
    folder = tmp_path / "run"
    assert distill(folder) == 130
    saved = read_report(folder)
    assert saved["status"] == "interrupted" and "export" not in saved["stages"]
    assert set(saved["files"]) == {"teacher", "student"}  # complete files only
    assert not (folder / "student.tflite").exists() and leftovers(folder) == []


def test_run_folder_is_claimed_by_exactly_one_run(tmp_path):
    config = job.DistillConfig(epochs=1, output=str(tmp_path / "shared"))
    start, outcomes = threading.Barrier(6), []

    def claim():
        start.wait()
        try:
            job._Run(config)
            outcomes.append("won")
        except FileExistsError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1, outcomes
    assert read_report(tmp_path / "shared")["status"] == "running"


def test_second_run_on_a_folder_in_use_stops(tmp_path, capsys):
    folder = tmp_path / "shared"
    job._Run(job.DistillConfig(epochs=1, output=str(folder)))  # a run that has just started (this process, alive)
    assert distill(folder) == 2
    one_line_error(capsys, "exists and is not empty")
    assert distill(folder, "--overwrite") == 2  # --overwrite never takes a live run's folder
    one_line_error(capsys, "still going")
    assert sorted(path.name for path in folder.iterdir()) == ["report.json"]


def test_overwrite_leaves_nothing_of_the_previous_run(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.md").write_text("Status: complete.")
    (folder / "teacher.keras").write_bytes(b"old")
    (folder / "report.json").write_text(json.dumps({"status": "complete"}))

    def failing(config, data, teacher, run):
        raise ValueError("the new run failed")

    monkeypatch.setattr(job, "_stages", failing)
    assert distill(folder, "--overwrite") == 2
    one_line_error(capsys, "the new run failed")
    assert sorted(path.name for path in folder.iterdir()) == ["report.json"]
    assert read_report(folder)["status"] == "failed"
    assert [path.name for path in tmp_path.iterdir()] == ["run"]  # the previous run, moved aside, is deleted


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"learning_rate": float("inf")}, "learning_rate=inf"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"epochs": float("nan")}, "epochs=nan"),
        ({"limit": float("inf")}, "limit=inf"),
        ({"seed": 1.5}, "seed=1.5"),
    ],
)
def test_non_finite_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        job.DistillConfig(**settings)


def test_non_finite_values_from_the_command_and_a_config_file(tmp_path, capsys):
    assert distill(tmp_path / "a", "--learning-rate", "inf") == 2
    one_line_error(capsys, "learning_rate=inf")
    config = tmp_path / "run.yaml"
    config.write_text("epochs: .nan\n")
    assert cli.main(["distill", "--config", str(config), "--output", str(tmp_path / "b")]) == 2
    one_line_error(capsys, "epochs=nan")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _npz(folder, name, train=32, test=16, size=8, classes=10):
    rng = np.random.default_rng(0)
    np.savez(
        folder / f"{name}.npz",
        x_train=rng.integers(0, 255, (train, size, size), dtype=np.uint8),
        y_train=(np.arange(train) % classes).astype("int32"),
        x_test=rng.integers(0, 255, (test, size, size), dtype=np.uint8),
        y_test=(np.arange(test) % classes).astype("int32"),
    )
    return folder / f"{name}.npz"


def test_corrupt_npz_is_one_line(tmp_path, capsys):
    whole = _npz(tmp_path, "good").read_bytes()
    (tmp_path / "corrupt.npz").write_bytes(whole[: len(whole) // 2])
    assert distill(tmp_path / "run", "--dataset", "corrupt", "--data-dir", str(tmp_path)) == 2
    one_line_error(capsys, "corrupt.npz is not a valid .npz file")


def test_unparsable_yaml_is_one_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("epochs: [1\nmethod: kd\n")
    assert cli.main(["distill", "--config", str(config)]) == 2
    one_line_error(capsys, "broken.yaml", "is not valid YAML")


def test_output_naming_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    assert distill(tmp_path / "a_file") == 2
    one_line_error(capsys, "a_file", "is a file")
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_empty_training_split_is_refused(tmp_path, capsys):
    _npz(tmp_path, "empty", train=0)
    assert distill(tmp_path / "run", "--dataset", "empty", "--data-dir", str(tmp_path)) == 2
    one_line_error(capsys, "has no training examples")
    assert not (tmp_path / "run").exists()


def test_truncated_keras_file_is_not_called_missing(tmp_path, capsys):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "whole.keras")
    data = (tmp_path / "whole.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    assert not zipfile.is_zipfile(tmp_path / "cut.keras")
    with pytest.raises(ValueError, match="cut.keras.*not a valid Keras file"):
        job.load_model(str(tmp_path / "cut.keras"))
    assert cli.main(["evaluate", str(tmp_path / "cut.keras"), "--dataset", "digits"]) == 2
    one_line_error(capsys, "not a valid Keras file")
    assert distill(tmp_path / "run", "--teacher", str(tmp_path / "cut.keras")) == 2
    one_line_error(capsys, "Could not load the teacher", "not a valid Keras file")


def test_tflite_evaluate_on_other_data_is_one_line(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = keras_kd.export.to_tflite(model, tmp_path / "m.tflite")
    data = tmp_path / "data"
    data.mkdir()
    _npz(data, "big", size=28)
    _npz(data, "three", classes=3)
    evaluate = ["evaluate", path, "--data-dir", str(data), "--dataset"]
    assert cli.main([*evaluate, "big"]) == 2
    one_line_error(capsys, "takes inputs of shape (8, 8, 1)", "(28, 28, 1)")
    assert cli.main([*evaluate, "three"]) == 2
    one_line_error(capsys, "outputs 10 classes", "3 classes")
    assert cli.main([*evaluate, "digits"]) == 0


def test_non_finite_loss_is_one_line_but_bugs_keep_their_traceback(tmp_path, monkeypatch, capsys):
    def fail_with(error):
        def run(config):
            raise error

        monkeypatch.setattr(job, "run", run)

    fail_with(FloatingPointError("Non-finite kd_loss (nan) at epoch 1, batch 3."))
    assert distill(tmp_path / "a") == 2
    one_line_error(capsys, "Non-finite kd_loss")
    for bug in (TypeError("unsupported operand"), RuntimeError("a bug deep inside"), AttributeError("x")):
        fail_with(bug)
        with pytest.raises(type(bug)):
            distill(tmp_path / "a")
    # keras_kd's own RuntimeError for a feature the backend lacks stays one line.
    monkeypatch.setattr(backend, "is_tensorflow", lambda: False)
    assert cli.main(["export", str(tmp_path / "m.keras")]) == 2
    one_line_error(capsys, "needs the TensorFlow backend")


# --------------------------------------------------------------------------- plots (issue 16)

HISTORIES = {
    "teacher": {"loss": [0.5, 0.1], "accuracy": [0.8, 0.99], "val_loss": [0.3, 0.2], "val_accuracy": [0.9, 0.97]},
    "scratch": {"loss": [1.9, 0.6], "accuracy": [0.5, 0.9], "val_loss": [1.4, 0.6], "val_accuracy": [0.7, 0.9]},
    "distilled": {  # `loss` is the weighted total with T^2-scaled terms, not comparable with a cross-entropy
        "loss": [40.0, 20.0],
        "student_loss": [1.7, 0.5],
        "kd_loss": [30.0, 15.0],
        "at_loss": [0.02, 0.01],
        "accuracy": [0.5, 0.92],
        "val_loss": [35.0, 18.0],
        "val_student_loss": [1.3, 0.55],
        "val_kd_loss": [25.0, 14.0],
        "val_at_loss": [0.02, 0.01],
        "val_accuracy": [0.7, 0.91],
    },
}


def _drawn_figure(monkeypatch, draw):
    """The figure `draw` makes, drawn, instead of saved."""
    figures = []
    monkeypatch.setattr(report, "_save_figure", lambda figure, path: figures.append(figure))
    draw()
    (figure,) = figures
    figure.canvas.draw()
    return figure


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_curves_compare_like_with_like_and_label_every_axis(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    figure = _drawn_figure(monkeypatch, lambda: report.plot_all({"histories": HISTORIES}, tmp_path))
    try:
        cross_entropy, terms, accuracy = figure.axes  # no empty panel
        assert cross_entropy.get_title().startswith("cross-entropy") and terms.get_title().startswith("distillation")
        curves = {axis: [list(line.get_ydata()) for line in axis.lines] for axis in figure.axes}
        # The distilled student's supervised cross-entropy beside the others', not its weighted total.
        assert [1.7, 0.5] in curves[cross_entropy] and [0.5, 0.1] in curves[cross_entropy]
        assert [40.0, 20.0] not in curves[cross_entropy] and len(curves[cross_entropy]) == 6
        assert [30.0, 15.0] in curves[terms] and [0.02, 0.01] in curves[terms] and len(curves[terms]) == 4
        assert [92.0, 92.0] not in curves[accuracy] and [50.0, 92.0] in curves[accuracy]  # in percent
        assert terms.get_yscale() == "log"  # terms three orders of magnitude apart
        for axis in figure.axes:
            assert axis.get_xlabel() == "epoch" and axis.get_ylabel()
        # Legends sit outside every panel: the models' above them all, the terms' under their panel.
        boxes = [axis.get_window_extent() for axis in figure.axes]
        legends = [*figure.legends, terms.get_legend()]
        assert cross_entropy.get_legend() is None and accuracy.get_legend() is None
        for legend in legends:
            assert not any(_overlap(legend.get_window_extent(), box) for box in boxes)
        assert {text.get_text() for text in terms.get_legend().get_texts()} == {"kd_loss", "at_loss"}
    finally:
        plt.close(figure)


def test_one_epoch_curves_are_visible(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    figure = _drawn_figure(monkeypatch, lambda: report.plot_curves({"teacher": {"loss": [1.0]}}, tmp_path / "c.png"))
    try:
        (axis,) = figure.axes
        assert [line.get_marker() for line in axis.lines] == ["o"]
    finally:
        plt.close(figure)


def test_size_plot_keeps_every_point_inside_and_writes_sizes_out(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    run = _report_dict()
    run["models"] = {
        "teacher": {"architecture": "cnn_large", "params": 94_634, "accuracy": 0.984},
        "scratch": {"architecture": "mlp_small", "params": 4_810, "accuracy": 0.9717},
        "distilled": {"architecture": "mlp_small", "params": 4_810, "accuracy": 0.9791},
    }
    figure = _drawn_figure(monkeypatch, lambda: report.plot_accuracy_vs_size(run, tmp_path / "s.png"))
    try:
        (axis,) = figure.axes
        frame = axis.get_window_extent()
        for points in axis.collections:
            for x, y in points.get_offsets():
                # The marker's centre and its whole extent (it is up to about 14 pixels wide) lie inside the frame.
                px, py = axis.transData.transform((x, y))
                assert frame.x0 + 10 < px < frame.x1 - 10 and frame.y0 + 10 < py < frame.y1 - 10, (x, y)
        labels = [label.get_text() for label in axis.get_xticklabels() if label.get_text()]
        assert "10,000" in labels and all("^" not in label for label in labels), labels
        assert "parameters" in axis.get_xlabel() and axis.get_ylabel() == "test accuracy (%)"
        assert not any(_overlap(legend.get_window_extent(), frame) for legend in figure.legends)
    finally:
        plt.close(figure)
