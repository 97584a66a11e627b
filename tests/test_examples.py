"""The method-family examples run end to end (one epoch, a slice of digits)."""

import importlib
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

FAMILIES = {
    "logit_distillation": {"kd", "logit_mse", "dkd", "dist"},
    "feature_distillation": {"fitnet", "at", "nst", "gram", "ab", "ofd"},
    "relational_distillation": {"sp", "cc", "rkd", "pkt"},
    "learnable_distillation": {"vid", "ft", "crd", "reviewkd"},
}


@pytest.mark.parametrize("module", sorted(FAMILIES))
def test_family_example_runs(module):
    results = importlib.import_module(module).main(epochs=1, limit=256)
    assert set(results) == FAMILIES[module] | {"teacher", "scratch"}
    assert all(0.0 <= acc <= 1.0 and math.isfinite(acc) for acc in results.values())


def test_mimic_learning_example_runs(capsys):
    results = importlib.import_module("mimic_learning").main(epochs=1, limit=256)
    assert set(results) == {"teacher", "mimic_labels", "mimic_logits", "wide_labels", "wide_logits"}
    assert all(0.0 <= acc <= 1.0 and math.isfinite(acc) for acc in results.values())
    assert "params" in capsys.readouterr().out


def test_digits_main_job_prints_all_three(capsys):
    results = importlib.import_module("distill_digits").main(epochs=1)
    assert set(results) == {"teacher", "scratch student", "distilled student"}
    out = capsys.readouterr().out
    assert "distilled student" in out and "test accuracy" in out


def test_unlabeled_transfer_example_runs():
    results = importlib.import_module("unlabeled_transfer").main(epochs=1, limit=256, labels=50)
    assert set(results) == {
        "teacher (all labels)",
        "labelled subset (50)",
        "unlabelled transfer",
        "synthetic transfer (mixup)",
    }
    assert all(0.0 <= acc <= 1.0 for acc in results.values())


def test_noisy_student_example_runs():
    results = importlib.import_module("noisy_student").main(epochs=1, limit=256, labels=50)
    assert set(results) == {"teacher (labels only)", "student round 1", "student round 2"}
    assert all(0.0 <= acc <= 1.0 and math.isfinite(acc) for acc in results.values())


@pytest.mark.parametrize(
    "module",
    [
        "mutual_learning",
        "self_distillation",
        "teacher_free",
        "adversarial_distillation",
        "boundary_supporting_samples",
        "multi_teacher",
        "two_stage_fitnets",
        "grafting",
    ],
)
def test_scheme_examples_run(module):
    results = importlib.import_module(module).main(epochs=1, limit=256)
    assert results and all(0.0 <= acc <= 1.0 and math.isfinite(acc) for acc in results.values())
