"""TeacherCache: the teacher runs in the first epoch only, later epochs
replay its stored features; non-repeating data is refused before training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_kd
from keras_kd import datasets
from keras_kd.callbacks import TeacherCache
from tests.backend_utils import tensorflow_only
from tests.conftest import cnn, mlp, sparse_ce

# Only the TensorFlow step replays stored features (tf.cond on the cache's
# state); on JAX and PyTorch TeacherCache refuses with one clear error
# (tests/test_distiller.py::test_teacher_cache_needs_tensorflow).
pytestmark = tensorflow_only("TeacherCache replays the teacher's features inside the tf.function step")


def _distiller(seed=0):
    keras.utils.set_random_seed(seed)
    teacher, student = cnn(8, "teacher"), cnn(4, "student")
    terms = [
        keras_kd.Term(keras_kd.losses.KDLoss(), weight=0.9),
        keras_kd.Term(keras_kd.losses.AttentionTransferLoss(), "block2", "block2", weight=100.0),
    ]
    distiller = keras_kd.Distiller(teacher, student, terms, student_loss_weight=0.1)
    distiller.compile(keras.optimizers.SGD(0.05), sparse_ce())
    return distiller


def _data(digits):
    x, y = digits
    # 150 examples in batches of 32: the last batch is short, as in real epochs.
    return tf.data.Dataset.from_tensor_slices((x.reshape(-1, 8, 8, 1)[:150], y[:150])).batch(32)


def test_later_epochs_replay_the_first_epochs_teacher_outputs(digits):
    dataset = _data(digits)
    cached = _distiller()
    # After epoch 1 the teacher is wiped: only a replayed cache can still teach the same thing.
    wipe = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: cached.teacher.set_weights([np.zeros_like(w) for w in cached.teacher.get_weights()])
    )
    cached_history = cached.fit(dataset, epochs=3, callbacks=[TeacherCache(), wipe], verbose=0).history
    plain = _distiller()
    plain_history = plain.fit(dataset, epochs=3, verbose=0).history
    for key in ("kd_loss", "attention_transfer_loss", "student_loss", "loss"):
        np.testing.assert_allclose(cached_history[key], plain_history[key], rtol=1e-4)
    for a, b in zip(cached.student.get_weights(), plain.student.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert cached.teacher_cache is None  # released after fit


def test_arrays_need_shuffle_false(digits):
    x, y = digits
    distiller = _distiller()
    with pytest.raises(ValueError, match="shuffle=False"):
        distiller.fit(x.reshape(-1, 8, 8, 1)[:64], y[:64], epochs=1, callbacks=[TeacherCache()], verbose=0)
    history = distiller.fit(
        x.reshape(-1, 8, 8, 1)[:64], y[:64], epochs=2, shuffle=False, callbacks=[TeacherCache()], verbose=0
    )
    assert len(history.history["kd_loss"]) == 2


def test_shuffled_or_augmented_pipelines_are_refused(digits):
    distiller = _distiller()
    shuffled = _data(digits).unbatch().shuffle(150).batch(32)
    with pytest.raises(ValueError, match="shuffled or randomly augmented.*Shuffle"):
        distiller.fit(shuffled, epochs=1, callbacks=[TeacherCache()], verbose=0)
    augmented = datasets.load("digits", batch_size=32, augment=True, limit=64).train
    with pytest.raises(ValueError, match="shuffled or randomly augmented"):
        distiller.fit(augmented, epochs=1, callbacks=[TeacherCache()], verbose=0)


def test_budget_is_enforced(digits):
    distiller = _distiller()
    with pytest.raises(ValueError, match="GiB"):
        distiller.fit(_data(digits), epochs=1, callbacks=[TeacherCache(budget_bytes=1000)], verbose=0)
    with pytest.raises(ValueError, match="budget_bytes"):
        TeacherCache(budget_bytes=0)


def test_cached_step_runs_without_xla_and_restores_it(digits):
    distiller = _distiller()
    distiller.compile(keras.optimizers.SGD(0.05), sparse_ce(), jit_compile=True)
    seen = []
    probe = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(distiller.jit_compile))
    distiller.fit(_data(digits), epochs=2, callbacks=[TeacherCache(), probe], verbose=0)
    assert seen == [False, False] and distiller.jit_compile is True


def _exact_copy_distiller():
    """A student that is an exact copy of the teacher, learning rate 0: a
    logit-MSE term reads 0 on every batch whose teacher outputs are right."""
    teacher = mlp(16, "teacher", batch_norm=False)
    student = keras.models.clone_model(teacher)
    student.set_weights(teacher.get_weights())
    distiller = keras_kd.Distiller(teacher, student, [keras_kd.Term(keras_kd.losses.LogitMSELoss())])
    distiller.compile(keras.optimizers.SGD(0.0), sparse_ce())
    return distiller


def _changing_pipelines(digits):
    """Two pipelines whose epochs differ in ways the op-name check cannot see."""
    x, y = digits[0][:96], digits[1][:96]
    order = np.random.default_rng(0)

    def reshuffled():  # a Python generator that draws a new order each epoch
        for i in order.permutation(len(x)):
            yield x[i], y[i]

    spec = (tf.TensorSpec((64,), tf.float32), tf.TensorSpec((), tf.int32))
    shuffled = tf.data.Dataset.from_generator(reshuffled, output_signature=spec).batch(32)
    shuffled = shuffled.apply(tf.data.experimental.assert_cardinality(3))
    noise = np.random.default_rng(1)

    def add_noise(batch):
        return (batch + noise.normal(0, 0.01, batch.shape)).astype("float32")

    noisy = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    noisy = noisy.map(lambda a, b: (tf.ensure_shape(tf.numpy_function(add_noise, [a], tf.float32), a.shape), b))
    return {"reshuffling generator": shuffled, "noisy numpy_function": noisy}


@pytest.mark.parametrize("kind", ["reshuffling generator", "noisy numpy_function"])
def test_replayed_batches_that_changed_stop_fit(digits, kind):
    dataset = _changing_pipelines(digits)[kind]
    plain = _exact_copy_distiller().fit(dataset, epochs=2, shuffle=False, verbose=0).history
    assert max(plain["logit_mse_loss"]) < 1e-10  # right teacher outputs: the copy matches them exactly
    distiller = _exact_copy_distiller()
    with pytest.raises(ValueError, match=r"TeacherCache: batch 0 of epoch 2 does not hold the inputs"):
        distiller.fit(dataset, epochs=2, shuffle=False, callbacks=[TeacherCache()], verbose=0)
    assert distiller.teacher_cache is None  # released although fit stopped
