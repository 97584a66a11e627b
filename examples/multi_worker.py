"""Distill on several workers with tf.distribute.MultiWorkerMirroredStrategy.

An `mlp_small` teacher, trained once, is distilled into an `mlp_tiny` student
on scikit-learn's digits (KD, T = 4). Every worker runs this script: it reads
its place in the cluster from `TF_CONFIG`, builds the teacher, the student
and the `Distiller` inside `strategy.scope()`, and trains on its share of
every global batch (the dataset is sharded by data); gradients and metrics
are all-reduced over gRPC, so every worker ends with the same student.

One machine, two workers on loopback ports (this script starts them; about
40 s of CPU time in all):

    python examples/multi_worker.py --local-workers 2

A real cluster: train the teacher once, to storage every worker can read,

    python examples/multi_worker.py --train-teacher /shared/teacher.keras

then start the script once per worker, each with the same cluster and its
own index (worker 0 is the chief, the only one that writes checkpoints):

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --teacher /shared/teacher.keras \\
            --backup-dir /shared/backup
    # on host1 the same with "index": 1

Each worker prints its result as one JSON line. `--global-batch` is the
batch of the whole cluster (each worker reads global batch / workers).
Without `TF_CONFIG` and `--local-workers` the job runs in one process.
"""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WORKER_TIMEOUT = 600  # seconds; a worker whose peer died would wait on it


def train_teacher(path, epochs=30, seed=0):
    """Train the `mlp_small` teacher on the digits train half (no strategy) and
    save it to `path`. Returns its test accuracy."""
    import keras
    import numpy as np

    import keras_kd

    data = keras_kd.datasets.load("digits", batch_size=64, seed=seed)
    keras.utils.set_random_seed(seed)
    teacher = keras_kd.models.get(
        "mlp_small", data.input_shape, data.num_classes, name="teacher"
    )
    teacher.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # shuffle=False: the pipeline shuffles (seeded) by itself.
    teacher.fit(data.train, epochs=epochs, verbose=0, shuffle=False)
    teacher.save(path)
    x_test, y_test = data.numpy("test")
    return float(np.mean(np.argmax(teacher.predict(x_test, verbose=0), -1) == y_test))


def run_worker(
    teacher_path,
    epochs=15,
    global_batch=128,
    seed=0,
    backup_dir=None,
    learning_rate=2e-2,
):
    """One worker's (or the single process's) distillation job; returns its result."""
    import tensorflow as tf

    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if tf_config:
        # Before any other TensorFlow op: the strategy configures the runtime.
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config["task"]
    else:
        strategy = tf.distribute.get_strategy()
        task = {"type": "worker", "index": 0}
    # Imported only now: it imports Keras, after the strategy configured TensorFlow.
    from keras_kd import backend

    # On JAX or PyTorch, Keras ignores the strategy: each worker would train alone.
    backend.require_tensorflow("tf.distribute (this multi-worker example)")
    chief = task["type"] == "chief" or (
        task["type"] == "worker"
        and task["index"] == 0
        and "chief" not in tf_config.get("cluster", {})
    )

    import keras
    import numpy as np

    import keras_kd

    class ChiefBackupAndRestore(keras.callbacks.BackupAndRestore):
        """Every worker restores from `backup_dir`; only the chief writes it
        (Keras 3's callback has no notion of workers)."""

        def _save_model(self):
            if chief:
                super()._save_model()

        def on_train_end(self, logs=None):
            if chief:
                super().on_train_end(logs)

    # The global batch, in one seeded order on every worker (each reshuffled
    # alike every epoch); each worker keeps its part of every batch.
    data = keras_kd.datasets.load("digits", batch_size=global_batch, seed=seed)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    train = data.train.with_options(options)

    with strategy.scope():
        teacher = keras.saving.load_model(teacher_path)
        keras.utils.set_random_seed(seed + 1)
        student = keras_kd.models.get(
            "mlp_tiny", data.input_shape, data.num_classes, name="student"
        )
        distiller = keras_kd.Distiller(
            teacher,
            student,
            terms=[keras_kd.Term(keras_kd.losses.KDLoss(temperature=4.0), weight=0.9)],
            student_loss_weight=0.1,
        )
        distiller.compile(
            keras.optimizers.Adam(learning_rate),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    callbacks = [ChiefBackupAndRestore(backup_dir)] if backup_dir else []
    start = time.time()
    history = distiller.fit(
        train, epochs=epochs, verbose=0, callbacks=callbacks, shuffle=False
    )
    seconds = time.time() - start

    x_test, y_test = data.numpy("test")
    predictions = np.argmax(student(x_test, training=False), axis=-1)
    weights = np.concatenate([w.ravel() for w in student.get_weights()])
    return {
        "task": task,
        "replicas": strategy.num_replicas_in_sync,
        "epochs_run": len(history.history.get("loss", [])),
        "final_logs": {key: values[-1] for key, values in history.history.items()},
        "test_accuracy": float(np.mean(predictions == y_test)),
        "weights_sha256": hashlib.sha256(weights.tobytes()).hexdigest(),
        "seconds": seconds,
    }


def free_ports(count):
    """`count` ports free on localhost now, for the loopback workers' TF_CONFIG."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def launch_local_workers(count, worker_args, folder):
    """Start `count` workers of this script on loopback ports and wait for all;
    the first failure kills the others. Returns their JSON results."""
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(count)]}
    processes, logs = [], []
    try:
        for index in range(count):
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(tf_config),
                "TF_CPP_MIN_LOG_LEVEL": "3",
            }
            logs.append(
                (
                    os.path.join(folder, f"worker{index}.out"),
                    os.path.join(folder, f"worker{index}.err"),
                )
            )
            with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, __file__, *worker_args],
                        stdout=out,
                        stderr=err,
                        env=env,
                    )
                )
        deadline = time.monotonic() + WORKER_TIMEOUT
        while any(p.poll() is None for p in processes):
            failed = [i for i, p in enumerate(processes) if p.poll() not in (None, 0)]
            if failed or time.monotonic() > deadline:
                index = (
                    failed[0]
                    if failed
                    else next(i for i, p in enumerate(processes) if p.poll() is None)
                )
                with open(logs[index][1]) as err:
                    tail = err.read()[-3000:]
                raise RuntimeError(
                    f"worker {index} {'failed' if failed else 'timed out'}:\n{tail}"
                )
            time.sleep(0.2)
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
    for index, p in enumerate(processes):
        if p.returncode != 0:
            with open(logs[index][1]) as err:
                raise RuntimeError(
                    f"worker {index} exited {p.returncode}:\n{err.read()[-3000:]}"
                )
    results = []
    for out_path, _ in logs:
        with open(out_path) as out:
            results.append(json.loads(out.read().strip().splitlines()[-1]))
    return results, cluster


def main(
    local_workers=2, epochs=15, global_batch=128, seed=0, teacher=None, backup_dir=None
):
    """Train the teacher (unless given), distill on `local_workers` loopback
    workers, print and return {"teacher": acc, "distilled student": acc,
    "weights agree": bool}."""
    from keras_kd import backend

    backend.require_tensorflow("tf.distribute (this multi-worker example)")  # before training anything
    with tempfile.TemporaryDirectory() as folder:
        results = {}
        if teacher is None:
            teacher = os.path.join(folder, "teacher.keras")
            start = time.time()
            results["teacher"] = train_teacher(teacher, seed=seed)
            print(
                f"[teacher] mlp_small, test accuracy {results['teacher']:.3f} ({time.time() - start:.1f}s)"
            )
        args = [
            "--teacher",
            teacher,
            "--epochs",
            str(epochs),
            "--global-batch",
            str(global_batch),
            "--seed",
            str(seed),
        ]
        if backup_dir:
            args += ["--backup-dir", backup_dir]
        start = time.time()
        workers, cluster = launch_local_workers(local_workers, args, folder)
        print(
            f"[distillation] {local_workers} workers on {', '.join(cluster['worker'])}, global batch "
            f"{global_batch} ({global_batch // local_workers} per worker), {time.time() - start:.1f}s"
        )
        for worker in workers:
            logs = ", ".join(
                f"{key} {value:.4f}"
                for key, value in sorted(worker["final_logs"].items())
            )
            print(
                f"  worker {worker['task']['index']}: {worker['replicas']} replicas in sync, "
                f"{worker['epochs_run']} epochs in {worker['seconds']:.1f}s, last epoch: {logs}"
            )
        digests = {worker["weights_sha256"] for worker in workers}
        results["weights agree"] = len(digests) == 1
        results["distilled student"] = workers[0]["test_accuracy"]
        print(
            f"student weights identical on every worker: {results['weights agree']} (sha256 {min(digests)[:16]}...)"
        )
        print(
            f"[distilled student] mlp_tiny, test accuracy {results['distilled student']:.3f}"
        )
        return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--local-workers", type=int, default=0, help="start this many loopback workers"
    )
    parser.add_argument(
        "--teacher", help="a saved teacher (.keras); trained first if missing"
    )
    parser.add_argument(
        "--train-teacher",
        metavar="PATH",
        help="only train the teacher and save it to PATH",
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--global-batch", type=int, default=128, help="batch of the whole cluster"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backup-dir", help="BackupAndRestore directory (written by the chief only)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    if args.train_teacher:
        print(
            f"teacher test accuracy {train_teacher(args.train_teacher, seed=args.seed):.3f}, saved to {args.train_teacher}"
        )
    elif args.local_workers:
        if os.environ.get("TF_CONFIG"):
            sys.exit("--local-workers starts its own workers: unset TF_CONFIG")
        main(
            args.local_workers,
            args.epochs,
            args.global_batch,
            args.seed,
            args.teacher,
            args.backup_dir,
        )
    else:
        teacher = args.teacher
        if teacher is None:
            if os.environ.get("TF_CONFIG"):
                sys.exit(
                    "A worker needs --teacher: a teacher saved where every worker can read it."
                )
            teacher = os.path.join(tempfile.mkdtemp(), "teacher.keras")
            train_teacher(teacher, seed=args.seed)
        print(
            json.dumps(
                run_worker(
                    teacher, args.epochs, args.global_batch, args.seed, args.backup_dir
                )
            )
        )
