"""MultiWorkerMirroredStrategy: two worker processes on loopback give the
single-process step.

Each worker is a fresh interpreter with its own `TF_CONFIG` (a cluster of two
workers on free localhost ports); they all-reduce gradients and metrics over
gRPC. The same job also runs once without a strategy, on the same global
batch, and the test compares the logs and the trained weights.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from multi_worker import free_ports  # noqa: E402

GLOBAL_BATCH = 64
TIMEOUT = 300  # seconds for the whole run: a hung collective fails the test

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    mode, global_batch = sys.argv[1], int(sys.argv[2])
    if mode == "worker":
        # Created first, before any other TensorFlow op, as MWMS requires.
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(timeout_seconds=120)
        )
    else:
        strategy = tf.distribute.get_strategy()

    import keras, numpy as np
    import keras_kd
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.data[:256] / 16).astype("float32"), data.target[:256].astype("int32")

    def model(hidden, name, seed, regularizer=None):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((64,))
        h = keras.layers.Dense(hidden, activation="relu", name="hidden", kernel_regularizer=regularizer)(inputs)
        return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h), name=name)

    def batches(*arrays):
        # The global batch, in file order; each worker reads its half of every batch.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return tf.data.Dataset.from_tensor_slices(arrays).batch(global_batch).with_options(options)

    def result(distiller, history, evaluate=None):
        weights = {f"student/{v.path}": v for v in distiller.student.trainable_variables}
        for name, connector in distiller.connectors.items():
            weights.update({f"connector/{v.path}": v for v in connector.trainable_variables})
        assert len(weights) == len(distiller.trainable_variables)
        return {
            "logs": history.history,
            "evaluate": evaluate,
            "weights": {path: np.array(v).tolist() for path, v in weights.items()},
        }

    # KD on the logits and a feature term through a learnable connector.
    dataset = batches(x, y)
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
    teacher_before = [np.array(v) for v in teacher.weights]
    history = distiller.fit(dataset, epochs=3, verbose=0)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(teacher_before, teacher.weights))
    labelled = result(distiller, history, distiller.evaluate(dataset, verbose=0, return_dict=True))

    # No labels: the student loss is the student's L2 penalty alone.
    with strategy.scope():
        student = model(8, "student", 2, keras.regularizers.L2(0.05))
        distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss()])
        distiller.compile(keras.optimizers.SGD(0.5))
    unlabelled = result(distiller, distiller.fit(batches(x), epochs=2, verbose=0))

    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "labelled": labelled, "unlabelled": unlabelled}))
    """
)


def _run_all(jobs, folder):
    """Start every job {name: (args, env)} at once; wait for all to exit 0 and
    return {name: the JSON line it printed}. The first failure, or the timeout,
    kills the others: a worker left alone would wait on its peer's collective."""
    processes, outputs = {}, {}
    try:
        for name, (args, env) in jobs.items():
            stem = folder / name.replace(" ", "_")
            outputs[name] = (stem.with_suffix(".out"), stem.with_suffix(".err"))
            with open(outputs[name][0], "w") as out, open(outputs[name][1], "w") as err:
                processes[name] = subprocess.Popen(
                    args, stdout=out, stderr=err, text=True, env=env
                )
        deadline = time.monotonic() + TIMEOUT
        while any(p.poll() is None for p in processes.values()):
            failed = [
                name for name, p in processes.items() if p.poll() not in (None, 0)
            ]
            if failed:
                name = failed[0]
                raise AssertionError(
                    f"{name} exited {processes[name].returncode}:\n{outputs[name][1].read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                running = [name for name, p in processes.items() if p.poll() is None]
                raise AssertionError(
                    f"{running} still running after {TIMEOUT}s (hung collective?)"
                )
            time.sleep(0.1)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, process in processes.items():
        assert process.returncode == 0, (
            f"{name} exited {process.returncode}:\n{outputs[name][1].read_text()[-3000:]}"
        )
    return {
        name: json.loads(outputs[name][0].read_text().strip().splitlines()[-1])
        for name in processes
    }


def _assert_close(actual, expected, what):
    # rtol 1e-5 / atol 1e-6 held with room to spare: the largest gaps seen
    # were 2.4e-7 on a logged loss and 3e-8 on a weight.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=what)


def test_two_workers_match_single_process(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["KERAS_BACKEND"] = "tensorflow"  # tf.distribute: whatever backend this process runs
    jobs = {
        f"worker {index}": (
            [sys.executable, "-c", SCRIPT, "worker", str(GLOBAL_BATCH)],
            {
                **env,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            },
        )
        for index in range(2)
    }
    jobs["single process"] = (
        [sys.executable, "-c", SCRIPT, "single", str(GLOBAL_BATCH)],
        env,
    )
    results = _run_all(jobs, tmp_path)

    single = results["single process"]
    workers = [results["worker 0"], results["worker 1"]]
    assert single["replicas"] == 1
    assert [worker["replicas"] for worker in workers] == [2, 2]
    expected_logs = {
        "labelled": {"loss", "student_loss", "kd_loss", "mean_squared_error"},
        "unlabelled": {"loss", "student_loss", "kd_loss"},
    }
    for job, log_names in expected_logs.items():
        logs, weights = single[job]["logs"], single[job]["weights"]
        assert set(logs) == log_names
        assert {path.split("/")[0] for path in weights} == (
            {"student", "connector"} if job == "labelled" else {"student"}
        )
        for index, worker in enumerate(workers):
            where = f"{job}, worker {index}"
            assert set(worker[job]["logs"]) == set(logs)
            for key, values in logs.items():
                _assert_close(worker[job]["logs"][key], values, f"{where}: log {key}")
            if single[job]["evaluate"] is not None:
                assert set(worker[job]["evaluate"]) == set(logs)
                for key, value in single[job]["evaluate"].items():
                    _assert_close(
                        worker[job]["evaluate"][key], value, f"{where}: evaluate {key}"
                    )
            assert set(worker[job]["weights"]) == set(weights)
            for path, value in weights.items():
                _assert_close(worker[job]["weights"][path], value, f"{where}: {path}")
                # All-reduced gradients: the workers' copies are bit for bit equal.
                np.testing.assert_array_equal(
                    worker[job]["weights"][path], workers[0][job]["weights"][path]
                )
