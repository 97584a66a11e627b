"""MirroredStrategy on two logical CPU devices gives the single-device step.

Logical devices must be configured before TensorFlow initialises, so the
check runs in a fresh interpreter.
"""

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    import keras_kd
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data[:128] / 16).astype("float32"), data.target[:128]

    def model(hidden, name, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((64,))
        h = keras.layers.Dense(hidden, activation="relu", name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name=name)

    def run(strategy):
        with strategy.scope():
            teacher, student = model(32, "teacher", 1), model(8, "student", 2)
            keras.utils.set_random_seed(3)
            distiller = keras_kd.Distiller(teacher, student, [
                keras_kd.Term(keras_kd.losses.KDLoss(), weight=0.9),
                keras_kd.Term(keras.losses.MeanSquaredError(), teacher_layer="hidden",
                              student_layer="hidden", connector="linear"),
            ], student_loss_weight=0.1)
            distiller.compile(keras.optimizers.SGD(0.5),
                              keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = distiller.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        return history.history, [np.array(v).tolist() for v in distiller.trainable_variables]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    print(json.dumps({"single": run(tf.distribute.get_strategy()), "mirrored": run(mirrored)}))
    """
)


def test_mirrored_strategy_matches_single_device():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    (single_logs, single_weights), (mirrored_logs, mirrored_weights) = runs["single"], runs["mirrored"]
    import numpy as np

    assert set(single_logs) == set(mirrored_logs) >= {"loss", "kd_loss", "mean_squared_error"}
    for key, values in single_logs.items():
        np.testing.assert_allclose(mirrored_logs[key], values, rtol=1e-4, atol=1e-6)
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-4, atol=1e-5)
