"""What pyproject.toml declares: the TensorFlow and Keras range CI tests, and the
optional dependencies (each feature that needs an extra says which one, in one
line; the extras declared match `keras_kd.extras`)."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from keras_kd import extras

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
OPTIONAL_DEPENDENCIES = PYPROJECT["project"]["optional-dependencies"]


def _names(requirements):
    return {requirement.split(";")[0].split("[")[0].split(">")[0].split("<")[0].split("=")[0].strip()
            for requirement in requirements}


def _lower_bound(distribution):
    (requirement,) = [r for r in PYPROJECT["project"]["dependencies"] if _names([r]) == {distribution}]
    return re.search(r">=([0-9.]+)", requirement).group(1)


def test_the_oldest_smoke_run_installs_the_lower_bounds_of_the_declared_range():
    script = (Path(__file__).resolve().parent / "oldest" / "run.sh").read_text()
    pinned = dict(re.findall(r"^(TENSORFLOW|KERAS)=([0-9.]+)$", script, flags=re.MULTILINE))
    for distribution, variable in (("tensorflow", "TENSORFLOW"), ("keras", "KERAS")):
        lower = _lower_bound(distribution)
        assert pinned[variable].split(".")[:2] == lower.split(".")[:2], (distribution, pinned, lower)


def test_the_full_suite_runs_inside_the_declared_range():
    import keras
    import tensorflow as tf
    from packaging.specifiers import SpecifierSet

    for distribution, version in (("tensorflow", tf.__version__), ("keras", keras.__version__)):
        (requirement,) = [r for r in PYPROJECT["project"]["dependencies"] if _names([r]) == {distribution}]
        assert version in SpecifierSet(requirement[len(distribution):]), (requirement, version)


@pytest.mark.parametrize("module", sorted(extras.OPTIONAL))
def test_each_optional_module_is_in_the_extra_it_names(module):
    distribution, extra = extras.OPTIONAL[module]
    assert distribution in _names(OPTIONAL_DEPENDENCIES[extra])
    assert distribution not in _names(PYPROJECT["project"]["dependencies"])


def test_the_test_extra_installs_every_feature_extra():
    (self_reference,) = [r for r in OPTIONAL_DEPENDENCIES["test"] if r.startswith("keras-kd[")]
    included = set(self_reference[len("keras-kd["):self_reference.index("]")].split(","))
    assert {"datasets", "optimization"} <= included
    assert {extra for _, extra in extras.OPTIONAL.values()} <= included


@pytest.mark.parametrize("module", sorted(extras.OPTIONAL))
def test_a_missing_extra_is_named_in_one_line(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # what an install without the extra sees
    with pytest.raises(extras.MissingExtraError) as raised:
        extras.require(module, "This feature")
    message = str(raised.value)
    distribution, extra = extras.OPTIONAL[module]
    assert "\n" not in message
    assert f'pip install "keras-kd[{extra}]"' in message and distribution in message
    assert isinstance(raised.value, ImportError) and raised.value.name == module


def test_require_returns_the_installed_module():
    assert extras.require("tf_keras", "legacy") is importlib.import_module("tf_keras")


def test_a_broken_import_inside_an_installed_extra_is_not_reported_as_missing(tmp_path, monkeypatch):
    (tmp_path / "kd_fake_extra.py").write_text("import kd_fake_missing_inner\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(extras.OPTIONAL, "kd_fake_extra", ("kd-fake-extra", "fake"))
    with pytest.raises(ModuleNotFoundError) as raised:
        extras.require("kd_fake_extra", "x")
    assert not isinstance(raised.value, extras.MissingExtraError)
    assert raised.value.name == "kd_fake_missing_inner"


def test_importing_legacy_without_tf_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tf_keras", None)
    monkeypatch.delitem(sys.modules, "keras_kd.legacy", raising=False)
    with pytest.raises(extras.MissingExtraError, match=r"keras_kd.legacy .*keras-kd\[optimization\]"):
        importlib.import_module("keras_kd.legacy")


def test_the_core_install_distills_and_exports_without_the_extras(tmp_path):
    """A process in which tf-keras, tensorflow-model-optimization and
    tensorflow-datasets cannot be imported distills on the digits and writes
    a TFLite file; QAT names its extra."""
    script = f"""
import sys
for name in ("tf_keras", "tensorflow_model_optimization", "tensorflow_datasets"):
    sys.modules[name] = None
import keras, keras_kd
data = keras_kd.datasets.load("digits", batch_size=64, limit=128)
teacher = keras_kd.models.get("mlp_tiny", data.input_shape, data.num_classes)
student = keras_kd.models.get("mlp_tiny", data.input_shape, data.num_classes)
distiller = keras_kd.Distiller(teacher, student, terms=[keras_kd.Term(keras_kd.losses.KDLoss())])
distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
distiller.fit(data.train, epochs=1, verbose=0)
keras_kd.export.to_tflite(student, {str(tmp_path / "s.tflite")!r})
from keras_kd import optimization
try:
    optimization.quantization_aware(student)
except keras_kd.extras.MissingExtraError as error:
    print("MISSING:", error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "s.tflite").stat().st_size > 0
    assert 'MISSING: Quantization- and pruning-aware distillation' in result.stdout
    assert 'pip install "keras-kd[optimization]"' in result.stdout
