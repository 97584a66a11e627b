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
    # The paper's PyTorch form of weight decay and its per-channel input standardisation.
    assert config.weight_decay_form == "coupled" and config.normalize is True
    sgd = quality.optimizer(config, steps_per_epoch=10, epochs=2)
    assert type(sgd) is quality.CoupledSGD and sgd.weight_decay is None
    assert sgd.coupled_weight_decay == config.weight_decay == 5e-4 and sgd.momentum == 0.9


def test_quick_table_keeps_the_decoupled_form_and_unit_inputs():
    config = quality.CifarConfig()
    assert config.weight_decay_form == "decoupled" and config.normalize is False
    sgd = quality.optimizer(config, steps_per_epoch=10, epochs=2)
    assert type(sgd) is quality.keras.optimizers.SGD and sgd.weight_decay == 5e-4
    means, stds = quality.CHANNEL_STATS["cifar100"]
    assert means == (0.5071, 0.4867, 0.4408) and stds == (0.2675, 0.2565, 0.2761)  # RepDistiller's


def test_results_recorded_before_the_new_settings_resume(tmp_path, monkeypatch):
    """A results file written before `weight_decay_form` and `normalize` existed was trained with their
    defaults: its rows are kept for the default config, and not for the other forms."""
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    config = quality.dataclasses.asdict(quality.CifarConfig())
    old = {k: v for k, v in config.items() if k not in quality.LATER_SETTINGS}
    row = {"pair": "resnet20->resnet8", "method": "teacher", "accuracy": 0.7}
    (tmp_path / "quality_cifar10.json").write_text(json.dumps({"config": old, "rows": [row]}))
    assert quality.Results("quality_cifar10", config, resume=True).rows == [row]
    for change in ({"weight_decay_form": "coupled"}, {"normalize": True}):
        assert quality.Results("quality_cifar10", {**config, **change}, resume=True).rows == []


def test_bad_config_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ValueError, match="Unknown keys.*epoch"):
        quality.CifarConfig.from_file(path)
    with pytest.raises(ValueError, match="Unknown methods.*'nope'"):
        quality.CifarConfig(methods=["kd", "nope"]).validate()
    with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
        quality.CifarConfig(pairs=[["resnet9", "resnet8"]]).validate()
    with pytest.raises(ValueError, match="weight_decay_form must be .* got 'l2'"):
        quality.CifarConfig(weight_decay_form="l2").validate()
    with pytest.raises(ValueError, match="normalize must be true or false, got 'yes'"):
        quality.CifarConfig(normalize="yes").validate()


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


def test_paper_protocol_normalizes_every_model_and_couples_the_decay(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    config = quality.CifarConfig(
        dataset="digits",
        pairs=[["cnn_small", "cnn_tiny"]],
        methods=["at"],
        schemes=["grafting"],
        train=96,
        teacher_epochs=1,
        epochs=1,
        batch_size=32,
        weight_decay_form="coupled",
        normalize=True,
    )
    compiled, built = [], []
    optimizer, build = quality.optimizer, quality.build
    monkeypatch.setattr(quality, "optimizer", lambda *a, **k: compiled.append(optimizer(*a, **k)) or compiled[-1])
    monkeypatch.setattr(quality, "build", lambda *a, **k: built.append(build(*a, **k)) or built[-1])
    payload = quality.run_cifar(config, cache=tmp_path / "cache")
    assert [row["method"] for row in payload["rows"]] == ["teacher", "scratch", "at", "grafting"]
    assert all(row["finite"] for row in payload["rows"][1:])
    assert compiled and all(type(o) is quality.CoupledSGD and o.coupled_weight_decay == 5e-4 for o in compiled)
    # Teacher, students and the second grafting peer: all standardised in a fixed layer, with the digits'
    # per-channel statistics (no published ones), inputs still in [0, 1].
    assert {model.name for model in built} == {"teacher", "student", "peer2"}
    x = quality.load_data(config).numpy("train")[0]
    for model in built:
        layer = model.get_layer("input_normalization")
        assert model.layers[1] is layer and not layer.trainable_weights
        assert quality.np.allclose(layer.mean, x.mean((0, 1, 2)))
        assert quality.np.allclose(layer.variance, x.var((0, 1, 2)))
    # The teacher cache tells the variants apart (the default one keeps its old file name).
    (path,) = (tmp_path / "cache").iterdir()
    assert path.name.endswith("-coupled-norm-s0.keras")
    table = (tmp_path / "quality_digits.md").read_text()
    assert "weight decay 0.0005 (coupled)" in table and "inputs standardised per channel" in table


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
