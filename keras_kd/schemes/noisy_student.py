"""Xie, Luong, Hovy & Le, "Self-training with Noisy Student improves ImageNet
classification", CVPR 2020 (Noisy Student).

Self-training in rounds: an un-noised teacher labels unlabeled inputs, an
equal-or-larger, noised student learns from the labels and the pseudo
labels, and the student becomes the next teacher. `NoisyStudent` drives the
rounds with ordinary `fit`/`predict` calls; the zoo ResNets
(`keras_kd.models.get("resnet8", ..., dropout=0.5, stochastic_depth=0.2)`)
carry the paper's model noise.

Reference code: github.com/google-research/noisystudent (`main.py`,
`filter_unlabel.py`, `efficientnet_model.py`, `local_scripts/`).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_kd.datasets import pipeline
from keras_kd.schemes.adversarial import logits_classes
from keras_kd.validation import is_int, validate_positive

PSEUDO_LABELS = ("soft", "hard")
INPUT_NOISES = ("shift",)
# The paper's constants (ImageNet), for reference and for the docstrings.
PAPER_THRESHOLD = 0.3  # filter_unlabel.sh: --min_threshold=0.3 (ImageNet and SVHN)
PAPER_DROPOUT = 0.5  # dropout before the final layer of the students
PAPER_STOCHASTIC_DEPTH = 0.2  # survival probability 0.8 for the final block


class NoisyStudent:
    """Noisy Student self-training (Xie, Luong, Hovy & Le, CVPR 2020).

    Round `r = 1..rounds`:

    1. the teacher, NOT noised (inference mode: no dropout, no stochastic
       depth, BatchNorm moving statistics, clean inputs), labels every
       unlabeled input in batches with `predict`;
    2. optional confidence filtering: keep `x` if `max_k softmax(z_t(x))_k
       >= threshold` (the paper: 0.3 on ImageNet);
    3. optional class balancing (`balance`): pseudo-labels are grouped by
       the teacher's class; a class with more than the target count keeps
       its most confident images, a class with fewer duplicates its images
       (all of them `floor(target / n)` times, and the `target mod n` most
       confident once more), so every predicted class has exactly the
       target count;
    4. a fresh student `student_fn(r)` is trained with `fit` on the labeled
       data (one-hot targets) together with the pseudo-labeled data,
       shuffled together, minimising

           L = mean over the batch of CE(q, z_s(noise(x))),
           CE(q, z) = -sum_k q_k log softmax(z)_k,

       where `q` is the one-hot label of a labeled input and, for a
       pseudo-labeled one, `softmax(z_t(x) / T)` (`pseudo_labels="soft"`,
       the paper's choice with `T = 1`) or `one_hot(argmax z_t(x))`
       (`"hard"`). The loss is `keras.losses.CategoricalCrossentropy(
       from_logits=True)` computed in float32. Input noise (`noise`) is
       applied to the student's training inputs only; the student's own
       dropout / stochastic depth (model noise) act because `fit` runs it
       in training mode;
    5. the trained student is the teacher of round `r + 1`.

    The paper's student is "equal-or-larger": a student with fewer
    parameters (`count_params()`) than its teacher raises a `ValueError`
    naming both counts, unless `allow_smaller_student=True` (then it is
    knowledge distillation with noise).

    Paper and reference-code constants (github.com/google-research/
    noisystudent): soft pseudo-labels with temperature 1
    (`--teacher_softmax_temp=1`; -1 means hard labels); confidence threshold
    0.3 (`--min_threshold=0.3`); class balancing to a fixed number of images
    per class (130K on ImageNet, `--num_image`); student noise: stochastic
    depth with survival 0.8 for the final block and linear decay, dropout
    0.5 before the final layer, RandAugment with 2 ops (`--randaug_layer=2`)
    of magnitude 27 for the largest models (per-size magnitudes 6..27 in
    `train_offline.sh`, 5 on SVHN); a teacher run in inference mode on
    un-augmented images; 3 rounds on ImageNet (B7 -> L2 -> L2 -> L2).

    Deviations, documented:

    * the reference draws labeled and unlabeled batches separately, with
      an unlabeled batch `unlabel_ratio` times the labeled one (1 for B0, 3
      for larger students, 5 on SVHN) and loss `CE_labeled + unlabel_ratio
      * CE_unlabeled` (each a batch mean); here both sets are shuffled into
      one dataset, so their relative weight is their size ratio and the
      loss is one batch mean;
    * the reference duplicates/drops with stochastic rounding
      (`include_copy`); here balancing is deterministic and exact;
    * the reference smooths one-hot targets by 0.1 (labeled and hard
      pseudo-labels), keeps an exponential moving average of the weights
      and uses RMSProp with weight decay; here targets are not smoothed and
      the optimizer is yours;
    * input noise: RandAugment is not implemented; `noise="shift"` reuses
      `keras_kd.datasets.pipeline.augment`'s translation (zero padding by 1 pixel for
      images under 16 pixels, else 4, then a random crop), or pass any
      augmentation (`keras.Sequential` of `keras.layers.Random*`, a
      callable on batches).

    Args:
        teacher: the first teacher, a built `keras.Model` with one logits
            output `(batch, K)`, already trained. It is only ever run in
            inference mode (`predict`) and never trained.
        student_fn: `student_fn(round) -> keras.Model`, called once per
            round (`round = 1, 2, ...`) for a freshly initialised student
            with the teacher's output shape; it may grow with the round.
            Compile is done here.
        rounds: number of rounds, an int >= 1 (the paper: 3).
        pseudo_labels: `"soft"` (the teacher's distribution at
            `temperature`, the paper's choice) or `"hard"` (its argmax).
        temperature: `T > 0` of soft pseudo-labels (the paper: 1). Filtering
            and balancing always use the `T = 1` confidence.
        threshold: confidence threshold in [0, 1); 0 keeps all (the paper:
            0.3 on ImageNet).
        balance: False; True (target count per class = the mean count per
            predicted class after filtering, rounded up); or an int >= 1
            (images per class, the paper's 130K on ImageNet).
        noise: input noise on the student's training inputs: None (model
            noise only), `"shift"` (random translation, images only), a
            `keras.layers.Layer` (e.g. a `keras.Sequential` of random
            augmentation layers, called with `training=True`) or a callable
            `batch -> batch` of TensorFlow ops. It runs in the `tf.data`
            pipeline that feeds `fit`, never on the teacher's inputs nor on
            validation data.
        allow_smaller_student: accept students with fewer parameters than
            their teacher.
        predict_batch_size: batch size of the teacher's `predict`.
        seed: optional int seed of the shuffling and of `"shift"` noise.

    Example:

    ```python
    teacher = keras_kd.models.get("resnet8", (32, 32, 3), 10)
    ...  # train the teacher on the labeled data
    scheme = NoisyStudent(
        teacher,
        lambda r: keras_kd.models.get("resnet8", (32, 32, 3), 10, dropout=0.5, stochastic_depth=0.2),
        rounds=2, noise="shift")
    student, history = scheme.run((x_labeled, y_labeled), x_unlabeled, epochs=30,
                                  optimizer=keras.optimizers.Adam(1e-3), validation_data=(x_val, y_val))
    [record["student_accuracy"] for record in history]
    ```
    """

    def __init__(
        self,
        teacher,
        student_fn,
        rounds=1,
        pseudo_labels="soft",
        temperature=1.0,
        threshold=0.0,
        balance=False,
        noise=None,
        allow_smaller_student=False,
        predict_batch_size=256,
        seed=None,
    ):
        self.num_classes = _logits_width(teacher, "teacher")
        self.teacher = teacher
        if not callable(student_fn) or isinstance(student_fn, keras.Model):
            raise ValueError(
                "`student_fn` must be a function `round -> keras.Model` that builds a fresh student each round. "
                f"Received: student_fn={student_fn!r}"
            )
        self.student_fn = student_fn
        if not is_int(rounds) or rounds < 1:
            raise ValueError(f"`rounds` must be an int >= 1. Received: rounds={rounds!r}")
        self.rounds = int(rounds)
        if pseudo_labels not in PSEUDO_LABELS:
            raise ValueError(f"`pseudo_labels` must be one of {list(PSEUDO_LABELS)}. Received: {pseudo_labels!r}")
        self.pseudo_labels = pseudo_labels
        self.temperature = validate_positive("temperature", temperature)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
            raise ValueError(
                f"`threshold` must be a confidence in [0, 1) (the paper: {PAPER_THRESHOLD}). "
                f"Received: threshold={threshold!r}"
            )
        self.threshold = float(threshold)
        if not (isinstance(balance, bool) or (is_int(balance) and balance >= 1)):
            raise ValueError(
                "`balance` must be False, True (the mean count per class) or an int >= 1 (images per class). "
                f"Received: balance={balance!r}"
            )
        self.balance = balance if isinstance(balance, bool) else int(balance)
        if (isinstance(noise, str) and noise not in INPUT_NOISES) or not (
            noise is None or callable(noise) or isinstance(noise, str)
        ):
            raise ValueError(
                f"`noise` must be None, one of {list(INPUT_NOISES)}, a keras.layers.Layer or a callable on a batch "
                f"of inputs. Received: noise={noise!r}"
            )
        self.noise = noise
        if not isinstance(allow_smaller_student, bool):
            raise ValueError(
                f"`allow_smaller_student` must be a bool. Received: allow_smaller_student={allow_smaller_student!r}"
            )
        self.allow_smaller_student = allow_smaller_student
        if not is_int(predict_batch_size) or predict_batch_size < 1:
            raise ValueError(
                f"`predict_batch_size` must be an int >= 1. Received: predict_batch_size={predict_batch_size!r}"
            )
        self.predict_batch_size = int(predict_batch_size)
        if seed is not None and (not is_int(seed) or not 0 <= seed < 2**31):
            raise ValueError(f"`seed` must be None or an int in [0, 2**31). Received: seed={seed!r}")
        self.seed = seed

    # ------------------------------------------------------------------ pseudo-labels

    def label(self, teacher, unlabeled):
        """Pseudo-label `unlabeled` (an array of inputs) with `teacher` in
        inference mode, then filter and balance as configured.

        Returns a dict: `index` (int array, rows of `unlabeled` to train on,
        repeated where balancing duplicates), `targets` (float32 `(len(index),
        K)`: soft or one-hot pseudo-labels), `classes` (the teacher's argmax
        per row of `index`), and `stats`: `unlabeled` (count), `kept` (after
        the threshold), `used` (after balancing), `per_class` (list of K
        counts used), `missing_classes` (classes with no kept image, which
        balancing cannot fill), `mean_confidence` (of the kept images).
        """
        logits = np.asarray(teacher.predict(unlabeled, batch_size=self.predict_batch_size, verbose=0), "float32")
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"The teacher '{teacher.name}' returned logits of shape {logits.shape}; expected "
                f"(N, {self.num_classes})."
            )
        probabilities = _softmax(logits)
        confidence = probabilities.max(-1)
        classes = logits.argmax(-1)
        kept = np.flatnonzero(confidence >= self.threshold)
        index = self._balanced(kept, classes, confidence) if self.balance else kept
        if self.pseudo_labels == "hard":
            targets = np.eye(self.num_classes, dtype="float32")[classes[index]]
        else:
            targets = _softmax(logits[index] / self.temperature)
        per_class = np.bincount(classes[index], minlength=self.num_classes)
        stats = {
            "unlabeled": int(len(logits)),
            "kept": int(len(kept)),
            "used": int(len(index)),
            "per_class": per_class.tolist(),
            "missing_classes": [
                int(k) for k in np.flatnonzero(np.bincount(classes[kept], minlength=self.num_classes) == 0)
            ],
            "mean_confidence": float(confidence[kept].mean()) if len(kept) else float("nan"),
        }
        return {"index": index, "targets": targets.astype("float32"), "classes": classes[index], "stats": stats}

    def _balanced(self, kept, classes, confidence):
        groups = [kept[classes[kept] == k] for k in range(self.num_classes)]
        present = [group for group in groups if len(group)]
        if not present:
            return kept
        target = self.balance if self.balance is not True else math.ceil(len(kept) / len(present))
        chosen = []
        for group in present:
            ranked = group[np.argsort(-confidence[group], kind="stable")]  # most confident first
            if len(ranked) >= target:
                chosen.append(ranked[:target])
            else:
                copies, extra = divmod(target, len(ranked))
                chosen.append(np.concatenate([np.tile(ranked, copies), ranked[:extra]]))
        return np.concatenate(chosen)

    # ------------------------------------------------------------------ student data

    def training_data(self, x, targets, batch_size=32, shuffle=True, round_index=1):
        """The `tf.data` pipeline `run` feeds to the student's `fit`:
        `(noise(x), targets)` batches, reshuffled every epoch when `shuffle`,
        with the input noise applied per batch (training inputs only)."""
        data = tf.data.Dataset.from_tensor_slices((np.asarray(x, "float32"), np.asarray(targets, "float32")))
        if shuffle:
            seed = None if self.seed is None else self.seed + round_index
            data = data.shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size)
        if self.noise is None:
            return data.prefetch(tf.data.AUTOTUNE)
        if isinstance(self.noise, str):  # "shift"
            if np.ndim(x) != 4:
                raise ValueError(
                    f'noise="shift" translates images (N, H, W, C); the inputs have shape {np.shape(x)}. '
                    "Pass another noise (a callable on batches) or None."
                )
            pad = pipeline.pad_for(np.shape(x)[1:])
            seed = 0 if self.seed is None else self.seed + round_index
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            data = tf.data.Dataset.zip(data, seeds).map(
                lambda xy, s: (pipeline.augment(xy[0], s, pad, flip=False), xy[1]),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        elif isinstance(self.noise, keras.layers.Layer):
            data = data.map(lambda xb, yb: (self.noise(xb, training=True), yb), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            data = data.map(lambda xb, yb: (self.noise(xb), yb), num_parallel_calls=tf.data.AUTOTUNE)
        return data.prefetch(tf.data.AUTOTUNE)

    # ------------------------------------------------------------------ rounds

    def run(
        self,
        labeled,
        unlabeled,
        epochs=1,
        batch_size=32,
        optimizer="adam",
        compile_kwargs=None,
        validation_data=None,
        callbacks=None,
        verbose=0,
    ):
        """Run the rounds; return `(final_student, history)`.

        Args:
            labeled: `(x, y)` arrays (y: class ids `(N,)`/`(N, 1)` or one-hot
                `(N, K)`), or a `tf.data.Dataset` of `(x, y)` (read once into
                memory).
            unlabeled: an array of inputs, or a `tf.data.Dataset` of inputs
                (or of `(x, ...)` tuples; read once into memory).
            epochs: epochs of each student's `fit`, an int >= 1.
            batch_size: training batch size, an int >= 1.
            optimizer: a name (`"adam"`), a `keras.optimizers.Optimizer`
                (cloned from its config for each student, so no state is
                shared) or a function `round -> optimizer`.
            compile_kwargs: other `compile` arguments (e.g. `metrics`);
                `loss` and `optimizer` are the scheme's.
            validation_data: optional `(x, y)`, evaluated on each round's
                teacher and student (top-1 accuracy) and passed to `fit`.
            callbacks: optional list of `keras.callbacks.Callback`, passed to
                every student's `fit`.
            verbose: `fit`'s verbosity.

        Returns:
            The last student and a list with one dict per round: `round`,
            `teacher`, `student` (the models), `teacher_params`,
            `student_params`, `teacher_accuracy` and `student_accuracy` (on
            `validation_data`, else None), `pseudo_labels` (the `stats` of
            `label`) and `history` (the student's `fit` history dict).
        """
        x_labeled, y_labeled = _labeled_arrays(labeled)
        x_unlabeled = _unlabeled_array(unlabeled)
        one_hot = _one_hot(y_labeled, self.num_classes, "labeled")
        input_shape = _input_shape(self.teacher)
        for name, x in (("labeled", x_labeled), ("unlabeled", x_unlabeled)):
            _check_inputs(name, x, input_shape)
        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError(f"`validation_data` must be an (x, y) pair. Received: {type(validation_data)!r}")
            x_val = np.asarray(validation_data[0])
            _check_inputs("validation", x_val, input_shape)
            y_val = _one_hot(np.asarray(validation_data[1]), self.num_classes, "validation")
            if len(x_val) != len(y_val):
                raise ValueError(f"validation_data has {len(x_val)} inputs but {len(y_val)} labels.")
            validation = (x_val.astype("float32"), y_val)
        if not is_int(epochs) or epochs < 1:
            raise ValueError(f"`epochs` must be an int >= 1. Received: epochs={epochs!r}")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1. Received: batch_size={batch_size!r}")
        make_optimizer = _optimizer_factory(optimizer)
        compile_kwargs = dict(compile_kwargs or {})
        clash = sorted({"loss", "optimizer"} & set(compile_kwargs))
        if clash:
            raise ValueError(
                f"`compile_kwargs` may not set {clash}: the loss is the scheme's categorical cross-entropy and the "
                "optimizer is `run(optimizer=...)`."
            )
        if callbacks is not None and (
            not isinstance(callbacks, (list, tuple))
            or not all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
        ):
            raise ValueError(f"`callbacks` must be a list of keras.callbacks.Callback. Received: {callbacks!r}")
        if isinstance(self.noise, str) and x_labeled.ndim != 4:
            raise ValueError(f'noise="shift" translates images (N, H, W, C); the inputs have shape {x_labeled.shape}.')

        teacher, history = self.teacher, []
        for round_index in range(1, self.rounds + 1):
            student = self._student(round_index, teacher)
            labels = self.label(teacher, x_unlabeled)
            x_train = np.concatenate([x_labeled, x_unlabeled[labels["index"]]])
            y_train = np.concatenate([one_hot, labels["targets"]])
            student.compile(
                optimizer=make_optimizer(round_index),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True, dtype="float32"),
                **compile_kwargs,
            )
            fit = student.fit(
                self.training_data(x_train, y_train, batch_size, round_index=round_index),
                epochs=epochs,
                shuffle=False,  # the pipeline reshuffles every epoch
                validation_data=None if validation is None else (validation[0], validation[1]),
                validation_batch_size=self.predict_batch_size,
                callbacks=list(callbacks) if callbacks else None,
                verbose=verbose,
            )
            history.append(
                {
                    "round": round_index,
                    "teacher": teacher,
                    "student": student,
                    "teacher_params": int(teacher.count_params()),
                    "student_params": int(student.count_params()),
                    "teacher_accuracy": self._accuracy(teacher, validation),
                    "student_accuracy": self._accuracy(student, validation),
                    "pseudo_labels": labels["stats"],
                    "history": dict(fit.history),
                }
            )
            teacher = student
        return teacher, history

    def _student(self, round_index, teacher):
        student = self.student_fn(round_index)
        where = f"student_fn({round_index})"
        if not isinstance(student, keras.Model):
            raise ValueError(f"{where} must return a keras.Model. Received: {student!r}")
        width = _logits_width(student, where)
        if width != self.num_classes:
            raise ValueError(
                f"{where} ('{student.name}') outputs {width} logits but the teacher outputs {self.num_classes}."
            )
        if student is teacher or {id(v) for v in student.weights} & {id(v) for v in teacher.weights}:
            raise ValueError(
                f"{where} returned a model sharing weights with its teacher '{teacher.name}'; build a fresh student "
                "each round (the teacher must stay fixed)."
            )
        if _input_shape(student) != _input_shape(teacher):
            raise ValueError(
                f"{where} ('{student.name}') takes inputs of shape {_input_shape(student)}, its teacher "
                f"'{teacher.name}' {_input_shape(teacher)}; both read the same data."
            )
        student_params, teacher_params = student.count_params(), teacher.count_params()
        if student_params < teacher_params and not self.allow_smaller_student:
            raise ValueError(
                f"Noisy Student needs an equal-or-larger student: {where} ('{student.name}') has {student_params:,} "
                f"parameters, fewer than its teacher '{teacher.name}' with {teacher_params:,}. Pass "
                "allow_smaller_student=True to distill into a smaller model anyway."
            )
        return student

    def _accuracy(self, model, validation):
        if validation is None:
            return None
        logits = model.predict(validation[0], batch_size=self.predict_batch_size, verbose=0)
        return float(np.mean(np.argmax(logits, -1) == np.argmax(validation[1], -1)))


def _softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(-1, keepdims=True)).astype("float32")


def _logits_width(model, what):
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"The {what} must be a built keras.Model. Received: {model!r}")
    width = logits_classes(model, what, "Noisy Student")
    if width < 2:
        raise ValueError(f"The {what} '{model.name}' outputs {width} logit; classification needs K >= 2.")
    return width


def _input_shape(model):
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(f"Model '{model.name}' must take one input tensor.")
    return tuple(inputs[0].shape[1:])


def _check_inputs(name, x, input_shape):
    shape = tuple(x.shape[1:])
    if (
        x.ndim == 0
        or len(shape) != len(input_shape)
        or any(e is not None and e != d for e, d in zip(input_shape, shape))
    ):
        raise ValueError(
            f"The {name} inputs have shape {tuple(x.shape)}, but the teacher takes inputs of shape "
            f"(N, {', '.join(map(str, input_shape))})."
        )
    if len(x) == 0:
        raise ValueError(f"The {name} inputs are empty.")


def _materialize(data, what):
    batches = list(data.as_numpy_iterator())
    if not batches:
        raise ValueError(f"The {what} dataset is empty.")
    return batches


def _concat(parts, batched):
    return np.concatenate(parts) if batched else np.stack(parts)


def _labeled_arrays(labeled):
    if isinstance(labeled, tf.data.Dataset):
        spec = labeled.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"The labeled dataset must yield (x, y) pairs. Its element_spec: {spec}")
        batched = spec[0].shape.rank is not None and spec[0].shape.rank > 0 and spec[0].shape[0] is None
        batches = _materialize(labeled, "labeled")
        x = _concat([b[0] for b in batches], batched)
        y = _concat([b[1] for b in batches], batched)
    elif isinstance(labeled, (tuple, list)) and len(labeled) == 2:
        x, y = np.asarray(labeled[0]), np.asarray(labeled[1])
    else:
        raise ValueError(
            f"`labeled` must be an (x, y) pair of arrays or a tf.data.Dataset of (x, y). Received: {type(labeled)!r}"
        )
    if len(x) != len(y):
        raise ValueError(f"The labeled data has {len(x)} inputs but {len(y)} labels.")
    return x.astype("float32"), y


def _unlabeled_array(unlabeled):
    if isinstance(unlabeled, tf.data.Dataset):
        spec = unlabeled.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        batched = first.shape.rank is not None and first.shape.rank > 0 and first.shape[0] is None
        batches = _materialize(unlabeled, "unlabeled")
        x = _concat([b[0] if isinstance(b, tuple) else b for b in batches], batched)
    elif isinstance(unlabeled, (tuple, list)) or unlabeled is None:
        raise ValueError(
            "`unlabeled` must be an array of inputs (no labels) or a tf.data.Dataset of inputs. "
            f"Received: {type(unlabeled)!r}"
        )
    else:
        x = np.asarray(unlabeled)
    return x.astype("float32")


def _one_hot(y, num_classes, name):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == num_classes and num_classes > 1:
        if not np.all(np.isfinite(y)) or np.any(y < 0) or not np.allclose(y.sum(-1), 1.0, atol=1e-3):
            raise ValueError(f"The {name} labels of shape {y.shape} must be one-hot (or probability) rows.")
        return y.astype("float32")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"The {name} labels have shape {y.shape}; expected class ids (N,) or (N, 1), or one-hot (N, "
            f"{num_classes}) matching the teacher's {num_classes} classes."
        )
    if y.size and (not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"The {name} labels must be class ids in [0, {num_classes}) (the teacher outputs {num_classes} logits); "
            f"they range over [{y.min()}, {y.max()}]."
        )
    return np.eye(num_classes, dtype="float32")[y.astype("int64")]


def _optimizer_factory(optimizer):
    if isinstance(optimizer, str):
        return lambda _round: optimizer
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = keras.optimizers.serialize(optimizer)
        return lambda _round: keras.optimizers.deserialize(config)
    if callable(optimizer):
        return optimizer
    raise ValueError(
        "`optimizer` must be a name, a keras.optimizers.Optimizer (cloned per student) or a function "
        f"`round -> optimizer`. Received: optimizer={optimizer!r}"
    )
