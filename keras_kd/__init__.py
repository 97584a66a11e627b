"""keras_kd: knowledge distillation for Keras.

`Distiller` trains a student against a frozen teacher; `Term` binds a loss
from `keras_kd.losses` to the outputs or layers it compares. `recipes` holds
each method's published setting, `models` the reference teacher/student
architectures, `datasets` the data loaders, `optimizers` SGD with
PyTorch's coupled weight decay, `export` the TFLite path, and `job` (with
the `keras-kd` command in `cli`) the complete distillation run.
"""

import importlib

from keras_kd import augmentation, callbacks, connectors, losses, models, optimizers, recipes
from keras_kd.distiller import Distiller
from keras_kd.term import Term

# Loaded on first use: they build on TensorFlow (tf.data, TFLite, tf_keras),
# and a JAX or PyTorch process need not import it to distill.
_LAZY = ("datasets", "export", "schemes")


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"keras_kd.{name}")
    raise AttributeError(f"module 'keras_kd' has no attribute {name!r}")

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
