"""The README's Python code runs as written.

Every ```python block of README.md runs in order, in one namespace (a later
block uses the models of an earlier one), as the file gives it: no
substitution, so the snippet must stay complete and small (digits, about
30 s on 2 CPU cores). Run from a temporary folder, since it saves a model.
"""

import math
import re
from pathlib import Path

import keras

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def python_blocks(text):
    return BLOCK.findall(text)


def test_python_blocks_are_found():
    # Guards the extraction itself: a fence the pattern misses would make the
    # run below check nothing.
    text = README.read_text()
    assert len(python_blocks(text)) == text.count("```python") >= 1


def test_readme_python_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}

    def run(i, block):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102 (the README's own code)

    use, *rest = python_blocks(README.read_text())
    run(0, use)
    # What the README says of the "Use" snippet: the student learns, and a
    # feature term stays of the order of the cross-entropy (FitNets at its
    # published weight, 100, was 40 times it in the first epoch and cost the
    # student 8 to 11 points).
    distiller, logs = namespace["distiller"], namespace["history"].history
    assert all(math.isfinite(value) for values in logs.values() for value in values)
    feature_terms = [term for term in distiller.bound_terms if term.teacher_layer is not None]
    assert feature_terms
    for term in feature_terms:
        weighted = float(keras.ops.convert_to_numpy(term.weight)) * logs[term.term_name][0]
        assert weighted < 2 * logs["student_loss"][0], (term.term_name, weighted, logs["student_loss"][0])
    assert logs["val_accuracy"][-1] > 0.9, logs["val_accuracy"]
    student = keras.saving.load_model(tmp_path / "student.keras")
    assert student.count_params() == namespace["student"].count_params()

    for i, block in enumerate(rest, start=1):
        run(i, block)
    # The recipe block's hint is the snippet's: same layers, same weight.
    (hint,) = namespace["terms"]
    assert (hint.teacher_layer, hint.student_layer, hint.weight) == ("stage2", "stage2", 1.0)
