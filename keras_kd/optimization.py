"""Quantization- and pruning-aware distillation with
tensorflow-model-optimization (tfmot).

tfmot 0.8 wraps only tf_keras models and needs `TF_USE_LEGACY_KERAS=1` set
before TensorFlow is imported (`require_legacy_keras` checks it). The flow:

    student_2 = keras_kd.legacy.to_tf_keras(student)          # a trained float student
    qat = quantization_aware(student_2)                        # fake-quant wrappers
    distiller = keras_kd.legacy.Distiller(teacher, qat, terms=[...])
    distiller.compile(...); distiller.fit(train_ds, epochs=2)
    keras_kd.export.to_tflite(qat, "student_int8.tflite", quantize="int8", representative_data=x)

    pruned = pruning_aware(student_2, target_sparsity=0.8, end_step=steps)
    distiller = keras_kd.legacy.Distiller(teacher, pruned, terms=[...])
    distiller.compile(...); distiller.fit(train_ds, epochs=3, callbacks=pruning_callbacks())
    final = strip_pruning(pruned); sparsity(final)             # -> about 0.8
"""

import os

import numpy as np

from keras_kd import backend, extras

FEATURE = "Quantization- and pruning-aware distillation (tensorflow-model-optimization)"


def require_legacy_keras():
    """Imports tfmot, or explains how to enable it (a clear error instead of
    tfmot's failure deep inside on a Keras 3 `tf.keras`)."""
    backend.require_tensorflow(FEATURE)
    tf_keras = extras.require("tf_keras", FEATURE)
    import tensorflow as tf

    if tf.keras is not tf_keras and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError(
            "tensorflow-model-optimization 0.8 wraps only tf_keras (Keras 2) models: set the environment "
            "variable TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported (e.g. at the top of the script "
            "or in the shell), then convert the student with keras_kd.legacy.to_tf_keras."
        )
    return extras.require("tensorflow_model_optimization", FEATURE)


def _as_tf_keras(model):
    import tf_keras

    from keras_kd.legacy import to_tf_keras

    return model if isinstance(model, tf_keras.Model) else to_tf_keras(model)


def quantization_aware(student):
    """The student wrapped for quantization-aware training (8-bit weights
    and activations simulated with fake-quant ops, BatchNorm folded), via
    `tfmot.quantization.keras.quantize_model`. A Keras 3 student is first
    rebuilt with `keras_kd.legacy.to_tf_keras`."""
    tfmot = require_legacy_keras()
    student = _as_tf_keras(student)
    try:
        return tfmot.quantization.keras.quantize_model(student)
    except Exception as error:
        layers = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in student.layers)
        raise ValueError(
            f"tensorflow-model-optimization cannot quantize {student.name!r}: {error}\nLayers: {layers}"
        ) from error


def pruning_aware(student, target_sparsity=0.5, begin_step=0, end_step=1000, initial_sparsity=0.0, frequency=100):
    """The student wrapped by `tfmot.sparsity.keras.prune_low_magnitude`
    with a polynomial-decay schedule from `initial_sparsity` at `begin_step`
    to `target_sparsity` at `end_step`, pruning every `frequency` steps.
    Train it with `pruning_callbacks()` and `strip_pruning` it before export."""
    if not 0.0 <= initial_sparsity <= target_sparsity < 1.0:
        raise ValueError(
            "Sparsities must satisfy 0 <= initial_sparsity <= target_sparsity < 1. Received: "
            f"initial_sparsity={initial_sparsity}, target_sparsity={target_sparsity}"
        )
    if not 0 <= begin_step < end_step:
        raise ValueError(f"Need 0 <= begin_step < end_step. Received: begin_step={begin_step}, end_step={end_step}")
    tfmot = require_legacy_keras()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=initial_sparsity,
        final_sparsity=target_sparsity,
        begin_step=begin_step,
        end_step=end_step,
        frequency=frequency,
    )
    return tfmot.sparsity.keras.prune_low_magnitude(_as_tf_keras(student), pruning_schedule=schedule)


def pruning_callbacks(log_dir=None):
    """The callbacks a pruning-aware `fit` needs: the pruning-step update
    (required) and, with `log_dir`, TensorBoard sparsity summaries."""
    tfmot = require_legacy_keras()
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    if log_dir:
        callbacks.append(tfmot.sparsity.keras.PruningSummaries(log_dir=log_dir))
    return callbacks


def strip_pruning(model):
    """The pruned model without its pruning wrappers (what to export)."""
    return require_legacy_keras().sparsity.keras.strip_pruning(model)


def sparsity(model):
    """Fraction of zero weights in the kernels (the prunable weights) of `model`."""
    zeros = total = 0
    for layer in model.layers:
        for weight in getattr(layer, "weights", []):
            if "kernel" in weight.name:
                values = np.asarray(weight)
                zeros += int(np.sum(values == 0))
                total += values.size
    return zeros / total if total else 0.0
