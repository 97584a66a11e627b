"""The epoch progress that `keras-kd distill` shows for each training stage.

Keras' own progress bar (`fit(verbose=1)`) redraws itself with ANSI escapes
on every batch: 180 epochs made about 200 kB of output, ANSI included even
when redirected to a file, which buried the `[1/5]` stage lines. The job
fits with `verbose=0` and this callback instead:

- on a terminal, one line per stage, rewritten in place (a carriage return,
  no ANSI escape) at most twice a second: epoch, step and running metrics;
  it ends showing the last epoch with its validation metrics;
- otherwise (a pipe, a file, a CI log), a plain line every `every` epochs
  and for the last one (about ten per stage), plus any epoch that ends a
  minute or more after the previous line, so a slow run still shows life.
"""

import math
import shutil
import sys
import threading
import time

import keras

from keras_kd.validation import validate_positive_int

# Terms' weights (`<term>_weight`) are logged for the schedules; the plot and report show them.
_HIDDEN_SUFFIX = "_weight"
_SHOWN_VALIDATION = ("val_loss", "val_accuracy")
_FIRST = ("loss", "accuracy", "val_accuracy", "val_loss")


def format_logs(logs):
    """`loss 0.4123  accuracy 0.9512  val_accuracy 0.9467  val_loss 0.5012
    kd_loss 0.3120 ...`: the loss, the accuracies, then each term's value
    (validation values other than loss and accuracy and the terms' weights
    are left out)."""
    shown = [
        (key, value)
        for key, value in (logs or {}).items()
        if not key.endswith(_HIDDEN_SUFFIX) and (not key.startswith("val_") or key in _SHOWN_VALIDATION)
    ]
    # What matters most first (a terminal's line is cut at its width), then the terms in Keras' order.
    shown.sort(key=lambda item: _FIRST.index(item[0]) if item[0] in _FIRST else len(_FIRST))
    return "  ".join(f"{key} {_number(value)}" for key, value in shown)


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.4f}"


class StageProgress(keras.callbacks.Callback):
    """One stage's progress on `stream` (default `sys.stdout`), for `fit(verbose=0)`.

    Args:
        stream: where to write; its `isatty()` picks the in-place line.
        every: epochs between lines when not on a terminal; None picks
            about ten lines per stage (`ceil(epochs / 10)`).
        indent: text before each line (the job's stage lines are indented by 6).
    """

    # The batch hook only reads the clock until it redraws (twice a second at most), so Keras
    # may call it from its worker thread: a synchronous hook would make Keras run every other
    # callback's batch hook synchronously too (see TerminateOnNonFiniteTerm).
    async_safe = True
    refresh_seconds = 0.5
    heartbeat_seconds = 60.0

    def __init__(self, stream=None, every=None, indent="      "):
        super().__init__()
        self.stream = stream
        self.every = validate_positive_int("every", every, allow_none=True)
        self.indent = indent

    @property
    def _out(self):
        return self.stream if self.stream is not None else sys.stdout

    def on_train_begin(self, logs=None):
        out = self._out
        self._live = bool(getattr(out, "isatty", lambda: False)())
        self._epochs = self.params.get("epochs") or 1
        self._steps = self.params.get("steps")
        self._every = self.every or max(1, math.ceil(self._epochs / 10))
        self._start = self._last_line = self._last_draw = time.time()
        self._width = 0
        self._epoch = 0
        self._lock = threading.Lock()  # Keras' worker threads may run two batch hooks at once

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self._live or time.time() - self._last_draw < self.refresh_seconds:
            return
        steps = f"/{self._steps}" if self._steps else ""
        text = f"{self._epoch_label(self._epoch)}  step {batch + 1}{steps}  {format_logs(logs)}"
        with self._lock:
            if time.time() - self._last_draw >= self.refresh_seconds:
                self._draw(text)

    def on_epoch_end(self, epoch, logs=None):
        text = f"{self._epoch_label(epoch)}  {format_logs(logs)}  ({time.time() - self._start:.1f}s)"
        if self._live:
            with self._lock:
                self._draw(text)
            return
        number = epoch + 1
        now = time.time()
        if number % self._every == 0 or number == self._epochs or now - self._last_line >= self.heartbeat_seconds:
            self._out.write(f"{self.indent}{text}\n")
            self._out.flush()
            self._last_line = now

    def on_train_end(self, logs=None):
        if self._live and self._width:
            self._out.write("\n")
            self._out.flush()

    def _epoch_label(self, epoch):
        digits = len(str(self._epochs))
        return f"epoch {epoch + 1:>{digits}}/{self._epochs}"

    def _draw(self, text):
        # Within the terminal's width: a wrapped line cannot be rewritten by a carriage return.
        columns = shutil.get_terminal_size().columns
        line = f"{self.indent}{text}"[: max(20, columns - 1)]
        self._out.write("\r" + line.ljust(self._width))
        self._out.flush()
        self._width = len(line)
        self._last_draw = time.time()
