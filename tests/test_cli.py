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
from keras_kd import cli, datasets, job, models, recipes

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = ["--epochs", "1", "--limit", "120", "--verbose", "0"]
RUN_FILES = {
    "report.json",
    "report.md",
    "config.yaml",
    "teacher.keras",
    "student.keras",
    "student.tflite",
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


def test_distill_a_tfds_dataset(tmp_path, monkeypatch):
    """The real tensorflow-datasets code path, offline, on mock data."""
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_network_reachable", lambda: True)  # the mock makes the download a no-op
    with tfds.testing.mock_data(num_examples=48):
        status, output = distill(tmp_path, "--dataset", "cifar10", "--teacher", "cnn_tiny", "--student", "cnn_tiny")
    assert status == 0
    report = read_report(output)
    assert report["data"]["source"] == "tfds" and report["data"]["input_shape"] == [32, 32, 3]


def test_offline_without_data_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KERAS_KD_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "_network_reachable", lambda: False)
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
