"""Each training scheme against its fair baseline, on real MNIST.

    python benchmarks/schemes.py [--epochs 8] [--train 10000] [--seed 0]

Budget (2-core CPU): the first `--train` MNIST training images (all 10,000
test images for evaluation), `--epochs` epochs for every model, batch 32,
Adam 3e-3 with cosine decay. Teacher: `cnn_large` (94k params); students
`mlp_small` (51k params, one 64-unit hidden layer) unless a scheme needs
otherwise (self-distillation trains `cnn_large` itself with heads). Every student of a
comparison starts from the same initial weights and sees the same number of
steps. One seed per run. Results: `benchmarks/results/schemes.{json,md}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_dir, write_results  # noqa: E402

import keras_kd  # noqa: E402
from keras_kd import callbacks, datasets, models, recipes  # noqa: E402
from keras_kd.schemes import adversarial, boundary, mutual, self_distillation, teacher_free  # noqa: E402

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
STUDENT = "mlp_small"  # 51k params, one 64-unit layer: a student that trains well in this budget


class Bench:
    def __init__(self, epochs, train, seed, batch_size=32):
        self.epochs, self.seed, self.batch_size = epochs, seed, batch_size
        self.data = datasets.load("mnist", batch_size=batch_size, data_dir=str(data_dir()), seed=seed, limit=train)
        self.x_train, self.y_train = self.data.numpy("train")
        self.x_test, self.y_test = self.data.numpy("test")
        self.steps = int(np.ceil(len(self.y_train) / batch_size))
        self.rows = []

    def optimizer(self):
        return keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, self.epochs * self.steps))

    def model(self, architecture, seed_offset=1, **kwargs):
        keras.utils.set_random_seed(self.seed + seed_offset)
        return models.get(architecture, self.data.input_shape, 10, **kwargs)

    def accuracy(self, model, x=None):
        x = self.x_test if x is None else x
        return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), -1) == self.y_test))

    def fit(self, model, data=None, **kwargs):
        start = time.time()
        model.compile(self.optimizer(), kwargs.pop("loss", CE))
        model.fit(self.data.train if data is None else data, epochs=self.epochs, verbose=0, **kwargs)
        return time.time() - start

    def record(self, scheme, baseline_name, baseline, name, value, seconds, note=""):
        row = {
            "scheme": scheme,
            "baseline": baseline_name,
            "baseline_accuracy": baseline,
            "model": name,
            "accuracy": value,
            "gain_points": 100 * (value - baseline),
            "seconds": seconds,
            "note": note,
        }
        self.rows.append(row)
        print(f"{scheme:<28} {name:<34} {value:.4f}  vs {baseline_name} {baseline:.4f}  ({seconds:.0f}s)", flush=True)


def run(epochs=5, train=10000, seed=0, batch_size=32):
    bench = Bench(epochs, train, seed, batch_size)
    start = time.time()
    teachers = []
    for offset in (0, 100):
        teacher = bench.model("cnn_large", seed_offset=offset, name=f"teacher{len(teachers) + 1}")
        bench.fit(teacher)
        teachers.append(teacher)
    teacher = teachers[0]
    teacher_accuracy = [bench.accuracy(t) for t in teachers]
    print(f"teachers {teacher_accuracy} ({time.time() - start:.0f}s)", flush=True)

    scratch = bench.model(STUDENT)
    seconds = bench.fit(scratch)
    scratch_accuracy = bench.accuracy(scratch)

    def distilled(terms, student_loss_weight, cls=keras_kd.Distiller, teacher_model=teacher, callbacks_=(), **kw):
        student = bench.model(STUDENT)
        distiller = cls(teacher_model, student, terms, student_loss_weight=student_loss_weight, **kw)
        seconds = bench.fit(distiller, callbacks=list(callbacks_))
        return bench.accuracy(student), seconds

    kd_terms = lambda: recipes.get("kd")  # noqa: E731
    kd, kd_seconds = distilled(kd_terms(), 0.1)
    bench.record("KD (reference)", "scratch", scratch_accuracy, "KD student", kd, kd_seconds)

    # Multi-teacher: the ensemble of two teachers against KD from the first alone.
    ensemble, seconds = distilled(kd_terms(), 0.1, teacher_model={"a": teachers[0], "b": teachers[1]})
    bench.record("multi-teacher (2, uniform)", "KD, one teacher", kd, "KD from the ensemble", ensemble, seconds)

    # Deep mutual learning: two cnn_tiny peers together against each trained alone (same inits).
    peers = [bench.model(STUDENT, seed_offset=1, name="peer1"), bench.model(STUDENT, seed_offset=2, name="peer2")]
    alone = bench.model(STUDENT, seed_offset=2, name="alone2")
    bench.fit(alone)
    dml = mutual.MutualLearning(peers)
    seconds = bench.fit(dml)
    bench.record("mutual learning", "peer 1 alone", scratch_accuracy, "peer 1 (mutual)", bench.accuracy(peers[0]), seconds)
    bench.record("mutual learning", "peer 2 alone", bench.accuracy(alone), "peer 2 (mutual)", bench.accuracy(peers[1]), seconds)

    # Self-distillation: cnn_large with auxiliary heads after stages 1 and 2, against teacher 1, the same
    # architecture and initial weights trained alone.
    large = bench.model("cnn_large", seed_offset=0, name="self_distilled")
    sd = self_distillation.SelfDistillation(large)
    seconds = bench.fit(sd)
    bench.record(
        "self-distillation (BYOT)", "cnn_large alone", teacher_accuracy[0], "cnn_large, heads removed",
        bench.accuracy(large), seconds,
    )  # fmt: skip
    bench.record(
        "self-distillation (BYOT)", "cnn_large alone", teacher_accuracy[0], "early exit after stage 1",
        bench.accuracy(sd.export_head(0)), seconds, "a shallower model",
    )  # fmt: skip

    # Teacher-free KD: the virtual teacher (Tf-KD_reg) and the pre-trained student as teacher (Tf-KD_self).
    student = bench.model(STUDENT)
    seconds = bench.fit(teacher_free.virtual_teacher_distiller(student))
    bench.record("teacher-free (virtual)", "scratch", scratch_accuracy, "Tf-KD_reg", bench.accuracy(student), seconds)
    self_kd, seconds = distilled(kd_terms(), 0.1, teacher_model=teacher_free.self_teacher(scratch))
    bench.record("teacher-free (self)", "scratch", scratch_accuracy, "Tf-KD_self", self_kd, seconds)

    # Adversarial distillation and boundary-supporting samples, each on top of KD.
    adv, seconds = distilled(kd_terms(), 0.1, cls=adversarial.AdversarialDistiller)
    bench.record("adversarial (Xu et al.)", "KD", kd, "KD + discriminator", adv, seconds)
    bss, seconds = distilled(kd_terms(), 0.1, cls=boundary.BoundarySupportingDistiller)
    bench.record("boundary-supporting samples", "KD", kd, "KD + BSS", bss, seconds)

    # Two-stage FitNets (hint first, then KD) against the same terms in one stage.
    def fitnet_terms():
        return [
            keras_kd.Term(keras_kd.losses.FitNetLoss(), "embedding", "stage1", connector="linear", weight=100.0),
            *kd_terms(),
        ]

    one_stage, _ = distilled(fitnet_terms(), 0.1)
    stage_epochs = max(1, epochs // 4)
    two_stage, seconds = distilled(fitnet_terms(), 0.1, callbacks_=[callbacks.HintStage(stage_epochs)])
    bench.record("two-stage FitNets", "FitNets + KD, one stage", one_stage, f"hint {stage_epochs} ep., then KD",
                 two_stage, seconds)  # fmt: skip

    # Privileged features: the student sees the top 14 rows only; the teacher saw the whole image.
    top = lambda x: x[:, :14]  # noqa: E731
    keras.utils.set_random_seed(seed + 1)
    online_input = keras.Input((14, 28, 1), name="online")
    hidden = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(online_input))
    online_scratch = keras.Model(online_input, keras.layers.Dense(10)(hidden), name="online_scratch")
    online_kd = keras.models.clone_model(online_scratch)
    online_kd.set_weights(online_scratch.get_weights())
    bench.fit(online_scratch, tf.data.Dataset.from_tensor_slices((top(bench.x_train), bench.y_train)).batch(batch_size))
    full_input = keras.Input(bench.data.input_shape, name="full")
    privileged_teacher = keras.Model(full_input, teacher(full_input), name="privileged_teacher")
    batches = tf.data.Dataset.from_tensor_slices(
        ({"online": top(bench.x_train), "full": bench.x_train}, bench.y_train)
    ).batch(batch_size)
    distiller = keras_kd.Distiller(privileged_teacher, online_kd, kd_terms(), student_loss_weight=0.1)
    seconds = bench.fit(distiller, batches)
    bench.record(
        "privileged features", "top half, scratch", bench.accuracy(online_scratch, top(bench.x_test)),
        "top half, KD from full-image teacher", bench.accuracy(online_kd, top(bench.x_test)), seconds,
    )  # fmt: skip

    # Unlabelled transfer: 500 labels used directly, against KD on every training image without labels.
    labelled = bench.model(STUDENT)
    subset = tf.data.Dataset.from_tensor_slices((bench.x_train[:500], bench.y_train[:500])).repeat()
    bench.fit(labelled, subset.shuffle(500, seed=seed).batch(batch_size), steps_per_epoch=bench.steps)
    student = bench.model(STUDENT)
    unlabelled = tf.data.Dataset.from_tensor_slices(bench.x_train).shuffle(len(bench.x_train), seed=seed).batch(batch_size)
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.losses.KDLoss(temperature=4.0)])
    seconds = bench.fit(distiller, unlabelled, loss=None)
    bench.record("unlabelled transfer", "500 labels, supervised", bench.accuracy(labelled), "KD on unlabelled images",
                 bench.accuracy(student), seconds)  # fmt: skip

    # TeacherCache: same KD, a non-shuffled pipeline, with and without the cache.
    ordered = tf.data.Dataset.from_tensor_slices((bench.x_train, bench.y_train)).batch(batch_size)
    plain, plain_seconds = distilled(kd_terms(), 0.1)
    student = bench.model(STUDENT)
    distiller = keras_kd.Distiller(teacher, student, kd_terms(), student_loss_weight=0.1)
    cached_seconds = bench.fit(distiller, ordered, callbacks=[callbacks.TeacherCache()])
    student_plain = bench.model(STUDENT)
    distiller = keras_kd.Distiller(teacher, student_plain, kd_terms(), student_loss_weight=0.1)
    ordered_seconds = bench.fit(distiller, ordered)
    bench.record("TeacherCache", "KD, same ordered data", bench.accuracy(student_plain), "KD with TeacherCache",
                 bench.accuracy(student), cached_seconds,
                 f"{cached_seconds / ordered_seconds:.2f}x the time of the uncached run")  # fmt: skip

    lines = [
        "# Training schemes against their fair baselines (MNIST)",
        "",
        f"First {train} MNIST training images, all 10,000 test images; {epochs} epochs per model, batch {batch_size}, "
        "Adam 3e-3 "
        f"with cosine decay, seed {seed}, one run on a 2-core CPU. Teachers: cnn_large, test accuracy "
        f"{teacher_accuracy[0]:.4f} and {teacher_accuracy[1]:.4f}. Students: {STUDENT} ({scratch.count_params()} "
        f"params, scratch {scratch_accuracy:.4f}) unless named.",
        "",
        "| scheme | baseline | baseline acc. | scheme model | acc. | gain (points) | seconds | note |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for row in bench.rows:
        lines.append(
            f"| {row['scheme']} | {row['baseline']} | {row['baseline_accuracy']:.4f} | {row['model']} | "
            f"{row['accuracy']:.4f} | {row['gain_points']:+.2f} | {row['seconds']:.0f} | {row['note']} |"
        )
    payload = {
        "config": {"epochs": epochs, "train": train, "seed": seed, "batch_size": batch_size, "student": STUDENT},
        "teachers": teacher_accuracy,
        "scratch": scratch_accuracy,
        "rows": bench.rows,
        "seconds": time.time() - start,
    }
    paths = write_results("schemes", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {paths[0]} and {paths[1]} in {time.time() - start:.0f}s")
    return payload


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    run(**{key.replace("-", "_"): value for key, value in vars(parser.parse_args()).items()})
