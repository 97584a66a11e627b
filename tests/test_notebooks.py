"""The example notebooks execute top to bottom on a tiny setting, so they
cannot rot. The cell tagged `parameters` is replaced by the tiny setting."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
TINY = {
    "quickstart.ipynb": 'DATASET = "digits"\nDATA_DIR = None\nTEACHER, STUDENT = "cnn_small", "mlp_tiny"\n'
    "TEACHER_EPOCHS, EPOCHS = 1, 1\nTEMPERATURE = 1.0\nLIMIT = 100",
    "method_comparison.ipynb": 'DATASET = "digits"\nDATA_DIR = None\nTEACHER, STUDENT = "cnn_small", "cnn_tiny"\n'
    'METHODS = ["kd", "at", "crd"]\nEPOCHS = 1\nLIMIT = 100',
}


def test_every_notebook_has_a_tiny_setting():
    assert {path.name for path in NOTEBOOKS.glob("*.ipynb")} == set(TINY)


def outputs_text(notebook):
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            text.append(str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(text)


@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_executes(name, tmp_path):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    parameters = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(parameters) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    parameters[0].source = TINY[name]
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = outputs_text(notebook)
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert images >= 1
    if name == "quickstart.ipynb":
        assert "distilled student" in outputs and "TFLite test accuracy" in outputs
        assert (tmp_path / "student.tflite").stat().st_size > 0
    else:
        assert all(f"| {method} |" in outputs for method in ("scratch", "kd", "at", "crd"))
