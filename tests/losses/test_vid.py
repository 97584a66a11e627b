import keras
import numpy as np
import pytest
from keras import ops

from keras_kd.losses.vid import VIDLoss, VIDRegressor
from tests import backend_utils, loss_checks
from tests.losses import _learnable_checks

rng = np.random.default_rng(0)
TEACHER = rng.normal(size=(4, 4, 4, 6)).astype("float32")
STUDENT = rng.normal(size=(4, 8, 8, 3)).astype("float32")


def pool(x, size):
    b, h, w, c = x.shape
    return x.reshape(b, size, h // size, size, w // size, c).mean(axis=(2, 4))


def reference(teacher, student, layer, eps=1e-5):
    """RepDistiller's VIDLoss.forward in NumPy (float64), given the weights."""
    teacher, student = teacher.astype("float64"), student.astype("float64")
    if teacher.ndim == 4 and student.shape[1] > teacher.shape[1]:
        student = pool(student, teacher.shape[1])
    elif teacher.ndim == 4 and student.shape[1] < teacher.shape[1]:
        teacher = pool(teacher, student.shape[1])
    x = student
    for i, projection in enumerate(layer.regressor):
        if i:
            x = np.maximum(x, 0)
        kernel = projection.kernel.numpy().astype("float64")
        x = x @ kernel.reshape(kernel.shape[-2:])
    var = np.log1p(np.exp(layer.log_scale.numpy().astype("float64"))) + eps
    return (0.5 * ((x - teacher) ** 2 / var + np.log(var))).mean()


def built(teacher=TEACHER, student=STUDENT, **kwargs):
    loss = VIDLoss(**kwargs)
    loss.build((None,) + teacher.shape[1:], (None,) + student.shape[1:])
    _learnable_checks.perturb_trainable(loss.layer, seed=1)  # log_scale off its constant
    return loss


def test_build_creates_all_weights():
    loss = _learnable_checks.assert_builds_weights(VIDLoss, (None, 4, 4, 6), (None, 8, 8, 3))
    names = sorted(w.path.split("/")[-1] for w in loss.layer.weights)
    assert names == ["kernel", "kernel", "kernel", "log_scale"]
    kernels = [p.kernel.shape for p in loss.layer.regressor]
    # Reference: student_C -> mid -> mid -> teacher_C, mid = teacher_C by default.
    assert [tuple(k) for k in kernels] == [(1, 1, 3, 6), (1, 1, 6, 6), (1, 1, 6, 6)]
    assert len(loss.layer.trainable_weights) == 4


def test_mid_channels_sets_regressor_width():
    loss = VIDLoss(mid_channels=5)
    loss.build((None, 4, 4, 6), (None, 4, 4, 3))
    assert [tuple(p.kernel.shape) for p in loss.layer.regressor] == [
        (1, 1, 3, 5),
        (1, 1, 5, 5),
        (1, 1, 5, 6),
    ]


@pytest.mark.parametrize("init_pred_var", [5.0, 0.5])
def test_variance_starts_at_init_pred_var(init_pred_var):
    loss = VIDLoss(init_pred_var=init_pred_var)
    loss.build((None, 4, 4, 6), (None, 4, 4, 3))
    _, var = loss.layer(STUDENT[:, :4, :4])
    np.testing.assert_allclose(backend_utils.numpy(var), np.full(6, init_pred_var), rtol=1e-5)


@pytest.mark.parametrize(
    "teacher, student",
    [
        (TEACHER, STUDENT),  # student pooled 8x8 -> 4x4
        (TEACHER, STUDENT[:, :4, :4]),  # same size
        (rng.normal(size=(4, 8, 8, 6)).astype("float32"), STUDENT[:, :4, :4]),  # teacher pooled
    ],
)
def test_matches_reference_given_weights(teacher, student):
    loss = built(teacher, student)
    got = loss_checks.value(loss, teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student, loss.layer), rtol=1e-5)


def test_rank2_features_use_dense_regressor():
    teacher = rng.normal(size=(5, 7)).astype("float32")
    student = rng.normal(size=(5, 3)).astype("float32")
    loss = built(teacher, student)
    assert all(isinstance(p, keras.layers.Dense) for p in loss.layer.regressor)
    got = loss_checks.value(loss, teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student, loss.layer), rtol=1e-5)


def test_hand_computed_case_with_zero_regressor():
    # mean prediction 0, variance init_pred_var = 2: 0.5 * (mean(t^2) / 2 + log 2).
    loss = VIDLoss(init_pred_var=2.0)
    loss.build((None, 4, 4, 6), (None, 4, 4, 3))
    for projection in loss.layer.regressor:
        projection.kernel.assign(np.zeros(projection.kernel.shape, "float32"))
    expected = 0.5 * ((TEACHER.astype("float64") ** 2).mean() / 2.0 + np.log(2.0))
    np.testing.assert_allclose(
        loss_checks.value(loss, TEACHER, STUDENT[:, :4, :4]), expected, rtol=1e-5
    )


def test_one_value_per_example():
    loss = built()
    per_example = backend_utils.numpy(loss.call(ops.convert_to_tensor(TEACHER), ops.convert_to_tensor(STUDENT)))
    assert per_example.shape == (4,)
    np.testing.assert_allclose(
        per_example[1], reference(TEACHER[1:2], STUDENT[1:2], loss.layer), rtol=1e-5
    )


def test_variance_and_regressor_receive_gradients():
    loss = built()
    weights = loss.layer.trainable_weights
    _, _, grads = backend_utils.value_and_grad(lambda: loss(TEACHER, STUDENT), (), weights)
    assert len(weights) == 4 and any("log_scale" in w.path for w in weights)
    for weight, grad in zip(weights, grads):
        assert np.abs(grad).max() > 0, weight.path


def test_training_the_regressor_lowers_the_loss():
    keras.utils.set_random_seed(0)
    local = np.random.default_rng(1)
    student = local.normal(size=(16, 4, 4, 3)).astype("float32")
    teacher = np.maximum(student @ local.normal(size=(3, 6)), 0).astype("float32")
    loss = VIDLoss()
    loss.build((None, 4, 4, 6), (None, 4, 4, 3))
    optimizer = keras.optimizers.Adam(0.05)
    weights = loss.layer.trainable_weights
    before = loss_checks.value(loss, teacher, student)
    for _ in range(60):
        _, _, grads = backend_utils.value_and_grad(lambda: loss(teacher, student), (), weights)
        optimizer.apply([ops.convert_to_tensor(g) for g in grads], weights)
    after = loss_checks.value(loss, teacher, student)
    assert after < before - 0.5, (before, after)


def test_gradient_reaches_student_only():
    loss_checks.assert_gradient_reaches_student_only(built(), TEACHER, STUDENT)


def test_serialization_round_trip():
    loss = built(mid_channels=4, init_pred_var=3.0, eps=1e-4, name="vid")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    layer = loss.layer
    clone = VIDRegressor.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(built(), TEACHER, STUDENT)


def test_layer_stays_float32_under_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        loss = VIDLoss()
        loss.build((None, 4, 4, 6), (None, 8, 8, 3))
        value = loss(ops.cast(TEACHER, "float16"), ops.cast(STUDENT, "float16"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert all(w.dtype == "float32" for w in loss.layer.weights)
    assert all(p.compute_dtype == "float32" for p in loss.layer.regressor)


def test_works_under_xla():
    loss = built()
    jit = _learnable_checks.assert_jit_compiles(loss, TEACHER, STUDENT)
    np.testing.assert_allclose(jit, loss_checks.value(loss, TEACHER, STUDENT), rtol=1e-5)


def test_weights_save_and_reload(tmp_path):
    _learnable_checks.assert_weights_round_trip(
        VIDLoss, TEACHER, STUDENT, tmp_path / "vid.weights.h5", warm_up=False
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mid_channels": 0}, "mid_channels"),
        ({"mid_channels": 2.5}, "mid_channels"),
        ({"init_pred_var": 0}, "init_pred_var"),
        ({"init_pred_var": "5"}, "init_pred_var"),
        ({"eps": -1e-5}, "eps"),
        ({"eps": None}, "eps"),
        ({"init_pred_var": 1e-6, "eps": 1e-5}, "init_pred_var"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VIDLoss(**kwargs)


@pytest.mark.parametrize(
    "teacher_shape, student_shape",
    [
        ((2, 4, 4, 6), (2, 3)),  # ranks differ
        ((2, 4, 6), (2, 4, 3)),  # rank 3
    ],
)
def test_rejects_bad_shapes(teacher_shape, student_shape):
    with pytest.raises(ValueError, match=r"teacher shape \(2, .*student shape \(2,"):
        VIDLoss()(np.zeros(teacher_shape, "float32"), np.zeros(student_shape, "float32"))


def test_rebuild_with_other_shapes_raises():
    loss = VIDLoss()
    loss.build((None, 4, 4, 6), (None, 4, 4, 3))
    with pytest.raises(ValueError, match=r"\(None, 4, 4, 8\)"):
        loss.build((None, 4, 4, 8), (None, 4, 4, 3))


def test_default_name_is_keras_style():
    assert VIDLoss().name == "vid_loss"
