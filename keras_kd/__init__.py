"""keras_kd: knowledge distillation for Keras.

`Distiller` trains a student against a frozen teacher; `Term` binds a loss
from `keras_kd.losses` to the outputs or layers it compares.
"""

from keras_kd import callbacks, connectors, losses
from keras_kd.distiller import Distiller
from keras_kd.term import Term

__version__ = "0.1.0"

__all__ = [
    "callbacks",
    "connectors",
    "Distiller",
    "losses",
    "Term",
]
