"""The `keras-kd` command: every subcommand and option on tiny runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds
import yaml

import keras_kd
from keras_kd import cli, job, models, recipes
from keras_kd.datasets import tfds as tfds_source
from keras_kd.datasets.data import CLASS_NAMES

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = ["--epochs", "1", "--limit", "120", "--verbose", "0"]
RUN_FILES = {
    "report.json",
    "report.md",
    "config.yaml",
    "teacher.keras",
    "student.keras",
    "student.tflite",
    "labels.txt",
    "training_curves.png",
    "accuracy_vs_size.png",
}


def distill(tmp_path, *args, name="run"):
    output = tmp_path / name
    status = cli.main(["distill", *TINY, "--output", str(output), *args])
    return status, output


def read_report(folder):
    return json.loads((folder / "report.json").read_text())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One complete default-setting job (tiny budget) shared by the tests."""
    status, folder = distill(tmp_path_factory.mktemp("runs"))
    assert status == 0
    return folder


def test_default_distill_writes_the_run_folder(finished_run, capsys):
    assert RUN_FILES <= {path.name for path in finished_run.iterdir()}
    report = read_report(finished_run)
    assert report["status"] == "complete"
    assert set(report["models"]) == {"teacher", "scratch", "distilled"}
    assert report["models"]["scratch"]["params"] == report["models"]["distilled"]["params"]
    assert report["models"]["teacher"]["params"] > report["models"]["distilled"]["params"]
    for entry in report["models"].values():
        assert 0.0 <= entry["accuracy"] <= 1.0
    # digits' default: function matching (KL at T=1 on a shared mixup view; logged as kd_loss).
    assert report["config"]["dataset"] == "digits" and report["config"]["method"] == "function_matching"
    assert report["versions"]["keras"] == keras.__version__
    assert report["tflite"]["bytes"] == (finished_run / "student.tflite").stat().st_size
    # The float TFLite file predicts what the Keras student predicts.
    assert report["tflite"]["accuracy"] == pytest.approx(report["models"]["distilled"]["accuracy"], abs=1e-9)
    assert set(report["stages"]) == {"teacher", "scratch student", "distillation", "export", "report"}
    assert {"kd_loss", "student_loss", "loss", "val_kd_loss"} <= set(report["histories"]["distilled"])
    for png in ("training_curves.png", "accuracy_vs_size.png"):
        assert (finished_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (finished_run / "report.md").read_text()
    assert "distilled student" in markdown and "training_curves.png" in markdown


def test_student_tflite_takes_raw_pixels_and_returns_logits(finished_run):
    """The contract of issue 16: a phone feeds raw digits pixels (0..16), as scikit-learn stores them."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    report = read_report(finished_run)
    digits = load_digits()  # the job's split (seed 0, --limit 120), made here from the raw integers
    _, pixels, _, labels = train_test_split(
        digits.images[..., None], digits.target, test_size=0.5, stratify=digits.target, random_state=0
    )
    pixels, labels = pixels[:120].astype("float32"), labels[:120]
    assert pixels.max() == 16 and np.all(pixels == np.round(pixels))
    path = finished_run / "student.tflite"
    assert keras_kd.export.evaluate_tflite(path, (pixels, labels)) == pytest.approx(report["tflite"]["accuracy"])
    student = keras.saving.load_model(finished_run / "student.keras")
    np.testing.assert_allclose(
        keras_kd.export.predict_tflite(path, pixels), student.predict(pixels / 16, verbose=0), atol=1e-4
    )  # logits: the Keras student's outputs, no softmax
    contract = report["tflite"]
    assert contract["input"]["dtype"] == "float32" and contract["input"]["shape"] == [-1, 8, 8, 1]
    assert contract["input"]["range"] == [0, 16] and contract["input"]["scale"] == 1 / 16
    assert contract["output"]["shape"] == [-1, 10] and contract["output"]["meaning"] == "logits"


def test_labels_file_names_the_classes_in_order(finished_run):
    assert (finished_run / "labels.txt").read_text() == "".join(f"{i}\n" for i in range(10))
    assert read_report(finished_run)["files"]["labels"] == "labels.txt"


def test_report_states_the_tflite_contract(finished_run):
    markdown = (finished_run / "report.md").read_text()
    section = markdown[markdown.index("## Using student.tflite") :]
    for fragment in ("`float32`", "(batch, 8, 8, 1)", "raw pixels from 0 to 16", "logits", "softmax", "labels.txt"):
        assert fragment in section, fragment


def test_distill_prints_stages_and_table(tmp_path, capsys):
    status, _ = distill(tmp_path)
    out = capsys.readouterr().out
    assert status == 0
    for stage in ("[1/5] teacher", "[2/5] scratch student", "[3/5] distillation", "[4/5] export", "[5/5] report"):
        assert stage in out
    assert "distilled student" in out and "test accuracy" in out and "elapsed" in out


def test_student_file_is_a_plain_keras_model(finished_run):
    student = keras.saving.load_model(finished_run / "student.keras")
    assert student.output_shape == (None, 10)
    assert not any("distiller" in layer.name for layer in student.layers)


def test_config_file_repeats_a_run_and_flags_override_it(finished_run, tmp_path):
    saved = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert saved["dataset"] == "digits" and saved["epochs"] == 1 and saved["limit"] == 120
    config = job.DistillConfig.from_file(finished_run / "config.yaml", seed=7)
    assert config.seed == 7 and config.teacher == saved["teacher"] and config.limit == 120
    json_file = tmp_path / "run.json"
    json_file.write_text(json.dumps({"method": "kd+at", "teacher-epochs": 2, "limit": 64}))
    config = job.DistillConfig.from_file(json_file)
    assert config.methods == ["kd", "at"] and config.teacher_epochs == 2


def test_distill_from_config_file(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"epochs": 1, "limit": 100, "verbose": 0, "method": "logit_mse"}))
    output = tmp_path / "from_config"
    assert cli.main(["distill", "--config", str(config_file), "--output", str(output), "--seed", "3"]) == 0
    report = read_report(output)
    assert report["config"]["method"] == "logit_mse" and report["config"]["seed"] == 3
    assert [term["loss"] for term in report["terms"]] == ["LogitMSELoss"]


def test_every_distill_option(finished_run, tmp_path):
    status, output = distill(
        tmp_path,
        "--teacher", str(finished_run / "teacher.keras"),
        "--student", "cnn_small",
        "--method", "kd+at",
        "--temperature", "2",
        "--batch-size", "16",
        "--learning-rate", "0.001",
        "--teacher-epochs", "1",
        "--seed", "5",
        "--augment",
        "--quantize", "int8",
    )  # fmt: skip
    assert status == 0
    report = read_report(output)
    config = report["config"]
    assert (config["student"], config["batch_size"], config["learning_rate"], config["seed"]) == (
        "cnn_small",
        16,
        0.001,
        5,
    )
    assert config["augment"] is True and report["tflite"]["quantize"] == "int8"
    assert "teacher" not in report["histories"]  # loaded, not trained
    assert not (output / "teacher.keras").exists()
    losses = [term["loss"] for term in report["terms"]]
    assert losses[0] == "KDLoss" and set(losses[1:]) == {"AttentionTransferLoss"}
    assert report["terms"][0]["config"]["temperature"] == 2.0
    assert len(losses) == 1 + len(models.feature_layers(models.get("cnn_small", (8, 8, 1), 10))["stages"])
    # recipes.combined: RepDistiller's KD combination (-r 1 -a 1), AT at its -b 1000.
    assert report["student_loss_weight"] == recipes.student_loss_weight("kd+at") == 1.0
    assert [term["weight"] for term in report["terms"]] == [1.0] + [1000.0] * (len(losses) - 1)
    assert {term["schedule"] for term in report["terms"]} == {"constant"}
    student = keras.saving.load_model(output / "student.keras")
    assert student.name == "student"
    assert report["models"]["teacher"]["architecture"] == "teacher.keras"


@pytest.mark.skipif(not (SHARED_DATA / "mnist.npz").exists(), reason="../shared/data/mnist.npz is not here")
def test_distill_mnist_from_data_dir(tmp_path):
    status, output = distill(
        tmp_path,
        "--dataset",
        "mnist",
        "--data-dir",
        str(SHARED_DATA),
        "--teacher",
        "mlp_small",
        "--student",
        "mlp_tiny",
    )
    assert status == 0
    report = read_report(output)
    assert report["data"]["input_shape"] == [28, 28, 1] and report["data"]["source"].startswith("local:")
    # uint8 images: student.tflite takes 0..255 and divides by 255 itself.
    assert report["tflite"]["input"]["range"] == [0, 255] and report["tflite"]["input"]["scale"] == 1 / 255


def test_distill_a_tfds_dataset(tmp_path, monkeypatch):
    """The real tensorflow-datasets code path, offline, on mock data."""
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: True)  # the mock makes the download a no-op
    with tfds.testing.mock_data(num_examples=48):
        status, output = distill(tmp_path, "--dataset", "cifar10", "--teacher", "cnn_tiny", "--student", "cnn_tiny")
    assert status == 0
    report = read_report(output)
    assert report["data"]["source"] == "tfds" and report["data"]["input_shape"] == [32, 32, 3]
    assert (output / "labels.txt").read_text().splitlines() == CLASS_NAMES["cifar10"]
    assert report["tflite"]["input"]["range"] == [0, 255]


def test_offline_without_data_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    monkeypatch.setattr(tfds_source, "_network_reachable", lambda: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    assert distill(tmp_path, "--dataset", "kmnist")[0] == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "KERAS_KD_DATA_DIR" in err and "Traceback" not in err


def test_evaluate_keras_and_tflite(finished_run, capsys):
    accuracy = read_report(finished_run)["models"]["distilled"]["accuracy"]
    for name in ("student.keras", "student.tflite"):
        assert cli.main(["evaluate", str(finished_run / name), "--dataset", "digits", "--limit", "120"]) == 0
        assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize("quantize", ["none", "float16", "dynamic", "int8"])
def test_export_each_quantization(finished_run, tmp_path, quantize, capsys):
    output = tmp_path / f"student_{quantize}.tflite"
    args = ["export", str(finished_run / "student.keras"), "--quantize", quantize, "--output", str(output)]
    assert cli.main([*args, "--dataset", "digits", "--limit", "120"]) == 0
    assert output.stat().st_size > 0
    assert "TFLite test accuracy" in capsys.readouterr().out


def test_export_int8_needs_data(finished_run, tmp_path, capsys):
    assert cli.main(["export", str(finished_run / "student.keras"), "--quantize", "int8"]) == 2
    assert "--dataset" in capsys.readouterr().err


def test_methods_and_models_list_everything(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in recipes.names():
        assert f"\n{name} " in "\n" + out
    assert "Hinton et al." in out and "temperature=4.0" in out
    for name in recipes.scheme_names():
        assert f"\n{name} " in "\n" + out
    assert "Filter Grafting" in out and "a=0.4, c=500.0" in out and "threshold=0.3" in out
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in models.names())


def test_methods_show_each_schedule(capsys):
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out.split("\ntraining schemes")[0]
    schedules, method = {}, None
    for line in out.splitlines():  # a method's first line starts with its name, the rest are indented
        if line and not line[0].isspace():
            method = line.split()[0]
        elif "schedule: " in line:
            schedules[method] = line.split("schedule: ", 1)[1]
    warm = "linear warm-up over the first 8.3% of epochs (20 of 240 in the paper), then constant"
    assert schedules == {name: warm if name in ("dkd", "reviewkd") else "constant" for name in recipes.names()}
    assert "combined with other methods (e.g. kd+at): weight 1.0, supervised weight 1.0" in out


def test_distill_applies_and_records_the_dkd_warm_up(tmp_path):
    # 18 epochs: DKD's 20 of 240 is 1.5, rounded up to 2 warm-up epochs.
    status, output = distill(
        tmp_path, "--method", "dkd+at", "--student", "cnn_small", "--epochs", "18", "--teacher-epochs", "1"
    )
    assert status == 0
    report = read_report(output)
    schedules = {term["name"]: term["schedule"] for term in report["terms"]}
    assert schedules.pop("dkd_loss") == "linear warm-up over epochs 1-2 of 18"
    assert set(schedules.values()) == {"constant"}
    assert report["histories"]["distilled"]["dkd_loss_weight"] == [0.5] + [1.0] * 17
    assert "linear warm-up over epochs 1-2 of 18" in (output / "report.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "not_a_dataset_xyz"], "digits"),
        (["--method", "kd+nope"], "Available methods"),
        (["--student", "resnet9000"], "Available models"),
        (["--teacher", "resnet9000"], "Available models"),
        (["--epochs", "0"], "epochs"),
        (["--teacher", "missing_teacher.keras"], "missing_teacher.keras"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    status, _ = distill(tmp_path, *args)
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_teacher_that_does_not_load(tmp_path, capsys):
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a keras file")
    assert distill(tmp_path, "--teacher", str(broken))[0] == 2
    err = capsys.readouterr().err
    assert "Could not load the teacher" in err and "broken.keras" in err


def test_teacher_with_wrong_classes_or_softmax(tmp_path, capsys):
    wrong = models.get("mlp_tiny", (8, 8, 1), 3)
    wrong.save(tmp_path / "three.keras")
    assert distill(tmp_path, "--teacher", str(tmp_path / "three.keras"))[0] == 2
    assert "outputs 3 classes" in capsys.readouterr().err
    inputs = keras.Input((8, 8, 1))
    softmax = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    softmax.save(tmp_path / "softmax.keras")
    assert distill(tmp_path, "--teacher", str(tmp_path / "softmax.keras"))[0] == 2
    assert "probabilities" in capsys.readouterr().err


def test_existing_output_needs_overwrite(finished_run, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    assert cli.main(["distill", *TINY, "--output", str(copy)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert read_report(copy)["status"] == "complete"  # untouched
    assert cli.main(["distill", *TINY, "--output", str(copy), "--overwrite", "--seed", "1"]) == 0
    assert read_report(copy)["config"]["seed"] == 1


def test_ctrl_c_keeps_finished_stages(tmp_path, monkeypatch, capsys):
    def interrupted_fit(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(keras_kd.Distiller, "fit", interrupted_fit)
    status, output = distill(tmp_path)
    assert status == 130
    report = read_report(output)
    assert report["status"] == "interrupted"
    assert set(report["stages"]) == {"teacher", "scratch student"}
    assert keras.saving.load_model(output / "teacher.keras").output_shape == (None, 10)
    assert not (output / "student.keras").exists()


def test_console_script_and_module_entry_points(tmp_path):
    script = shutil.which("keras-kd", path=os.path.dirname(sys.executable))
    assert script, "the keras-kd console script is not installed"
    output = tmp_path / "cli_run"
    result = subprocess.run(
        [script, "distill", *TINY, "--output", str(output)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "distilled student" in result.stdout and RUN_FILES <= {p.name for p in output.iterdir()}
    result = subprocess.run(
        [sys.executable, "-m", "keras_kd", "distill", "--dataset", "nope_xyz"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "nope_xyz" in result.stderr


def test_student_loads_for_prediction(finished_run):
    student = keras.saving.load_model(finished_run / "student.keras")
    x = np.zeros((2, 8, 8, 1), "float32")
    assert student.predict(x, verbose=0).shape == (2, 10)


def test_digits_defaults_and_the_teacher_epochs_rule():
    config = job.DistillConfig()
    assert (config.teacher, config.student, config.method) == ("cnn_large", "mlp_small", "function_matching")
    assert (config.epochs, config.teacher_epochs) == (500, 60)
    # Choosing the epochs sets the teacher's too, unless they are given.
    assert job.DistillConfig(epochs=20).teacher_epochs == 20
    assert job.DistillConfig(epochs=20, teacher_epochs=5).teacher_epochs == 5
    assert job.DistillConfig(dataset="mnist").method == "kd"


def _imported_modules(command, env=None):
    """Runs `command`; returns (result, the modules it imported), read from `-X importtime`."""
    env = {**os.environ, **(env or {}), "PYTHONPROFILEIMPORTTIME": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    modules = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "keras_kd.cli" in modules, result.stderr[-2000:]  # the import log was read
    return result, modules


def test_help_and_methods_import_neither_keras_nor_tensorflow():
    script = shutil.which("keras-kd", path=os.path.dirname(sys.executable))
    for command in (
        [script, "--help"],
        [script, "distill", "--help"],
        [script, "methods"],
        [sys.executable, "-m", "keras_kd", "methods"],
    ):
        result, modules = _imported_modules(command, env={"KERAS_BACKEND": "tensorflow"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "usage: keras-kd" in result.stdout or "Hinton et al." in result.stdout
        heavy = sorted(m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
        assert not heavy, f"{command[1:]} imported {heavy[:5]}"


def test_the_methods_catalog_is_what_the_recipes_say():
    from keras_kd import catalog

    methods, schemes = catalog.current()
    # repr: the same values in the same order (the order of the printed constants).
    assert repr(catalog.METHODS) == repr(methods), "keras_kd/catalog.py is stale: run python -m keras_kd.catalog"
    assert repr(catalog.SCHEMES) == repr(schemes), "keras_kd/catalog.py is stale: run python -m keras_kd.catalog"


def test_a_library_import_still_registers_every_class():
    """Outside the command, `import keras_kd` imports the package whole, so
    `keras.saving.load_model` finds its classes without another import."""
    code = "import sys, keras_kd; print(sorted(m for m in ('keras_kd.distiller', 'keras_kd.losses') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "['keras_kd.distiller', 'keras_kd.losses']" in result.stdout, result.stderr


def test_verbose_flag_and_setting():
    parser = cli.build_parser()
    assert parser.parse_args(["distill"]).verbose is None  # the config's "auto": one progress line per stage
    assert parser.parse_args(["distill", "--verbose"]).verbose == 1  # Keras' own progress bars
    assert parser.parse_args(["distill", "--verbose", "0"]).verbose == 0
    assert parser.parse_args(["export", "m.keras", "--verbose"]).verbose is True
    assert job.DistillConfig().verbose == "auto"
    for bad in ("loud", 3, True):
        with pytest.raises(ValueError, match="verbose"):
            job.DistillConfig(verbose=bad)


class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def _run_progress(stream, epochs, steps=3, **kwargs):
    from keras_kd.progress import StageProgress

    progress = StageProgress(stream=stream, **kwargs)
    progress.set_params({"epochs": epochs, "steps": steps})
    progress.on_train_begin()
    for epoch in range(epochs):
        progress.on_epoch_begin(epoch)
        for step in range(steps):
            progress.on_train_batch_end(step, {"loss": 1.0, "accuracy": 0.5, "kd_loss_weight": 1.0})
        logs = {"accuracy": 0.5, "kd_loss": 0.25, "kd_loss_weight": 1.0, "loss": 1.0, "val_accuracy": 0.75}
        progress.on_epoch_end(epoch, {**logs, "val_kd_loss": 0.3})
    progress.on_train_end()
    return stream.text


def test_progress_when_piped_is_a_few_plain_lines():
    text = _run_progress(_Stream(tty=False), epochs=25)
    lines = text.splitlines()
    # ceil(25 / 10) = every 3rd epoch, and the last.
    assert [line.split()[1] for line in lines] == [f"{e}/25" for e in (3, 6, 9, 12, 15, 18, 21, 24, 25)]
    assert "\r" not in text and "\x1b" not in text
    assert lines[-1].startswith("      epoch 25/25  loss 1.0000  accuracy 0.5000  val_accuracy 0.7500  kd_loss 0.2500")
    assert "weight" not in text and "val_kd_loss" not in text
    assert len(_run_progress(_Stream(tty=False), epochs=4, every=1).splitlines()) == 4


def test_progress_on_a_terminal_is_one_line_rewritten_in_place(monkeypatch):
    monkeypatch.setenv("COLUMNS", "72")
    from keras_kd.progress import StageProgress

    monkeypatch.setattr(StageProgress, "refresh_seconds", 0.0)  # draw every step
    text = _run_progress(_Stream(tty=True), epochs=5)
    assert text.count("\n") == 1 and text.endswith("\n") and "\x1b" not in text
    draws = text.rstrip("\n").split("\r")[1:]
    assert len(draws) == 5 * 3 + 5  # every step, then each epoch's end
    assert "epoch 1/5  step 2/3  loss 1.0000" in draws[1]
    assert all(len(draw.rstrip()) <= 71 for draw in draws)  # never wraps, so "\r" rewrites it
    assert draws[-1].startswith("      epoch 5/5  loss 1.0000  accuracy 0.5000  val_accuracy 0.7500")


def test_piped_distill_is_quiet(tmp_path):
    """A redirected `keras-kd distill` at its default verbosity: no ANSI
    escape or carriage return, a few epoch lines per stage, and none of
    TensorFlow's C++ logs."""
    script = shutil.which("keras-kd", path=os.path.dirname(sys.executable))
    args = ["distill", "--epochs", "12", "--teacher-epochs", "1", "--limit", "120", "--student", "mlp_tiny"]
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [script, *args, "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "\x1b" not in out and "\r" not in out
    epochs, stage = {}, None
    for line in out.splitlines():
        if line.startswith("["):
            stage = epochs.setdefault(line.split("]")[0][1:], [])
        elif line.startswith("      epoch "):
            stage.append(line.split()[1])
    assert epochs["1/5"] == ["1/1"]
    assert epochs["2/5"] == epochs["3/5"] == [f"{e}/12" for e in (2, 4, 6, 8, 10, 12)]
    assert "distilled student" in out and len(out) < 6000
    # TensorFlow's start-up, CUDA-probe and converter logs and TFLite's delegate notice.
    for noise in ("absl::InitializeLog", "cuda", "cuInit", "XNNPACK", "oneDNN", "tf_tfl_flatbuffer"):
        assert noise not in result.stderr, result.stderr[-2000:]


def test_the_job_reads_the_training_split_as_arrays_only_when_a_stage_needs_it(tmp_path, monkeypatch):
    """The training split as float32 arrays (600 MB on CIFAR) is read only for
    factor transfer's pre-training (whole) and int8 calibration (its first
    200 images); the default job reads none of it."""
    from keras_kd.datasets.data import Data

    reads = []
    numpy = Data.numpy

    def spy(self, split="test", count=None):
        reads.append((split, count))
        return numpy(self, split, count)

    monkeypatch.setattr(Data, "numpy", spy)
    status, _ = distill(tmp_path, name="default")
    assert status == 0
    assert reads and all(split == "test" for split, _ in reads), reads
    reads.clear()
    status, _ = distill(tmp_path, "--method", "ft", "--quantize", "int8", "--student", "cnn_small", name="ft")
    assert status == 0
    train_reads = [count for split, count in reads if split == "train"]
    assert sorted(train_reads, key=str) == [200, None], reads
