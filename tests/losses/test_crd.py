import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_kd.losses.crd import CRDHead, CRDLoss
from tests import loss_checks
from tests.losses import _learnable_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(4, 2, 2, 3)).astype("float32")  # flattened: 12
STUDENT = rng.normal(size=(4, 5)).astype("float32")
SMALL = {"feature_dim": 8, "num_negatives": 16}


def built(teacher=TEACHER, student=STUDENT, **kwargs):
    loss = CRDLoss(**{**SMALL, **kwargs})
    loss.build((None,) + teacher.shape[1:], (None,) + student.shape[1:])
    return loss


def np_embed(x, dense):
    x = x.reshape(len(x), -1).astype("float64") @ dense.kernel.numpy() + dense.bias.numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def np_contrast_loss(anchor, positive, negatives, z, temperature, n_data, eps=1e-7):
    """RepDistiller's ContrastMemory scores + ContrastLoss, in NumPy (float64)."""
    logits = np.concatenate([(anchor * positive).sum(1, keepdims=True), anchor @ negatives.T], 1)
    out = np.exp(logits / temperature)
    if z < 0:
        z = out.mean() * n_data
    p = out / z
    m = negatives.shape[0]
    pn = 1.0 / n_data
    log_d1 = np.log(p[:, 0] / (p[:, 0] + m * pn + eps))
    log_d0 = np.log((m * pn) / (p[:, 1:] + m * pn + eps))
    return -(log_d1.sum() + log_d0.sum()) / len(anchor), z


def np_enqueue(memory, embeddings, momentum):
    b = len(embeddings)
    if momentum:
        embeddings = momentum * memory[:b] + (1 - momentum) * embeddings
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    return np.concatenate([memory[b:], embeddings])


class NumpyCRD:
    """The whole CRDLoss in NumPy, starting from a built loss's state."""

    def __init__(self, loss):
        head = loss.layer
        self.loss, self.head = loss, head
        self.memory_t = head.memory_teacher.numpy().astype("float64")
        self.memory_s = head.memory_student.numpy().astype("float64")
        self.z_s, self.z_t = float(head.z_student.numpy()), float(head.z_teacher.numpy())

    def __call__(self, teacher, student):
        loss, head = self.loss, self.head
        e_t, e_s = np_embed(teacher, head.embed_teacher), np_embed(student, head.embed_student)
        n = loss.queue_size
        value_s, self.z_s = np_contrast_loss(e_s, e_t, self.memory_t, self.z_s, loss.temperature, n)
        value_t, self.z_t = np_contrast_loss(e_t, e_s, self.memory_s, self.z_t, loss.temperature, n)
        self.memory_t = np_enqueue(self.memory_t, e_t, loss.momentum)
        self.memory_s = np_enqueue(self.memory_s, e_s, loss.momentum)
        return value_s + value_t


def test_build_creates_all_weights():
    loss = _learnable_checks.assert_builds_weights(
        lambda: CRDLoss(**SMALL), (None, 2, 2, 3), (None, 5)
    )
    head = loss.layer
    assert tuple(head.memory_teacher.shape) == tuple(head.memory_student.shape) == (16, 8)
    assert tuple(head.embed_teacher.kernel.shape) == (12, 8)
    assert tuple(head.embed_student.kernel.shape) == (5, 8)
    assert float(head.z_student.numpy()) == float(head.z_teacher.numpy()) == -1.0
    assert len(head.trainable_weights) == 4  # the two embeddings
    assert len(head.non_trainable_weights) == 4  # two queues, two Z
    bound = 1 / np.sqrt(8 / 3)
    assert np.abs(head.memory_teacher.numpy()).max() <= bound


def test_memory_size_defaults_to_num_negatives():
    assert CRDLoss(num_negatives=32).queue_size == 32
    assert CRDLoss(num_negatives=32, memory_size=64).queue_size == 64
    loss = CRDLoss()
    assert (loss.feature_dim, loss.num_negatives, loss.temperature, loss.momentum) == (
        128,
        4096,
        0.07,
        0.0,
    )


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_matches_reference_over_two_steps(momentum):
    loss = built(momentum=momentum)
    expected = NumpyCRD(loss)
    second_teacher = rng.normal(size=TEACHER.shape).astype("float32")
    second_student = rng.normal(size=STUDENT.shape).astype("float32")
    # First step: Z estimated from this batch; second step: Z kept, queue updated.
    for teacher, student in [(TEACHER, STUDENT), (second_teacher, second_student)]:
        got = loss_checks.value(loss, teacher, student)
        np.testing.assert_allclose(got, expected(teacher, student), rtol=1e-4)
    head = loss.layer
    np.testing.assert_allclose(head.memory_teacher.numpy(), expected.memory_t, atol=1e-5)
    np.testing.assert_allclose(head.memory_student.numpy(), expected.memory_s, atol=1e-5)
    np.testing.assert_allclose(float(head.z_student.numpy()), expected.z_s, rtol=1e-4)
    np.testing.assert_allclose(float(head.z_teacher.numpy()), expected.z_t, rtol=1e-4)


def test_z_is_set_once():
    loss = built()
    loss(TEACHER, STUDENT)
    z = float(loss.layer.z_student.numpy())
    assert z > 0
    loss(TEACHER * 3, STUDENT * 3)
    assert float(loss.layer.z_student.numpy()) == z


def test_queue_fills_with_the_batch_embeddings():
    loss = built(momentum=0.0)
    head = loss.layer
    before = head.memory_teacher.numpy()
    loss(TEACHER, STUDENT)
    after = head.memory_teacher.numpy()
    np.testing.assert_array_equal(after[:-4], before[4:])  # oldest 4 dropped
    np.testing.assert_allclose(after[-4:], np_embed(TEACHER, head.embed_teacher), atol=1e-6)
    np.testing.assert_allclose(
        head.memory_student.numpy()[-4:], np_embed(STUDENT, head.embed_student), atol=1e-6
    )
    for _ in range(3):  # 16 entries: four batches replace the initial memory
        loss(TEACHER, STUDENT)
    np.testing.assert_allclose(
        head.memory_teacher.numpy(),
        np.tile(np_embed(TEACHER, head.embed_teacher), (4, 1)),
        atol=1e-6,
    )


def test_one_scalar_per_batch():
    loss = built()
    assert loss.per_sample is False
    assert loss.call(tf.constant(TEACHER), tf.constant(STUDENT)).shape == ()
    with pytest.raises(ValueError, match="sample_weight"):
        loss(TEACHER, STUDENT, sample_weight=np.ones(4, "float32"))


def test_sampled_negatives_are_memory_rows():
    loss = built(memory_size=32)
    memory = np.arange(32 * 3, dtype="float32").reshape(32, 3)
    first, second = loss._negatives((tf.constant(memory), tf.constant(-memory)))
    assert first.shape == (16, 3)
    np.testing.assert_array_equal(second.numpy(), -first.numpy())  # same draw for both
    assert all(any(np.array_equal(row, m) for m in memory) for row in first.numpy())
    value = loss_checks.value(loss, TEACHER, STUDENT)
    assert np.isfinite(value)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(built(), TEACHER, STUDENT)


def test_gradient_reaches_both_embeddings():
    loss = built()
    with tf.GradientTape() as tape:
        value = loss(TEACHER, STUDENT)
    weights = loss.layer.trainable_weights
    grads = tape.gradient(value, weights)
    assert {w.path.split("/")[-2] for w in weights} == {"embed_teacher", "embed_student"}
    for weight, grad in zip(weights, grads):
        assert grad is not None, weight.path
        assert float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_training_the_student_lowers_the_loss():
    keras.utils.set_random_seed(0)
    local = np.random.default_rng(1)
    teacher = local.normal(size=(64, 8)).astype("float32")
    student = tf.Variable(local.normal(size=(64, 8)).astype("float32"))
    loss = CRDLoss(feature_dim=16, num_negatives=16, momentum=0.0)
    loss.build((None, 8), (None, 8))
    variables = [student] + loss.layer.trainable_weights
    optimizer = keras.optimizers.Adam(0.05)

    def retrieval_accuracy():
        e_t, e_s = loss.layer((teacher, student))
        nearest = np.argmax(e_s.numpy() @ e_t.numpy().T, axis=1)
        return np.mean(nearest == np.arange(64))

    initial_accuracy = retrieval_accuracy()

    @tf.function
    def step(t, index):
        with tf.GradientTape() as tape:
            value = loss(t, tf.gather(student, index))
        optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
        return value

    epochs = []
    for _ in range(15):
        values = [float(step(teacher[i : i + 16], tf.range(i, i + 16))) for i in range(0, 64, 16)]
        epochs.append(np.mean(values))
    assert epochs[-1] < 0.7 * epochs[1], epochs
    # And it learned the task: student embeddings retrieve their own teacher's.
    assert retrieval_accuracy() > max(0.5, 4 * initial_accuracy), initial_accuracy


def test_serialization_round_trip():
    loss = built(temperature=0.1, momentum=0.2, memory_size=32, name="crd")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    clone = CRDHead.from_config(loss.layer.get_config())
    assert clone.get_config() == loss.layer.get_config()


def test_float32_under_mixed_precision():
    # The loss is stateful (queue, Z), so compare two losses with equal state.
    half_loss, full_loss = built(), built()
    full_loss.layer.set_weights(half_loss.layer.get_weights())
    half = [tf.cast(x, "float16") for x in (TEACHER, STUDENT)]
    result = half_loss(*half)
    assert result.dtype == tf.float32
    reference = full_loss(*[tf.cast(x, "float32") for x in half])
    np.testing.assert_allclose(float(result), float(reference), rtol=1e-5)


@pytest.mark.parametrize("memory_size", [None, 32])
def test_works_under_xla(memory_size):
    loss = built(memory_size=memory_size)
    head = loss.layer
    before = head.memory_student.numpy()
    _learnable_checks.assert_jit_compiles(loss, TEACHER, STUDENT)
    after = head.memory_student.numpy()
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after[:-4], before[4:])
    assert float(head.z_teacher.numpy()) > 0


def test_xla_matches_eager():
    eager, jit = built(), built()
    jit.layer.set_weights(eager.layer.get_weights())
    fn = tf.function(lambda t, s: jit(t, s), jit_compile=True, autograph=False)
    for _ in range(2):
        np.testing.assert_allclose(
            float(fn(TEACHER, STUDENT)), loss_checks.value(eager, TEACHER, STUDENT), rtol=1e-5
        )
    np.testing.assert_allclose(
        jit.layer.memory_teacher.numpy(), eager.layer.memory_teacher.numpy(), atol=1e-6
    )


def test_weights_save_and_reload(tmp_path):
    # Warm-up call first: the saved state includes a filled queue and Z.
    _learnable_checks.assert_weights_round_trip(
        lambda: CRDLoss(**SMALL), TEACHER, STUDENT, tmp_path / "crd.weights.h5", warm_up=True
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"feature_dim": 0}, "feature_dim"),
        ({"feature_dim": 8.0}, "feature_dim"),
        ({"num_negatives": 0}, "num_negatives"),
        ({"num_negatives": None}, "num_negatives"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": "0.07"}, "temperature"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"memory_size": 0}, "memory_size"),
        ({"memory_size": 8, "num_negatives": 16}, "memory_size"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CRDLoss(**kwargs)


@pytest.mark.parametrize(
    "teacher_shape, student_shape, pattern",
    [
        ((4, 12), (3, 5), r"teacher shape \(4, 12\), student shape \(3, 5\)"),
        ((4,), (4, 5), r"teacher shape \(4,\) and student shape \(4, 5\)"),
        ((32, 12), (32, 5), r"teacher shape \(32, 12\).*student shape \(32, 5\)"),  # batch > memory
    ],
)
def test_rejects_bad_shapes(teacher_shape, student_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        CRDLoss(**SMALL)(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))


def test_batch_larger_than_memory_raises_after_build():
    loss = CRDLoss(**SMALL)
    loss.build((None, 12), (None, 5))
    with pytest.raises(ValueError, match="memory of 16"):
        loss(np.zeros((32, 12), "float32"), np.zeros((32, 5), "float32"))


def test_default_name_is_keras_style():
    assert CRDLoss().name == "crd_loss"
