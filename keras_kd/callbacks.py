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

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class ExportBestTFLite(keras.callbacks.Callback):
    """Exports the best student seen during training to TFLite when `fit` ends.

    After each epoch it compares `monitor` with the best value so far and
    keeps a copy of the student's weights when it improved; at the end of
    training it exports those weights with `keras_kd.export.to_tflite` and
    leaves the model's final weights as they were. With a `Distiller` the
    student (`model.student`) is exported, with a plain model the model.

    Args:
        path: the `.tflite` file to write.
        monitor: the log key to watch, e.g. "val_accuracy" or "val_loss".
        mode: "min", "max" or "auto" (max for accuracy-like keys).
        quantize, representative_data, int8_io, allow_float_fallback: as
            in `keras_kd.export.to_tflite`.
    """

    def __init__(
        self,
        path,
        monitor="val_loss",
        mode="auto",
        quantize=None,
        representative_data=None,
        int8_io=False,
        allow_float_fallback=False,
    ):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
        if quantize == "int8" and representative_data is None:
            raise ValueError("quantize='int8' needs `representative_data` (training inputs for calibration).")
        self.path = str(path)
        self.monitor = monitor
        self.mode = mode
        self.quantize = quantize
        self.representative_data = representative_data
        self.int8_io = int8_io
        self.allow_float_fallback = allow_float_fallback
        if mode == "auto":
            mode = "max" if any(key in monitor for key in ("acc", "auc", "precision", "recall")) else "min"
        self._better = (lambda new, best: new > best) if mode == "max" else (lambda new, best: new < best)
        self.best = None
        self.best_epoch = None
        self._best_weights = None

    def _student(self):
        return getattr(self.model, "student", self.model)

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self._best_weights = None, None, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"ExportBestTFLite monitors {self.monitor!r}, which is not in the logs: {sorted(logs)}. "
                "Pass validation_data to fit for val_ keys, or choose another monitor."
            )
        value = float(logs[self.monitor])
        if self.best is None or self._better(value, self.best):
            self.best, self.best_epoch = value, epoch + 1
            self._best_weights = [keras.ops.convert_to_numpy(w) for w in self._student().weights]

    def on_train_end(self, logs=None):
        if self._best_weights is None:
            return
        from keras_kd import export

        student = self._student()
        final = [keras.ops.convert_to_numpy(w) for w in student.weights]
        student.set_weights(self._best_weights)
        try:
            export.to_tflite(
                student,
                self.path,
                quantize=self.quantize,
                representative_data=self.representative_data,
                int8_io=self.int8_io,
                allow_float_fallback=self.allow_float_fallback,
            )
        finally:
            student.set_weights(final)

    def get_config(self):
        return {
            "path": self.path,
            "monitor": self.monitor,
            "mode": self.mode,
            "quantize": self.quantize,
            "int8_io": self.int8_io,
            "allow_float_fallback": self.allow_float_fallback,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
