"""Callbacks for distillation runs."""

import math
import os
from pathlib import Path

import keras

from keras_kd.validation import validate_number, validate_positive_int


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

    # Keras runs the batch check in a worker thread (its error surfaces at the
    # next batch or at the epoch's end), so reading the logs' values does not
    # stall the step: the per-batch wait made a resnet56 -> resnet20 epoch
    # 1.48x slower at batch 128 on a GPU (JAX, H200; benchmarks/results/speed_gpu.md).
    async_safe = True

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
                    # Not `self.model`: on JAX that property syncs the training
                    # state into the variables, and from this worker thread it
                    # races the main thread, which has already donated that
                    # state to the next step (the variables kept deleted arrays).
                    self._model.stop_training = True
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
        from keras_kd.export import QUANTIZE

        if quantize not in QUANTIZE and quantize != "none":
            raise ValueError(f"`quantize` must be one of {list(QUANTIZE)} (or 'none'). Received: quantize={quantize!r}")
        if quantize == "int8" and representative_data is None:
            raise ValueError("quantize='int8' needs `representative_data` (training inputs for calibration).")
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"`monitor` must be a log key such as 'val_loss'. Received: monitor={monitor!r}")
        _check_writable_folder(path)
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
        from keras_kd import backend

        backend.require_tensorflow("ExportBestTFLite (TFLite export)")
        _check_writable_folder(self.path)  # it may have changed since __init__
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


def _check_writable_folder(path):
    """Raise before training when `path` cannot be written: its nearest
    existing ancestor must be a writable folder."""
    folder = Path(path).resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"Cannot write {str(path)!r}: {str(folder)!r} is not a writable folder.")


SCHEDULES = ("constant", "step", "linear", "cosine", "exponential")


def schedule_value(schedule, epoch, start, end=None, epochs=None, step_size=None, gamma=None):
    """The value of a named schedule (or a callable of the epoch) at `epoch` (0-based).

    - "constant": `start`.
    - "step": `start * gamma ** (epoch // step_size)`.
    - "linear": from `start` at epoch 0 to `end` at epoch `epochs - 1`, then `end`.
    - "cosine": `end + (start - end) * (1 + cos(pi * progress)) / 2`, same progress.
    - "exponential": `start * gamma ** epoch`, bounded by `end` if given.
    """
    if callable(schedule):
        return float(schedule(epoch))
    if schedule == "constant":
        return float(start)
    if schedule == "step":
        return float(start * gamma ** (epoch // step_size))
    if schedule == "exponential":
        value = start * gamma**epoch
        if end is not None:
            value = max(value, end) if gamma < 1 else min(value, end)
        return float(value)
    progress = min(epoch / max(epochs - 1, 1), 1.0)
    if schedule == "linear":
        return float(start + (end - start) * progress)
    return float(end + (start - end) * (1 + math.cos(math.pi * progress)) / 2)


def _validate_schedule(schedule, start, end, epochs, step_size, gamma):
    if callable(schedule):
        return
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {list(SCHEDULES)} or a callable of the epoch. Received: {schedule!r}")
    for name, value in (("start", start), ("end", end), ("gamma", gamma)):
        if value is None and name != "start":
            continue
        validate_number(name, value)
    if schedule in ("linear", "cosine"):
        if end is None or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(
                f"schedule={schedule!r} needs `end` and a positive integer `epochs`. Received: end={end!r}, "
                f"epochs={epochs!r}"
            )
    if schedule == "step" and (not isinstance(step_size, int) or step_size < 1 or gamma is None):
        raise ValueError(
            f"schedule='step' needs a positive integer `step_size` and `gamma`. Received: step_size={step_size!r}, "
            f"gamma={gamma!r}"
        )
    if schedule == "exponential" and (gamma is None or gamma <= 0):
        raise ValueError(f"schedule='exponential' needs `gamma > 0`. Received: gamma={gamma!r}")


class _VariableScheduler(keras.callbacks.Callback):
    """Assigns a schedule's value to Distiller variables at each epoch start.
    Subclasses say which variables with a `variables()` method."""

    log_name = None

    def __init__(self, schedule="constant", start=None, end=None, epochs=None, step_size=None, gamma=None):
        super().__init__()
        _validate_schedule(schedule, start if start is not None else 0.0, end, epochs, step_size, gamma)
        self.schedule, self.start, self.end = schedule, start, end
        self.epochs, self.step_size, self.gamma = epochs, step_size, gamma
        self.value = None

    def value_at(self, epoch):
        return schedule_value(self.schedule, epoch, self.start, self.end, self.epochs, self.step_size, self.gamma)

    def on_train_begin(self, logs=None):
        self.variables()  # fail before the first step if the model lacks them
        # The whole schedule, so a value that turns invalid at epoch 40 fails now, not then.
        for epoch in range((self.params or {}).get("epochs") or 0):
            self.checked_value(epoch)

    def checked_value(self, epoch):
        """`value_at(epoch)`, refused unless finite and >= 0."""
        value = self.value_at(epoch)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{type(self).__name__} gives {value} at epoch {epoch + 1}; expected a finite value >= 0.")
        return value

    def on_epoch_begin(self, epoch, logs=None):
        self.value = self.checked_value(epoch)
        for variable in self.variables():
            variable.assign(self.value)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_name] = self.value

    def get_config(self):
        if callable(self.schedule):
            raise ValueError(f"{type(self).__name__} with a callable schedule cannot be serialized.")
        return {
            "schedule": self.schedule,
            "start": self.start,
            "end": self.end,
            "epochs": self.epochs,
            "step_size": self.step_size,
            "gamma": self.gamma,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class TemperatureScheduler(_VariableScheduler):
    """Schedules the softmax temperature of a Distiller's KD, DKD and DIST
    terms, per epoch, and logs it as `temperature`.

    The Distiller keeps each temperature in a variable, so the step is not
    re-traced when it changes.

        keras_kd.callbacks.TemperatureScheduler("linear", start=8.0, end=2.0, epochs=30)
        keras_kd.callbacks.TemperatureScheduler(lambda epoch: 4.0 if epoch < 10 else 2.0)

    Args:
        schedule: "constant", "step", "linear", "cosine", "exponential" or a
            callable of the (0-based) epoch (see `schedule_value`).
        start, end, epochs, step_size, gamma: the schedule's constants.
        terms: names of the terms to schedule; None for every term with a
            temperature.
    """

    log_name = "temperature"

    def __init__(self, schedule="constant", start=4.0, end=None, epochs=None, step_size=None, gamma=None, terms=None):
        super().__init__(schedule, start, end, epochs, step_size, gamma)
        self.terms = None if terms is None else [terms] if isinstance(terms, str) else list(terms)

    def value_at(self, epoch):
        value = super().value_at(epoch)
        if value <= 0:
            raise ValueError(f"TemperatureScheduler gives temperature {value} at epoch {epoch + 1}; it must be > 0.")
        return value

    def variables(self):
        temperatures = getattr(self.model, "temperatures", None)
        if not temperatures:
            raise ValueError(
                "TemperatureScheduler needs a keras_kd.Distiller with a temperature term (KD, DKD or DIST)."
            )
        names = self.terms if self.terms is not None else list(temperatures)
        unknown = [name for name in names if name not in temperatures]
        if unknown:
            raise ValueError(f"No temperature term named {unknown}. Terms with a temperature: {list(temperatures)}")
        return [temperatures[name] for name in names]

    def get_config(self):
        return {**super().get_config(), "terms": self.terms}


@keras.saving.register_keras_serializable(package="keras_kd")
class WeightScheduler(_VariableScheduler):
    """Schedules one term's weight (or the supervised loss weight with
    `term="student_loss"`) per epoch, e.g. a warm-up of a feature term, and
    logs it as `<term>_weight`. The weights are variables, so the step is not
    re-traced.

        keras_kd.callbacks.WeightScheduler("dkd_loss", "linear", start=0.0, end=1.0, epochs=20)

    Args:
        term: a term name of the Distiller (`distiller.term_weights`) or
            "student_loss".
        schedule, start, end, epochs, step_size, gamma: as in
            `TemperatureScheduler` (`start` defaults to 0).
    """

    def __init__(self, term, schedule="linear", start=0.0, end=None, epochs=None, step_size=None, gamma=None):
        super().__init__(schedule, start, end, epochs, step_size, gamma)
        if not isinstance(term, str):
            raise ValueError(f"`term` must be a term name or 'student_loss'. Received: term={term!r}")
        self.term = term
        self.log_name = f"{term}_weight"

    def variables(self):
        if self.term == "student_loss":
            variable = getattr(self.model, "student_loss_weight_variable", None)
            if variable is None:
                raise ValueError("WeightScheduler needs a keras_kd.Distiller.")
            return [variable]
        weights = getattr(self.model, "term_weights", None)
        if weights is None or self.term not in weights:
            available = ["student_loss", *(weights or {})]
            raise ValueError(f"No term named {self.term!r} to schedule. Available: {available}")
        return [weights[self.term]]

    @classmethod
    def early_stop(cls, term, fraction, epochs=None, weight=None):
        """ESKD's preset (Cho & Hariharan, ICCV 2019): `term` on for the
        first `fraction` of the run, then 0. Returns a `WeightEarlyStop`."""
        return WeightEarlyStop(term, fraction, epochs=epochs, weight=weight)

    def get_config(self):
        return {"term": self.term, **super().get_config()}


def warmup_epochs(fraction, epochs):
    """Epochs of a warm-up over `fraction` of an `epochs`-long run: the
    product rounded half up, at least 1 (20/240 of 240 epochs is 20, of 30
    is 3, of 6 is 1)."""
    return max(1, math.floor(round(fraction * epochs, 6) + 0.5))


@keras.saving.register_keras_serializable(package="keras_kd")
class WeightWarmUp(WeightScheduler):
    """A linear warm-up of one term's weight over the first `fraction` of
    the run, then the full weight: the `WeightScheduler`
    `("linear", start=weight / W, end=weight, epochs=W)` with
    `W = warmup_epochs(fraction, epochs)`.

    Epoch `e` (counted from 1) trains at `min(e / W, 1) * weight`, as
    mdistiller's DKD and ReviewKD (`min(epoch / warmup, 1.0)`, epochs counted
    from 1, warm-up 20 of 240 CIFAR-100 epochs): the first epoch already at
    `weight / W`, epoch `W` and later at `weight`. `keras_kd.recipes` gives
    DKD and ReviewKD this callback with `fraction=20/240`, so a shorter run
    warms up over the same share of its epochs.

        keras_kd.callbacks.WeightWarmUp("dkd_loss", weight=1.0, fraction=20 / 240)

    Args:
        term: the term's name (a key of `distiller.term_weights`).
        weight: the weight the ramp reaches (>= 0), usually the term's.
        fraction: the share of the run the ramp takes, in (0, 1].
        epochs: the run's length; None takes `fit`'s `epochs` when
            training starts.
    """

    def __init__(self, term, weight, fraction, epochs=None):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"`weight` must be a number >= 0. Received: weight={weight!r}")
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"`fraction` must be a number in (0, 1]. Received: fraction={fraction!r}")
        epochs = validate_positive_int("epochs", epochs, allow_none=True)
        self.weight, self.fraction, self.run_epochs = float(weight), float(fraction), epochs
        length = warmup_epochs(self.fraction, epochs) if epochs else 1
        super().__init__(term, "linear", start=self.weight / length, end=self.weight, epochs=length)

    def on_train_begin(self, logs=None):
        epochs = self.run_epochs or (self.params or {}).get("epochs")
        if not epochs:
            raise ValueError(f"WeightWarmUp for {self.term!r} needs `epochs`: fit(epochs=...) did not give it.")
        self.epochs = warmup_epochs(self.fraction, epochs)
        self.start = self.weight / self.epochs
        super().on_train_begin(logs)

    def get_config(self):
        return {"term": self.term, "weight": self.weight, "fraction": self.fraction, "epochs": self.run_epochs}


@keras.saving.register_keras_serializable(package="keras_kd")
class HintStage(keras.callbacks.Callback):
    """Two-stage FitNets (Romero et al., "FitNets: Hints for Thin Deep Nets",
    ICLR 2015) in one `fit`: for the first `epochs` epochs only the hint
    terms train (the student up to its guided layer, and the connector,
    the paper's regressor); then the hint terms are switched off and the
    other terms and the supervised loss get their configured weights back
    (the paper's second stage, KD on the whole student).

    The weights are the Distiller's variables, so the switch does not
    re-trace the step. Parts of the student that no hint term reaches get
    zero gradients in stage one and do not move.

    Args:
        epochs: length of stage one (>= 1).
        hint_terms: names of the hint terms; None takes every term that
            compares layers (`teacher_layer` is not None).
        keep_hints: keep the hint terms on in stage two.
    """

    def __init__(self, epochs, hint_terms=None, keep_hints=False):
        super().__init__()
        self.epochs = validate_positive_int("epochs", epochs)
        self.hint_terms = None if hint_terms is None else [hint_terms] if isinstance(hint_terms, str) else list(hint_terms)
        self.keep_hints = bool(keep_hints)
        self.stage = None
        self._configured = None

    def _hints(self):
        terms = getattr(self.model, "terms", None)
        if terms is None:
            raise ValueError("HintStage needs a keras_kd.Distiller.")
        names = [term.name for term in terms]
        hints = self.hint_terms if self.hint_terms is not None else [t.name for t in terms if t.teacher_layer]
        unknown = [name for name in hints if name not in names]
        if unknown or not hints:
            raise ValueError(f"HintStage found no hint terms {unknown or ''}; the Distiller's terms are {names}.")
        return hints

    def on_train_begin(self, logs=None):
        hints = self._hints()
        model = self.model
        self._configured = {name: float(keras.ops.convert_to_numpy(v)) for name, v in model.term_weights.items()}
        self._configured["student_loss"] = float(keras.ops.convert_to_numpy(model.student_loss_weight_variable))
        self._variables = {**model.term_weights, "student_loss": model.student_loss_weight_variable}
        self._hints_found = hints

    def on_epoch_begin(self, epoch, logs=None):
        stage = 1 if epoch < self.epochs else 2
        if stage == self.stage:
            return
        self.stage = stage
        for name, variable in self._variables.items():
            is_hint = name in self._hints_found
            if stage == 1:
                variable.assign(self._configured[name] if is_hint else 0.0)
            else:
                variable.assign(0.0 if is_hint and not self.keep_hints else self._configured[name])

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["hint_stage"] = self.stage

    def on_train_end(self, logs=None):
        for name, variable in self._variables.items():  # leave the Distiller as configured
            variable.assign(self._configured[name])

    def get_config(self):
        return {"epochs": self.epochs, "hint_terms": self.hint_terms, "keep_hints": self.keep_hints}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class TeacherCache(keras.callbacks.Callback):
    """Runs the teacher only in the first epoch of a `Distiller.fit`: its
    outputs (and every feature the terms read) are stored by batch position
    and replayed in the later epochs, so those cost about a plain
    `student.fit`.

    Only valid when every epoch yields the same batches in the same order:
    `fit` refuses, before training, a `tf.data` pipeline with shuffling or
    random ops (augmentation) and array inputs without `shuffle=False`; and
    each replayed batch's inputs are compared with a fingerprint stored in
    the first epoch, so data that change in a way the pipeline does not show
    (a generator that reshuffles, a noisy `numpy_function`) stop `fit` with
    a ValueError naming the batch instead of training on wrong outputs. The
    cache lives in memory (`steps x batch x features` float32 values, at
    most `budget_bytes`) for one `fit` call. The cached step runs without
    XLA even if the Distiller was compiled with `jit_compile=True`.

        distiller.fit(train_ds, epochs=30, callbacks=[keras_kd.callbacks.TeacherCache()])

    Args:
        budget_bytes: the most memory the cache may take.
    """

    # The replay check reads one flag per batch: Keras runs it in a worker
    # thread, so the step does not wait for it (its error surfaces a batch later).
    async_safe = True

    def __init__(self, budget_bytes=2 << 30):
        super().__init__()
        if not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise ValueError(f"`budget_bytes` must be a positive integer. Received: budget_bytes={budget_bytes!r}")
        self.budget_bytes = budget_bytes
        self.cache = None
        self._distiller = None
        self._epoch = 0

    def attach(self, distiller, x, fit_kwargs):
        """Called by `Distiller.fit` before training: checks the data and
        allocates the cache (TensorFlow backend only)."""
        from keras_kd import backend, cache
        from keras_kd.backend import num_replicas

        backend.require_tensorflow("TeacherCache (it replays features with tf.cond inside the step)")
        if num_replicas() > 1:
            raise ValueError("TeacherCache runs on one device; it does not support distribution strategies.")
        batch_size, steps = cache.check_deterministic(x, fit_kwargs)
        self.cache = cache.FeatureCache(distiller.teacher_feature_shapes(), batch_size, steps, self.budget_bytes)
        self._distiller = distiller
        distiller.teacher_cache = self.cache
        # Under XLA the cached step compiled for tens of seconds in each of the first two epochs
        # (measured on CPU), more than the teacher passes it saves: run it without XLA.
        self._jit_compile = distiller.jit_compile
        if self._jit_compile:
            distiller.jit_compile = False
        distiller.make_train_function(force=True)  # re-trace the step with the cache in it

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self.cache is not None:
            self.cache.start_epoch()

    def on_train_batch_end(self, batch, logs=None):
        # Replayed batches are fingerprint-checked inside the step (keras_kd.cache); stop at the first mismatch.
        cache = self.cache
        if cache is not None and self._epoch > 0:
            cache.check(self._epoch)  # `Distiller.fit` releases the cache when this raises

    def on_epoch_end(self, epoch, logs=None):
        if self.cache is not None:
            self.cache.end_epoch()

    def on_train_end(self, logs=None):
        self.release()

    def release(self):
        """Detach the cache from the Distiller and restore its step (also
        when `fit` stops on an error: `Distiller.fit` calls it then)."""
        if self._distiller is not None:
            self._distiller.teacher_cache = None
            if self._jit_compile:
                self._distiller.jit_compile = True
            self._distiller.make_train_function(force=True)
        self.cache, self._distiller = None, None

    def get_config(self):
        return {"budget_bytes": self.budget_bytes}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class WeightEarlyStop(WeightScheduler):
    """Early-stopped distillation (ESKD; Cho & Hariharan, "On the Efficacy
    of Knowledge Distillation", ICCV 2019): one term at its weight for the
    first `fraction` of the run, then 0, so the rest of the training follows
    the labels (and any other terms) alone. Cho & Hariharan find that a
    small student gains from the teacher early in training but is held back
    by it later; their stopping epochs are not reproduced here (the
    fraction is yours).

    It is the `WeightScheduler("step", start=weight, step_size=S, gamma=0)`
    with `S = warmup_epochs(fraction, epochs)` (`fraction * epochs` rounded
    half up, at least 1): epochs 1..S (counted from 1) train at `weight`,
    later epochs at 0. `fraction=1` never stops. Also
    `WeightScheduler.early_stop(term, fraction, epochs)`.

        keras_kd.callbacks.WeightEarlyStop("kd_loss", fraction=0.5)  # KD for the first half of fit's epochs

    Args:
        term: a term name of the Distiller (`distiller.term_weights`) or
            "student_loss".
        fraction: the share of the run with the term on, in (0, 1].
        epochs: the run's length; None takes `fit`'s `epochs` when
            training starts.
        weight: the weight while on (>= 0); None takes the term's
            configured weight (`Term.weight`, or the Distiller's
            `student_loss_weight`) when training starts.
    """

    def __init__(self, term, fraction, epochs=None, weight=None):
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"`fraction` must be a number in (0, 1]. Received: fraction={fraction!r}")
        epochs = validate_positive_int("epochs", epochs, allow_none=True)
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0):
            raise ValueError(f"`weight` must be None or a number >= 0. Received: weight={weight!r}")
        self.fraction, self.run_epochs = float(fraction), epochs
        self.weight = None if weight is None else float(weight)
        stop = warmup_epochs(self.fraction, epochs) if epochs else 1
        super().__init__(term, "step", start=self.weight or 0.0, step_size=stop, gamma=0.0)

    @property
    def stop_epoch(self):
        """The last epoch (counted from 1) with the term on."""
        return self.step_size

    def on_train_begin(self, logs=None):
        epochs = self.run_epochs or (self.params or {}).get("epochs")
        if not epochs:
            raise ValueError(f"WeightEarlyStop for {self.term!r} needs `epochs`: fit(epochs=...) did not give it.")
        self.step_size = warmup_epochs(self.fraction, epochs)
        self.variables()  # a clear error for an unknown term
        if self.weight is not None:
            self.start = self.weight
        elif self.term == "student_loss":
            self.start = float(self.model.student_loss_weight)
        else:
            self.start = float(next(term.weight for term in self.model.terms if term.name == self.term))
        super().on_train_begin(logs)

    def get_config(self):
        return {"term": self.term, "fraction": self.fraction, "epochs": self.run_epochs, "weight": self.weight}



@keras.saving.register_keras_serializable(package="keras_kd")
class TeacherCheckpoints(keras.callbacks.Callback):
    """Saves the model being trained, usually a teacher, as `.keras` files
    at chosen epochs, to distil later from an early-stopped teacher (Cho &
    Hariharan, "On the Efficacy of Knowledge Distillation", ICCV 2019: a
    teacher stopped early in its training is often the better teacher for
    a small student, although it is less accurate).

        teacher.fit(train, epochs=60, callbacks=[keras_kd.callbacks.TeacherCheckpoints([15, 30], "ckpt")])
        early = keras.saving.load_model("ckpt/teacher_epoch15.keras", compile=False)

    `<folder>/<prefix>_epoch<e>.keras` is written at the end of epoch `e`,
    counted from 1 as Keras prints it (with `initial_epoch`, the absolute
    epoch). With a `Distiller` (or any model with a `student`) the student
    is saved. `paths` maps each saved epoch to its file; epochs the run
    does not reach are not saved, and a warning names them when `fit` ends.

    Args:
        epochs: an int >= 1 or a non-empty list of them.
        folder: where the files go (created if missing).
        prefix: the start of each file name.
    """

    def __init__(self, epochs, folder=".", prefix="teacher"):
        super().__init__()
        values = [epochs] if not isinstance(epochs, (list, tuple)) else list(epochs)
        bad = [e for e in values if isinstance(e, bool) or not isinstance(e, int) or e < 1]
        if not values or bad:
            raise ValueError(f"`epochs` must be an int >= 1 or a non-empty list of them. Received: epochs={epochs!r}")
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ValueError(f"`prefix` must be a non-empty file-name prefix. Received: prefix={prefix!r}")
        self.epochs = sorted(set(values))
        self.folder = str(folder)
        self.prefix = prefix
        self.paths = {}

    def path(self, epoch):
        import os

        return os.path.join(self.folder, f"{self.prefix}_epoch{epoch}.keras")

    def on_epoch_end(self, epoch, logs=None):
        import os

        if epoch + 1 in self.epochs:
            os.makedirs(self.folder, exist_ok=True)
            getattr(self.model, "student", self.model).save(self.path(epoch + 1))
            self.paths[epoch + 1] = self.path(epoch + 1)

    def on_train_end(self, logs=None):
        missing = [e for e in self.epochs if e not in self.paths]
        if missing:
            import warnings

            warnings.warn(f"TeacherCheckpoints: training ended before epochs {missing}; no file for them.", stacklevel=2)

    def get_config(self):
        return {"epochs": self.epochs, "folder": self.folder, "prefix": self.prefix}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
