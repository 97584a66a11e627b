"""Shared helpers for the benchmarks: data from ../shared/data, result files."""

import json
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def data_dir():
    """The folder holding mnist.npz / cifar10_jpeg.npz (KERAS_KD_DATA_DIR or
    ../shared/data beside the checkout)."""
    path = Path(os.environ.get("KERAS_KD_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (path / "mnist.npz").exists():
        raise FileNotFoundError(
            f"No mnist.npz in {path}. Set KERAS_KD_DATA_DIR to the folder that holds it."
        )
    return path


def load_mnist():
    with np.load(data_dir() / "mnist.npz") as data:
        x_train = data["x_train"].reshape(-1, 784).astype("float32") / 255.0
        x_test = data["x_test"].reshape(-1, 784).astype("float32") / 255.0
        return x_train, data["y_train"].astype("int32"), x_test, data["y_test"].astype("int32")


def environment():
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_count": os.cpu_count(),
        "devices": [d.device_type for d in tf.config.list_physical_devices()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_results(name, payload, markdown):
    """Write benchmarks/results/<name>.json and .md; return their paths."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps({**payload, "environment": environment()}, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path
