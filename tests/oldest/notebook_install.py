"""Runs the quickstart notebook the way a Colab user does: keras_kd is not
installed, its wheel sits beside the notebook, and the notebook's first cell
installs it. Then checks that the install kept the preinstalled TensorFlow and
Keras and that the notebook ran to the TFLite export. Last, the same first
cell, run inside the checkout with keras_kd uninstalled, installs it from the
checkout.

    python tests/oldest/notebook_install.py WHEEL TENSORFLOW_VERSION KERAS_VERSION

Run by tests/oldest/run.sh in a fresh environment; exits non-zero on failure.
"""

import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.test_notebooks import TINY, outputs_text  # noqa: E402  (the tiny setting the main suite uses)


def main(wheel, tensorflow_version, keras_version):
    sys.path.remove(str(ROOT))  # keras_kd must come from the wheel, not from the checkout
    if importlib.util.find_spec("keras_kd") is not None:
        raise SystemExit("keras_kd is already importable: this check needs an environment without it")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        shutil.copy(wheel, folder)
        notebook = nbformat.read(ROOT / "examples" / "notebooks" / "quickstart.ipynb", as_version=4)
        (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
        parameters.source = TINY["quickstart.ipynb"]
        NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
        text = outputs_text(notebook)
        assert "distilled student" in text and "TFLite test accuracy" in text, text[-2000:]
        assert (folder / "student.tflite").stat().st_size > 0
    _install_from_checkout(notebook.cells[1].source)
    installed = {name: importlib.metadata.version(name) for name in ("tensorflow", "keras", "keras-kd")}
    assert installed["tensorflow"] == tensorflow_version, installed
    assert installed["keras"] == keras_version, installed
    print(f"quickstart notebook installed keras_kd {installed['keras-kd']} from {Path(wheel).name} and ran; "
          f"TensorFlow {installed['tensorflow']} and Keras {installed['keras']} kept")


def _install_from_checkout(install_cell):
    assert "pip" in install_cell and "keras_kd_source" in install_cell, install_cell[:200]
    subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", "keras-kd"])
    subprocess.check_call([sys.executable, "-c", install_cell], cwd=ROOT / "examples" / "notebooks")
    with tempfile.TemporaryDirectory() as elsewhere:  # away from the checkout, keras_kd comes from site-packages
        location = subprocess.check_output(
            [sys.executable, "-c", "import keras_kd; print(keras_kd.__file__)"], cwd=elsewhere, text=True
        )
    assert "site-packages" in location, location
    print(f"the first cell installed keras_kd from the checkout {ROOT} into {Path(location).parent.parent}")


if __name__ == "__main__":
    main(*sys.argv[1:])
