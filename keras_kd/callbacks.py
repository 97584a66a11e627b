"""Callbacks for distillation runs."""

import math

import keras


@keras.saving.register_keras_serializable(package="keras_kd")
class TerminateOnNonFiniteTerm(keras.callbacks.Callback):
    """Stops training with an error naming the loss term that became NaN/Inf.

    Keras' `TerminateOnNaN` only sees the total; with several terms the
    useful message is which one diverged. The `Distiller` adds this callback
    to `fit` unless built with `stop_on_nan=False`.

    Args:
        names: the log keys to watch (the Distiller's term names and
            `student_loss`).
    """

    def __init__(self, names):
        super().__init__()
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"`names` must be a list of log keys. Received: names={names!r}")
        self.names = list(names)
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for name in self.names:
            if name in (logs or {}):
                value = float(logs[name])
                if not math.isfinite(value):
                    self.model.stop_training = True
                    raise FloatingPointError(
                        f"Distillation term '{name}' became {value} at batch {batch} "
                        f"of epoch {self._epoch + 1}. Lower its weight or the learning "
                        "rate, or check its inputs; pass stop_on_nan=False to the "
                        "Distiller to train on regardless."
                    )

    def get_config(self):
        return {"names": self.names}
