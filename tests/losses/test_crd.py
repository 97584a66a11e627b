import math
import types

import keras
import numpy as np
import pytest
import tensorflow as tf  # tf.data pipelines, which Keras reads on every backend
from keras import ops

import keras_kd
from keras_kd.losses.crd import CRDHead, CRDLoss
from tests import backend_utils, loss_checks
from tests.conftest import mlp, sparse_ce
from tests.losses import _learnable_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(4, 2, 2, 3)).astype("float32")  # flattened: 12
STUDENT = rng.normal(size=(4, 5)).astype("float32")
INDEX = np.array([3, 17, 0, 29], "int32")
# num_data <= 4 (K + 1): the scores against every row, then gathered.
SMALL = {"num_data": 40, "feature_dim": 8, "num_negatives": 16}
# num_data > 4 (K + 1): the drawn rows gathered, then scored.
GATHER = {"num_data": 100, "feature_dim": 8, "num_negatives": 8}
PATHS = pytest.mark.parametrize("config", [SMALL, GATHER], ids=["matmul", "gather"])


def built(teacher=TEACHER, student=STUDENT, **kwargs):
    loss = CRDLoss(**{**SMALL, **kwargs})
    loss.build((None,) + teacher.shape[1:], (None,) + student.shape[1:])
    return loss


def negatives_for(loss, seed=0, batch=4):
    return np.random.default_rng(seed).integers(0, loss.num_data, (batch, loss.num_negatives)).astype("int32")


def fix_negatives(loss, negatives):
    """The rows `draw_negatives` returns from now on (the same for each call)."""
    loss.draw_negatives = lambda batch: ops.convert_to_tensor(negatives)


def uses_matmul(loss):
    return loss.num_data <= 4 * (loss.num_negatives + 1)


def uninformative(k):
    """Both directions' value when no score tells the positive apart (every P = 1/N)."""
    return 2 * (math.log(k + 1) + k * math.log1p(1 / k))


def np_embed(x, dense):
    x = x.reshape(len(x), -1).astype("float64") @ dense.kernel.numpy() + dense.bias.numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_contrast_loss(anchor, weights, z, temperature, n_data, set_z, eps=1e-7):
    """RepDistiller's ContrastMemory scores (`weights` (B, K+1, D), the
    positive first) and ContrastLoss, in NumPy float64. Returns (loss, Z)."""
    out = np.exp(np.einsum("bkd,bd->bk", weights, anchor) / temperature)
    if z < 0:
        z = out.mean() * n_data if set_z else 1.0
    p = out / z
    m = weights.shape[1] - 1
    pn = 1.0 / n_data
    log_d1 = np.log(p[:, 0] / (p[:, 0] + m * pn + eps))
    log_d0 = np.log((m * pn) / (p[:, 1:] + m * pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / len(anchor), z


def np_update(memory, index, embeddings, momentum):
    """ContrastMemory's update: memory[i] <- normalize(m memory[i] + (1 - m) e)."""
    memory = memory.copy()
    rows = momentum * memory[index] + (1 - momentum) * embeddings
    memory[index] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return memory


class NumpyCRD:
    """RepDistiller's CRDLoss (ContrastMemory + ContrastLoss) in NumPy, from a
    built loss's state: v1 = student embedding, v2 = teacher embedding."""

    def __init__(self, loss):
        head = loss.layer
        self.loss, self.head = loss, head
        self.memory_t = head.memory_teacher.numpy().astype("float64")
        self.memory_s = head.memory_student.numpy().astype("float64")
        self.z_s, self.z_t = float(head.z_student.numpy()), float(head.z_teacher.numpy())

    def embed(self, teacher, student):
        return np_embed(teacher, self.head.embed_teacher), np_embed(student, self.head.embed_student)

    def train(self, teacher, student, index, negatives):
        loss = self.loss
        e_t, e_s = self.embed(teacher, student)
        rows = np.concatenate([index[:, None], negatives], 1)  # idx.select(1, 0).copy_(y)
        args = (loss.temperature, loss.num_data, True)
        value_s, self.z_s = np_contrast_loss(e_s, self.memory_t[rows], self.z_s, *args)
        value_t, self.z_t = np_contrast_loss(e_t, self.memory_s[rows], self.z_t, *args)
        self.memory_t = np_update(self.memory_t, index, e_t, loss.momentum)
        self.memory_s = np_update(self.memory_s, index, e_s, loss.momentum)
        return value_s + value_t

    def evaluate(self, teacher, student, negatives):
        """No index: the other network's current embedding is the positive;
        nothing is written, Z is 1 until training sets it."""
        loss = self.loss
        e_t, e_s = self.embed(teacher, student)
        args = (loss.temperature, loss.num_data, False)
        weights_s = np.concatenate([e_t[:, None], self.memory_t[negatives]], 1)
        weights_t = np.concatenate([e_s[:, None], self.memory_s[negatives]], 1)
        return np_contrast_loss(e_s, weights_s, self.z_s, *args)[0] + np_contrast_loss(
            e_t, weights_t, self.z_t, *args
        )[0]


def head_state(loss):
    head = loss.layer
    return [v.numpy().copy() for v in (head.memory_teacher, head.memory_student, head.z_teacher, head.z_student)]


def test_build_creates_all_weights():
    loss = _learnable_checks.assert_builds_weights(lambda: CRDLoss(**SMALL), (None, 2, 2, 3), (None, 5))
    head = loss.layer
    assert tuple(head.memory_teacher.shape) == tuple(head.memory_student.shape) == (40, 8)
    assert tuple(head.embed_teacher.kernel.shape) == (12, 8)
    assert tuple(head.embed_student.kernel.shape) == (5, 8)
    assert float(head.z_student.numpy()) == float(head.z_teacher.numpy()) == -1.0
    assert len(head.trainable_weights) == 4  # the two embeddings (kernel, bias)
    assert len(head.non_trainable_weights) == 4  # two memories, two Z
    bound = 1 / np.sqrt(8 / 3)
    assert np.abs(head.memory_teacher.numpy()).max() <= bound
    assert np.abs(head.memory_student.numpy()).max() <= bound


def test_defaults_are_the_papers():
    loss = CRDLoss(num_data=50000)
    assert (loss.num_data, loss.feature_dim, loss.num_negatives, loss.temperature, loss.momentum) == (
        50000,
        128,
        16384,
        0.07,
        0.5,
    )
    assert loss.requires_index is True and loss.per_sample is False


@PATHS
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_matches_reference_over_two_steps(config, momentum):
    loss = built(**config, momentum=momentum)
    expected = NumpyCRD(loss)
    initial_t, initial_s = expected.memory_t.copy(), expected.memory_s.copy()
    second_teacher = rng.normal(size=TEACHER.shape).astype("float32")
    second_student = rng.normal(size=STUDENT.shape).astype("float32")
    second_index = np.array([5, 3, 11, 2], "int32")  # row 3 is updated twice
    steps = [(TEACHER, STUDENT, INDEX), (second_teacher, second_student, second_index)]
    head = loss.layer
    for step, (teacher, student, index) in enumerate(steps):
        negatives = negatives_for(loss, seed=step)
        fix_negatives(loss, negatives)
        got = float(loss((teacher, index), student))
        np.testing.assert_allclose(got, expected.train(teacher, student, index, negatives), rtol=1e-4)
        # Z: from the first batch, then kept.
        np.testing.assert_allclose(float(head.z_student.numpy()), expected.z_s, rtol=1e-4)
        np.testing.assert_allclose(float(head.z_teacher.numpy()), expected.z_t, rtol=1e-4)
        if step == 0:
            first_z = (float(head.z_student.numpy()), float(head.z_teacher.numpy()))
            assert min(first_z) > 0
    assert (float(head.z_student.numpy()), float(head.z_teacher.numpy())) == first_z
    np.testing.assert_allclose(head.memory_teacher.numpy(), expected.memory_t, atol=1e-5)
    np.testing.assert_allclose(head.memory_student.numpy(), expected.memory_s, atol=1e-5)
    # Rows of examples not in a batch are untouched; the batch's rows are unit vectors.
    seen = np.union1d(INDEX, second_index)
    unseen = np.setdiff1d(np.arange(loss.num_data), seen)
    np.testing.assert_array_equal(head.memory_teacher.numpy()[unseen], initial_t[unseen].astype("float32"))
    np.testing.assert_array_equal(head.memory_student.numpy()[unseen], initial_s[unseen].astype("float32"))
    assert not np.allclose(head.memory_teacher.numpy()[seen], initial_t[seen])
    np.testing.assert_allclose(np.linalg.norm(head.memory_student.numpy()[seen], axis=1), 1.0, atol=1e-5)


def test_momentum_zero_stores_the_embeddings():
    loss = built(momentum=0.0)
    loss((TEACHER, INDEX), STUDENT)
    head = loss.layer
    np.testing.assert_allclose(head.memory_teacher.numpy()[INDEX], np_embed(TEACHER, head.embed_teacher), atol=1e-6)
    np.testing.assert_allclose(head.memory_student.numpy()[INDEX], np_embed(STUDENT, head.embed_student), atol=1e-6)


def test_both_scoring_paths_give_the_same_scores():
    local = np.random.default_rng(3)
    anchor = local.normal(size=(4, 8)).astype("float32")
    memory = local.normal(size=(100, 8)).astype("float32")
    rows = local.integers(0, 100, (4, 9)).astype("int32")

    def scores(num_data, num_negatives):
        settings = types.SimpleNamespace(num_data=num_data, num_negatives=num_negatives, temperature=0.07)
        assert uses_matmul(settings) == (num_data == 36)
        tensors = [ops.convert_to_tensor(x) for x in (anchor, memory, rows)]
        return backend_utils.numpy(CRDLoss._scores(settings, *tensors))

    # Only the path depends on num_data and K here: 36 = 4 (8 + 1) takes the matmul.
    expected = np.take_along_axis(anchor @ memory.T, rows, 1) / 0.07
    np.testing.assert_allclose(scores(36, 8), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores(100, 8), expected, rtol=1e-5, atol=1e-5)


@PATHS
def test_evaluation_reads_the_memory_and_writes_nothing(config):
    loss = built(**config)
    fix_negatives(loss, negatives_for(loss, seed=7))
    loss((TEACHER, INDEX), STUDENT)  # a training step first: memory rows written, Z set
    before = head_state(loss)
    expected = NumpyCRD(loss)
    negatives = negatives_for(loss, seed=8)
    fix_negatives(loss, negatives)
    got = float(loss(TEACHER, STUDENT))
    np.testing.assert_allclose(got, expected.evaluate(TEACHER, STUDENT, negatives), rtol=1e-4)
    for b, a in zip(before, head_state(loss)):
        np.testing.assert_array_equal(b, a)


def test_evaluation_before_training_leaves_z_unset():
    loss = built()
    negatives = negatives_for(loss)
    fix_negatives(loss, negatives)
    expected = NumpyCRD(loss)
    before = head_state(loss)
    np.testing.assert_allclose(
        float(loss(TEACHER, STUDENT)), expected.evaluate(TEACHER, STUDENT, negatives), rtol=1e-4
    )
    for b, a in zip(before, head_state(loss)):
        np.testing.assert_array_equal(b, a)
    assert float(loss.layer.z_student.numpy()) == -1.0


def test_negatives_are_uniform_rows_per_anchor():
    loss = built(num_data=40, num_negatives=2000)
    negatives = backend_utils.numpy(loss.draw_negatives(4))
    assert negatives.shape == (4, 2000) and negatives.dtype == np.int32
    assert negatives.min() >= 0 and negatives.max() < 40
    assert len(np.unique(negatives)) == 40  # every row can be drawn
    assert not np.array_equal(negatives[0], negatives[1])  # drawn per anchor
    counts = np.bincount(negatives.ravel(), minlength=40)
    assert counts.min() > 0.6 * 200 and counts.max() < 1.4 * 200


def test_one_scalar_per_batch():
    loss = built()
    assert loss((TEACHER, INDEX), STUDENT).shape == ()
    with pytest.raises(ValueError, match="sample_weight"):
        loss((TEACHER, INDEX), STUDENT, sample_weight=np.ones(4, "float32"))


@pytest.mark.parametrize("with_index", [True, False], ids=["training", "evaluation"])
def test_gradient_reaches_student_only(with_index):
    loss = built()
    teacher = (TEACHER, INDEX) if with_index else TEACHER
    loss_checks.assert_gradient_reaches_student_only(loss, teacher, STUDENT)


def test_gradient_reaches_both_embeddings():
    loss = built()
    loss((TEACHER, INDEX), STUDENT)  # Z set: the second step's gradient is the steady one
    weights, state = loss.layer.trainable_weights, loss.layer.non_trainable_weights
    _, _, grads = backend_utils.value_and_grad(lambda: loss((TEACHER, INDEX), STUDENT), (), weights + state)
    assert {w.path.split("/")[-2] for w in weights} == {"embed_teacher", "embed_student"}
    for weight, grad in zip(weights, grads):
        assert np.abs(grad).max() > 0, weight.path
    # The memory rows are read as constants (Z is not trained either way).
    for weight, grad in zip(state, grads[len(weights) :]):
        if "memory" in weight.path:
            assert np.abs(grad).max() == 0, weight.path


def test_training_the_student_lowers_the_loss():
    keras.utils.set_random_seed(0)
    local = np.random.default_rng(1)
    n, k = 64, 16
    teacher = local.normal(size=(n, 8)).astype("float32")
    student = keras.Variable(local.normal(size=(n, 8)).astype("float32"))
    loss = CRDLoss(num_data=n, feature_dim=16, num_negatives=k)
    loss.build((None, 8), (None, 8))
    variables = [student] + loss.layer.trainable_weights
    state = loss.layer.non_trainable_variables  # memories, Z and the negatives' seed: written by each step
    optimizer = keras.optimizers.Adam(0.05)

    def retrieval_accuracy():
        e_t, e_s = backend_utils.numpy(loss.layer((teacher, ops.convert_to_tensor(student))))
        nearest = np.argmax(e_s @ e_t.T, axis=1)
        return np.mean(nearest == np.arange(n))

    initial_accuracy = retrieval_accuracy()

    def step(index):
        value, _, grads = backend_utils.value_and_grad(
            lambda: loss((ops.take(teacher, index, axis=0), index), ops.take(student, index, axis=0)),
            (),
            variables + state,
        )
        optimizer.apply([ops.convert_to_tensor(g) for g in grads[: len(variables)]], variables)
        return value

    epochs = []
    for _ in range(30):
        order = local.permutation(n).astype("int32")
        epochs.append(np.mean([float(step(order[i : i + 16])) for i in range(0, n, 16)]))
    floor = uninformative(k)
    assert epochs[0] > 0.8 * floor, (epochs, floor)
    assert epochs[-1] < 0.4 * floor, (epochs, floor)
    # And it learned the task: student embeddings retrieve their own teacher's.
    assert retrieval_accuracy() > max(0.5, 4 * initial_accuracy), initial_accuracy


def test_serialization_round_trip():
    loss = built(num_data=32, temperature=0.1, momentum=0.2, name="crd")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    clone = CRDLoss.from_config(loss.get_config())
    assert (clone.num_data, clone.feature_dim, clone.num_negatives, clone.temperature, clone.momentum) == (
        32,
        8,
        16,
        0.1,
        0.2,
    )
    head_clone = CRDHead.from_config(loss.layer.get_config())
    assert head_clone.get_config() == loss.layer.get_config()
    assert (head_clone.num_data, head_clone.feature_dim) == (32, 8)


def test_float32_under_float16_inputs():
    # The loss is stateful (memory, Z): compare two losses with equal state and negatives.
    half_loss, full_loss = built(), built()
    full_loss.layer.set_weights(half_loss.layer.get_weights())
    negatives = negatives_for(half_loss)
    fix_negatives(half_loss, negatives)
    fix_negatives(full_loss, negatives)
    teacher, student = (ops.cast(x, "float16") for x in (TEACHER, STUDENT))
    result = half_loss((teacher, INDEX), student)
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    reference = full_loss((ops.cast(teacher, "float32"), INDEX), ops.cast(student, "float32"))
    np.testing.assert_allclose(float(result), float(reference), rtol=1e-5)
    assert half_loss.layer.memory_teacher.dtype == "float32"
    np.testing.assert_allclose(
        half_loss.layer.memory_teacher.numpy(), full_loss.layer.memory_teacher.numpy(), atol=1e-6
    )


@PATHS
def test_works_under_xla(config):
    loss = built(**config)
    before = head_state(loss)
    # Evaluation form (no index): random negatives drawn inside the compiled function.
    assert np.isfinite(_learnable_checks.assert_jit_compiles(loss, TEACHER, STUDENT))
    for b, a in zip(before, head_state(loss)):
        np.testing.assert_array_equal(b, a)
    # Training form: the memory update and Z compile too.
    fn = backend_utils.compiled(lambda t, i, s: loss((t, i), s), variables=loss.layer.variables)
    assert np.isfinite(float(backend_utils.numpy(fn(TEACHER, INDEX, STUDENT))))
    after = head_state(loss)
    assert not np.array_equal(before[0][INDEX], after[0][INDEX])
    unseen = np.setdiff1d(np.arange(loss.num_data), INDEX)
    np.testing.assert_array_equal(before[1][unseen], after[1][unseen])
    assert float(after[2]) > 0 and float(after[3]) > 0


@PATHS
def test_xla_matches_eager(config):
    eager, jit = built(**config), built(**config)
    jit.layer.set_weights(eager.layer.get_weights())
    rows = keras.Variable(negatives_for(eager), trainable=False)  # read at run time: the trace keeps no constant
    jit.draw_negatives = lambda batch: ops.convert_to_tensor(rows)
    fn = backend_utils.compiled(lambda t, i, s: jit((t, i), s), variables=jit.layer.variables + [rows])
    for step in range(2):
        negatives = negatives_for(eager, seed=step)
        fix_negatives(eager, negatives)
        rows.assign(negatives)
        np.testing.assert_allclose(
            float(backend_utils.numpy(fn(TEACHER, INDEX, STUDENT))),
            float(backend_utils.numpy(eager((TEACHER, INDEX), STUDENT))),
            rtol=1e-5,
        )
    for e, j in zip(head_state(eager), head_state(jit)):
        np.testing.assert_allclose(j, e, rtol=1e-5, atol=1e-6)


def test_weights_save_and_reload(tmp_path):
    # Memory and Z reached by training steps are saved with the embedding heads.
    path = str(tmp_path / "crd.weights.h5")
    loss = built()
    for step in range(2):
        fix_negatives(loss, negatives_for(loss, seed=step))
        loss((TEACHER, INDEX), STUDENT)
    _learnable_checks.perturb_trainable(loss.layer)
    _learnable_checks.Holder(loss.layer).save_weights(path)
    negatives = negatives_for(loss, seed=5)

    def fresh(load):
        other = CRDLoss.from_config(loss.get_config())
        other.build((None, 2, 2, 3), (None, 5))
        if load:
            _learnable_checks.Holder(other.layer).load_weights(path)
        fix_negatives(other, negatives)
        return other

    fix_negatives(loss, negatives)
    restored = fresh(load=True)
    for saved, loaded in zip(head_state(loss), head_state(restored)):
        np.testing.assert_array_equal(saved, loaded)
    np.testing.assert_allclose(float(restored(TEACHER, STUDENT)), float(loss(TEACHER, STUDENT)), rtol=1e-6)
    expected = float(loss((TEACHER, INDEX), STUDENT))
    np.testing.assert_allclose(float(restored((TEACHER, INDEX), STUDENT)), expected, rtol=1e-6)
    assert not np.isclose(float(fresh(load=False)((TEACHER, INDEX), STUDENT)), expected, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "num_data"),
        ({"num_data": 0}, "num_data"),
        ({"num_data": 100.0}, "num_data"),
        ({"num_data": True}, "num_data"),
        ({"num_data": 10, "feature_dim": 0}, "feature_dim"),
        ({"num_data": 10, "feature_dim": 8.0}, "feature_dim"),
        ({"num_data": 10, "num_negatives": 0}, "num_negatives"),
        ({"num_data": 10, "num_negatives": None}, "num_negatives"),
        ({"num_data": 10, "temperature": 0}, "temperature"),
        ({"num_data": 10, "temperature": "0.07"}, "temperature"),
        ({"num_data": 10, "momentum": 1.0}, "momentum"),
        ({"num_data": 10, "momentum": -0.1}, "momentum"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CRDLoss(**kwargs)


def test_missing_num_data_explains_the_index():
    with pytest.raises(ValueError, match="with_index"):
        CRDLoss()


@pytest.mark.parametrize(
    "teacher_shape, student_shape, pattern",
    [
        ((4, 12), (3, 5), r"teacher shape \(4, 12\), student shape \(3, 5\)"),
        ((4,), (4, 5), r"teacher shape \(4,\) and student shape \(4, 5\)"),
        ((4, 12), (4,), r"student features need a batch dimension"),
    ],
)
def test_rejects_bad_shapes(teacher_shape, student_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        CRDLoss(**SMALL)(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))


def test_default_name_is_keras_style():
    assert CRDLoss(num_data=10).name == "crd_loss"


# --------------------------------------------------------------------------- in a Distiller

N_TRAIN = 96


@pytest.fixture
def crd_distiller():
    def make(num_data=128):
        keras.utils.set_random_seed(0)
        term = keras_kd.Term(
            CRDLoss(num_data=num_data, feature_dim=8, num_negatives=16),
            teacher_layer="hidden",
            student_layer="hidden",
            weight=0.8,
        )
        distiller = keras_kd.Distiller(mlp(16, "teacher"), mlp(8, "student"), [term])
        distiller.compile(keras.optimizers.Adam(1e-2), sparse_ce())
        return distiller

    return make


def bound_loss(distiller):
    """The Distiller's own (built) copy of its CRD term's loss."""
    return distiller.bound_term(distiller.terms[0].name).loss


def _examples(digits):
    x, y = digits
    return tf.data.Dataset.from_tensor_slices((x[:N_TRAIN], y[:N_TRAIN]))


def test_distiller_trains_on_indexed_data_and_writes_the_seen_rows(crd_distiller, digits):
    distiller = crd_distiller(num_data=128)  # rows 96..127: no example
    head = bound_loss(distiller).layer
    before = head_state(bound_loss(distiller))
    train = keras_kd.datasets.with_index(_examples(digits)).shuffle(N_TRAIN, seed=0).batch(32)
    history = distiller.fit(train, epochs=2, verbose=0)
    values = history.history[distiller.terms[0].name]
    assert len(values) == 2 and all(np.isfinite(values))
    after = head_state(bound_loss(distiller))
    for memory_before, memory_after in zip(before[:2], after[:2]):
        changed = np.any(memory_before != memory_after, axis=1)
        assert changed[:N_TRAIN].all() and not changed[N_TRAIN:].any()
    assert float(head.z_teacher.numpy()) > 0 and float(head.z_student.numpy()) > 0


def test_distiller_fit_on_arrays_with_index(crd_distiller, digits):
    x, y = digits
    distiller = crd_distiller(num_data=N_TRAIN)
    before = head_state(bound_loss(distiller))
    distiller.fit(*keras_kd.datasets.with_index(x[:N_TRAIN], y[:N_TRAIN]), batch_size=32, epochs=1, verbose=0)
    after = head_state(bound_loss(distiller))
    assert np.all(np.any(before[0] != after[0], axis=1))


def test_distiller_without_index_raises_before_any_step(crd_distiller, digits):
    distiller = crd_distiller()
    before = head_state(bound_loss(distiller))
    weights = [w.copy() for w in distiller.student.get_weights()]
    with pytest.raises(ValueError, match=r"with_index") as error:
        distiller.fit(_examples(digits).batch(32), epochs=1, verbose=0)
    assert "crd_loss" in str(error.value)
    assert int(distiller.optimizer.iterations.numpy()) == 0
    for b, a in zip(before, head_state(bound_loss(distiller))):
        np.testing.assert_array_equal(b, a)
    for b, a in zip(weights, distiller.student.get_weights()):
        np.testing.assert_array_equal(b, a)


def test_distiller_index_of_wrong_rank_raises(crd_distiller, digits):
    distiller = crd_distiller()
    batched_first = keras_kd.datasets.with_index(_examples(digits).batch(32))  # one index per batch
    with pytest.raises(ValueError, match=r"one index per example.*with_index before `batch`"):
        distiller.fit(batched_first, epochs=1, verbose=0)
    assert int(distiller.optimizer.iterations.numpy()) == 0


def test_distiller_evaluate_without_index_leaves_the_memory(crd_distiller, digits):
    x, y = digits
    distiller = crd_distiller()
    train = keras_kd.datasets.with_index(_examples(digits)).shuffle(N_TRAIN, seed=0).batch(32)
    distiller.fit(train, epochs=1, verbose=0)
    before = head_state(bound_loss(distiller))
    results = distiller.evaluate(x[N_TRAIN : N_TRAIN + 64], y[N_TRAIN : N_TRAIN + 64], batch_size=32, return_dict=True)
    assert np.isfinite(results[distiller.terms[0].name])
    for b, a in zip(before, head_state(bound_loss(distiller))):
        np.testing.assert_array_equal(b, a)
    # Indexed data in evaluate: the index is dropped, nothing is written either.
    distiller.evaluate(keras_kd.datasets.with_index(_examples(digits)).batch(32), verbose=0)
    for b, a in zip(before, head_state(bound_loss(distiller))):
        np.testing.assert_array_equal(b, a)
    # predict sees plain inputs.
    assert distiller.predict(x[:8], verbose=0).shape == (8, 10)


def test_vanishing_embeddings_keep_gradients_bounded():
    """All-zero features give bias-only embeddings (zero at initialisation):
    the normalisation's floor keeps every gradient finite and moderate."""
    loss = CRDLoss(num_data=64, feature_dim=16, num_negatives=32)
    loss.build((8, 32), (8, 24))
    teacher, student, index = np.zeros((8, 32), "float32"), np.zeros((8, 24), "float32"), np.arange(8)
    value, student_grads, variable_grads = backend_utils.value_and_grad(
        lambda s: loss((teacher, index), s), (student,), variables=loss.layer.trainable_weights
    )
    assert math.isfinite(float(value))
    largest = max(float(np.abs(g).max()) for g in [*keras.tree.flatten(student_grads), *variable_grads])
    assert largest < 1e6  # 3e12 with a 1e-12 floor
