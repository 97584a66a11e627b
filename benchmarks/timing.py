"""Epoch timing shared by the speed benchmarks. Imports Keras only (not
TensorFlow), so the JAX run on the GPU machine, which has no TensorFlow,
uses it too."""

import statistics
import time

import keras


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of every epoch, in `seconds`."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def after_first(seconds, statistic="min"):
    """The epochs after the first (warm-up) reduced by `statistic` ("min" or "median")."""
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return min(timed) if statistic == "min" else statistics.median(timed)
