"""Quantization- and pruning-aware distillation on tf_keras students.

tensorflow-model-optimization needs `TF_USE_LEGACY_KERAS=1` before
TensorFlow is imported, which this (Keras 3) test process cannot undo, so
the checks in `legacy_checks.py` run in their own process."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_kd import backend, optimization

CHECKS = Path(__file__).with_name("legacy_checks.py")


@pytest.fixture(scope="module")
def legacy_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("legacy")
    env = {
        **os.environ,
        "TF_USE_LEGACY_KERAS": "1",
        "KERAS_BACKEND": "tensorflow",  # the tf_keras path is TensorFlow's, whatever this process runs
        "PYTHONPATH": str(CHECKS.parents[1]),
    }
    return subprocess.run(
        [sys.executable, str(CHECKS), str(output)], capture_output=True, text=True, timeout=600, env=env
    )


def _check_names():
    return re.findall(r"^@check\ndef (\w+)", CHECKS.read_text(), flags=re.M)


@pytest.mark.parametrize("name", _check_names())
def test_legacy_check(legacy_run, name):
    passed = set(re.findall(r"^PASS (\w+)$", legacy_run.stdout, flags=re.M))
    assert name in passed, f"exit {legacy_run.returncode}\n{legacy_run.stdout[-2000:]}\n{legacy_run.stderr[-4000:]}"


def test_all_checks_ran(legacy_run):
    assert legacy_run.returncode == 0, legacy_run.stderr[-4000:]


def test_without_legacy_keras_the_error_says_how_to_enable_it():
    if os.environ.get("TF_USE_LEGACY_KERAS") == "1":
        pytest.skip("this process already runs in legacy mode")
    if not backend.is_tensorflow():
        pytest.skip("on JAX and PyTorch the backend error comes first (tests/test_backends.py)")
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        optimization.quantization_aware(None)
