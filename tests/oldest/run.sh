#!/usr/bin/env bash
# The oldest TensorFlow and Keras that pyproject.toml admits, preinstalled the way
# Colab preinstalls its own: a fresh environment holding only them and Jupyter. The
# quickstart notebook's install cell then installs keras_kd from a wheel placed beside
# it and the notebook runs (tiny setting, tests/oldest/notebook_install.py, which also
# checks that pip kept TensorFlow and Keras), then a short pytest smoke run.
# CI runs it after the full suite (.ci/run); about 3 minutes here plus the download.
set -euo pipefail
cd "$(dirname "$0")/../.."
# The lower bounds of pyproject.toml's range (tests/test_packaging.py checks they agree).
TENSORFLOW=2.19.1
KERAS=3.10.0
venv=${KERAS_KD_OLDEST_VENV:-.venv-oldest}
rm -rf "$venv"
python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "tensorflow==$TENSORFLOW" "keras==$KERAS" pytest pytest-timeout nbclient nbformat ipykernel
wheels=$(mktemp -d)
python -m pip wheel --quiet --no-deps . -w "$wheels"
python tests/oldest/notebook_install.py "$wheels"/keras_kd-*.whl "$TENSORFLOW" "$KERAS"
# The step, the terms, export and saving on the oldest versions.
python -m pytest -q tests/test_distiller.py tests/test_bound_terms.py tests/test_export.py tests/losses/test_kd.py
