"""The quality benchmark's configs load and its CIFAR path runs end to end
(on digits, tiny), resumes, and tabulates against scratch."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import common  # noqa: E402
import quality  # noqa: E402


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "benchmarks" / "configs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_full_protocol_configs_load_and_validate(path):
    config = quality.CifarConfig.from_file(path)
    config.validate()
    assert config.epochs == config.teacher_epochs == 240 and config.schedule == "step"
    assert config.dataset == "cifar100" and config.train is None
    assert set(config.methods) == set(quality.recipes.names())


def test_bad_config_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="Unknown keys.*epoch"):
        quality.CifarConfig.from_file(path)
    with pytest.raises(ValueError, match="Unknown methods.*'nope'"):
        quality.CifarConfig(methods=["kd", "nope"]).validate()
    with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
        quality.CifarConfig(pairs=[["resnet9", "resnet8"]]).validate()


def test_cifar_path_runs_resumes_and_tabulates(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    config = quality.CifarConfig(
        dataset="digits",
        pairs=[["cnn_small", "cnn_tiny"]],
        methods=["kd", "ft", "at"],
        schemes=[],
        train=96,
        teacher_epochs=1,
        epochs=1,
        batch_size=32,
    )
    payload = quality.run_cifar(config, cache=tmp_path / "cache")
    methods = [row["method"] for row in payload["rows"]]
    assert methods == ["teacher", "scratch", "kd", "ft", "at"]
    assert all(row["finite"] for row in payload["rows"][1:])
    summary = payload["summary"]["cnn_small->cnn_tiny"]
    assert summary["feature_methods_run"] == ["ft", "at"]
    table = (tmp_path / "quality_digits.md").read_text()
    assert "| student (scratch) |" in table and "| at |" in table
    saved = json.loads((tmp_path / "quality_digits.json").read_text())
    assert saved["rows"] == payload["rows"]

    # A resumed run keeps every finished row; a method added later is the only one trained.
    built = []
    distiller = quality.recipes.distiller
    monkeypatch.setattr(
        quality.recipes, "distiller", lambda name, *a, **k: built.append(name) or distiller(name, *a, **k)
    )
    again = quality.run_cifar(config, resume=True, cache=tmp_path / "cache")
    assert again["rows"] == payload["rows"] and built == []
    config.methods = [*config.methods, "sp"]
    more = quality.run_cifar(config, resume=True, cache=tmp_path / "cache")
    assert built == ["sp"] and more["rows"][:-1] == payload["rows"]
    assert more["summary"]["cnn_small->cnn_tiny"]["feature_methods_run"] == ["ft", "at", "sp"]


def test_scheme_rows_run_and_tabulate(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    config = quality.CifarConfig(
        dataset="digits",
        pairs=[["cnn_small", "cnn_tiny"]],
        methods=["kd"],
        train=96,
        teacher_epochs=1,
        epochs=1,
        batch_size=32,
    )
    assert config.schemes == list(quality.SCHEMES)
    payload = quality.run_cifar(config, cache=tmp_path / "cache")
    rows = {row["method"]: row for row in payload["rows"]}
    assert list(rows) == ["teacher", "scratch", "kd", *quality.SCHEMES]
    assert all(row["finite"] for row in payload["rows"][1:])
    assert rows["mimic"]["params"] == rows["mimic_scratch"]["params"] != rows["scratch"]["params"]
    assert (
        rows["mimic"]["teacher_accuracy"] == rows["teacher"]["accuracy"]
        and "teacher_accuracy" not in rows["mimic_scratch"]
    )
    assert 0 <= rows["grafting"]["peer2_accuracy"] <= 1
    assert rows["noisy_student"]["unlabeled"] == 96 and rows["noisy_student"]["params"] == rows["scratch"]["params"]
    table = (tmp_path / "quality_digits.md").read_text()
    assert "| grafting: filter grafting, 2 peers (peer 1), " in table and "| noisy_student: noisy student" in table
    with pytest.raises(ValueError, match="Unknown schemes.*'nope'"):
        quality.CifarConfig(schemes=["nope"]).validate()


def test_speed_figures_and_ratios():
    import speed

    assert speed.after_first([9.0, 5.0, 4.0, 6.0]) == 4.0  # the warm-up epoch never counts
    assert speed.after_first([9.0, 5.0, 4.0, 6.0], "median") == 5.0
    seconds = {
        ("student", "float32", False): 4.0,
        ("teacher", "float32", False): 1.0,
        ("keras_feature", "float32", False): 9.0,
        ("keras_kd_feature", "float32", False): 6.0,
        ("cache", "float32", False): 4.4,
    }
    ratios = speed.ratios_of(seconds)[("float32", False)]
    assert ratios == pytest.approx(
        {"keras_kd_vs_student_plus_teacher": 1.2, "keras_distillation_vs_keras_kd": 1.5, "cache_vs_student": 1.1}
    )
    noise = speed.machine_noise(repeats=2)
    assert len(noise["seconds"]) == 2 and noise["min"] <= noise["median"] <= noise["max"]
