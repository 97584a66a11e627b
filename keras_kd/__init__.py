"""keras_kd: knowledge distillation for Keras.

`Distiller` trains a student against a frozen teacher; `Term` binds a loss
from `keras_kd.losses` to the outputs or layers it compares. `recipes` holds
each method's published setting, `models` the reference teacher/student
architectures, `datasets` the data loaders, `optimizers` SGD with
PyTorch's coupled weight decay, `export` the TFLite path, and `job` (with
the `keras-kd` command in `cli`) the complete distillation run.
"""

import importlib
import os
import sys

# Imported with the package: importing them registers every class for `keras.saving`.
_EAGER = ("augmentation", "callbacks", "connectors", "losses", "models", "optimizers", "recipes")
# Loaded on first use: they build on TensorFlow (tf.data, TFLite, tf_keras),
# and a JAX or PyTorch process need not import it to distill.
_LAZY = ("datasets", "export", "schemes")
_CLASSES = {"Distiller": "keras_kd.distiller", "Term": "keras_kd.term"}


def _is_the_command():
    """True in the `keras-kd` process (its console script, or `python -m
    keras_kd`): the command imports what each subcommand needs, so that
    `keras-kd --help` and `keras-kd methods` answer without importing Keras
    (which, on the TensorFlow backend, imports TensorFlow: seconds, and its
    start-up logs)."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("keras-kd", "keras-kd.exe"):
        return True
    argv = getattr(sys, "orig_argv", [])
    return any(flag == "-m" and module == "keras_kd" for flag, module in zip(argv, argv[1:]))


def __getattr__(name):
    if name in _EAGER or name in _LAZY:
        return importlib.import_module(f"keras_kd.{name}")
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")


def _import_all():
    """Imports the package's models, losses, terms and callbacks, which registers them for `keras.saving`."""
    for name in _EAGER:
        importlib.import_module(f"keras_kd.{name}")
    for module in _CLASSES.values():
        importlib.import_module(module)


if not _is_the_command():
    from keras_kd import augmentation, callbacks, connectors, losses, models, optimizers, recipes
    from keras_kd.distiller import Distiller
    from keras_kd.term import Term

__version__ = "0.1.0"

__all__ = [
    "augmentation",
    "callbacks",
    "connectors",
    "datasets",
    "Distiller",
    "export",
    "losses",
    "models",
    "optimizers",
    "recipes",
    "schemes",
    "Term",
]
