import math
import re

import keras
import numpy as np
import pytest
from keras import ops

import keras_kd
from keras_kd import recipes
from keras_kd.losses.review import (
    AttentionBasedFusion,
    ReviewFusion,
    ReviewKDLoss,
    hierarchical_context_loss,
    nearest_resize,
)
from tests import backend_utils, loss_checks
from tests.conftest import cnn, sparse_ce
from tests.losses import _learnable_checks
from tests.losses.feature_reference import adaptive_avg_pool

rng = np.random.default_rng(0)


def maps(*shapes):
    return tuple(rng.normal(size=shape).astype("float32") for shape in shapes)


# Stages in increasing depth: 8x8, 4x4, then the pooled (B, C) embedding.
TEACHER = maps((4, 8, 8, 6), (4, 4, 4, 10), (4, 10))
STUDENT = maps((4, 8, 8, 3), (4, 4, 4, 5), (4, 7))


def shapes(features):
    return tuple((None,) + f.shape[1:] for f in features)


def built(teacher=TEACHER, student=STUDENT, **kwargs):
    loss = ReviewKDLoss(**kwargs)
    loss.build(shapes(teacher), shapes(student))
    _learnable_checks.perturb_trainable(loss.layer, seed=1)  # BatchNorm off gamma 1, beta 0
    return loss


# --- NumPy references (float64), after ReviewKD's CIFAR-100/model/reviewkd.py ---


def hcl_reference(student, teacher):
    """The reference's `hcl` for one stage: torch's mean-reduced MSEs."""
    student, teacher = student.astype("float64"), teacher.astype("float64")
    loss = ((student - teacher) ** 2).mean()
    cnt = tot = 1.0
    for level in [4, 2, 1]:
        if level >= student.shape[1]:
            continue
        pooled_s, pooled_t = adaptive_avg_pool(student, level, level), adaptive_avg_pool(teacher, level, level)
        cnt /= 2.0
        loss += ((pooled_s - pooled_t) ** 2).mean() * cnt
        tot += cnt
    return loss / tot


def np_as_map(x):
    x = np.asarray(x, "float64")
    return x.reshape(len(x), 1, 1, -1) if x.ndim == 2 else x


def np_batch_norm(x, bn):
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    gamma, beta = bn.gamma.numpy().astype("float64"), bn.beta.numpy().astype("float64")
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def np_conv_same(x, conv):
    kernel = conv.kernel.numpy().astype("float64")
    kh, kw = kernel.shape[:2]
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = sum(padded[:, i : i + height, j : j + width] @ kernel[i, j] for i in range(kh) for j in range(kw))
    return out + conv.bias.numpy() if conv.use_bias else out


def np_nearest(x, height, width):
    rows = (np.arange(height) * x.shape[1]) // height
    cols = (np.arange(width) * x.shape[2]) // width
    return x[:, rows][:, :, cols]


def abf_reference(block, x, residual):
    x = np_batch_norm(np_conv_same(x, block.reduce), block.reduce_norm)
    if block.fuse:
        residual = np_nearest(residual, *x.shape[1:3])
        attention = 1.0 / (1.0 + np.exp(-np_conv_same(np.concatenate([x, residual], -1), block.attention)))
        x = x * attention[..., :1] + residual * attention[..., 1:]
    return np_batch_norm(np_conv_same(x, block.project), block.project_norm), x


def reference(teacher, student, layer):
    """ReviewKD.forward (review path, deepest first) and `hcl`, given the weights."""
    student = [np_as_map(s) for s in student]
    outputs, residual = [None] * len(student), None
    for i in reversed(range(len(student))):
        outputs[i], residual = abf_reference(layer.blocks[i], student[i], residual)
    return sum(hcl_reference(o, np_as_map(t)) for o, t in zip(outputs, teacher))


# --- HCL ---


@pytest.mark.parametrize(
    "shape",
    [(3, 8, 8, 2), (3, 4, 4, 3), (3, 2, 2, 2), (3, 1, 1, 4), (3, 6, 5, 2), (3, 7, 7, 1), (3, 16, 16, 1)],
)
def test_hcl_matches_numpy_reference(shape):
    teacher, student = maps(shape, shape)
    got = backend_utils.numpy(hierarchical_context_loss(teacher, student))
    assert got.shape == (shape[0],)
    np.testing.assert_allclose(float(np.mean(got)), hcl_reference(student, teacher), rtol=1e-5)
    for i in range(shape[0]):  # one value per example: the reference on that example alone
        np.testing.assert_allclose(float(got[i]), hcl_reference(student[i : i + 1], teacher[i : i + 1]), rtol=1e-5)


def test_hcl_hand_computed_2x2():
    # Levels 4 and 2 are skipped (>= H); level 1 gets weight 1/2:
    # full MSE (1 + 4 + 9 + 16) / 4 = 7.5, pooled mean 2.5 -> 6.25;
    # (7.5 + 0.5 * 6.25) / 1.5.
    student = np.array([1.0, 2.0, 3.0, 4.0], "float32").reshape(1, 2, 2, 1)
    got = float(backend_utils.numpy(hierarchical_context_loss(np.zeros_like(student), student))[0])
    np.testing.assert_allclose(got, (7.5 + 0.5 * 6.25) / 1.5, rtol=1e-6)


@pytest.mark.parametrize("size, total", [(8, 1 + 1 / 2 + 1 / 4 + 1 / 8), (4, 1 + 1 / 2 + 1 / 4), (1, 1.0)])
def test_hcl_normalises_by_the_weights_of_the_levels_used(size, total):
    # A +-1 checkerboard: MSE 1 at full resolution, 0 once pooled (any even
    # window), so the loss is 1 / (total weight). At 1x1 it is just the MSE.
    board = np.indices((size, size)).sum(axis=0) % 2 * 2.0 - 1.0
    student = board.reshape(1, size, size, 1).astype("float32")
    got = float(backend_utils.numpy(hierarchical_context_loss(np.zeros_like(student), student))[0])
    np.testing.assert_allclose(got, 1.0 / total, rtol=1e-6)


def test_hcl_levels_argument():
    teacher, student = maps((2, 8, 8, 3), (2, 8, 8, 3))
    got = backend_utils.numpy(hierarchical_context_loss(teacher, student, levels=()))
    np.testing.assert_allclose(got, ((student - teacher) ** 2).mean(axis=(1, 2, 3)), rtol=1e-5)


def test_hcl_is_zero_for_equal_inputs():
    (features,) = maps((3, 8, 8, 4))
    np.testing.assert_allclose(backend_utils.numpy(hierarchical_context_loss(features, features)), 0.0, atol=0)


def test_nearest_resize_is_torchs_nearest():
    (x,) = maps((2, 3, 2, 4))
    for size in [(6, 4), (8, 8), (3, 2), (1, 1), (5, 7)]:
        np.testing.assert_array_equal(backend_utils.numpy(nearest_resize(ops.convert_to_tensor(x), *size)), np_nearest(x, *size))


# --- the loss ---


def test_matches_numpy_reference_given_weights():
    loss = built()
    got = loss_checks.value(loss, TEACHER, STUDENT)
    np.testing.assert_allclose(got, reference(TEACHER, STUDENT, loss.layer), rtol=1e-4)


@pytest.mark.parametrize(
    "teacher_shapes, student_shapes",
    [
        (((2, 4, 4, 3),), ((2, 4, 4, 5),)),  # one stage: no fusion
        (((2, 8, 8, 2), (2, 4, 4, 2)), ((2, 8, 8, 3), (2, 2 * 2, 4, 1))),
        (((2, 6, 6, 2), (2, 3, 3, 4), (2, 3, 3, 4)), ((2, 6, 6, 3), (2, 3, 3, 2), (2, 3, 3, 2))),  # upsample x2, x1
        (((2, 5), (2, 5)), ((2, 3), (2, 3))),  # vectors only
    ],
)
def test_matches_numpy_reference_on_other_stacks(teacher_shapes, student_shapes):
    teacher, student = maps(*teacher_shapes), maps(*student_shapes)
    loss = built(teacher, student)
    got = loss_checks.value(loss, teacher, student)
    np.testing.assert_allclose(got, reference(teacher, student, loss.layer), rtol=1e-4)


def test_zero_when_fused_student_equals_teacher():
    # With the last conv of every block zeroed, each output is its BatchNorm's
    # beta: a teacher equal to those constants gives a zero loss.
    loss = built()
    teacher = []
    for block, t in zip(loss.layer.blocks, TEACHER):
        block.project.kernel.assign(np.zeros(block.project.kernel.shape, "float32"))
        teacher.append(np.broadcast_to(block.project_norm.beta.numpy(), t.shape).astype("float32"))
    np.testing.assert_allclose(loss_checks.value(loss, tuple(teacher), STUDENT), 0.0, atol=1e-10)
    assert loss_checks.value(loss, TEACHER, STUDENT) > 0


def test_one_value_per_example_and_sample_weight():
    loss = built()
    per_example = backend_utils.numpy(
        loss.call(tuple(map(ops.convert_to_tensor, TEACHER)), tuple(map(ops.convert_to_tensor, STUDENT)))
    )
    assert per_example.shape == (4,)
    weights = np.array([0.5, 2.0, 0.0, 1.0], "float32")
    got = loss_checks.value(loss, TEACHER, STUDENT, sample_weight=weights)
    np.testing.assert_allclose(got, (weights * per_example).sum() / 4, rtol=1e-5)


def test_build_creates_all_weights():
    loss = _learnable_checks.assert_builds_weights(ReviewKDLoss, shapes(TEACHER), shapes(STUDENT))
    layer = loss.layer
    assert isinstance(layer, ReviewFusion) and layer.dtype == "float32"
    # mid_channels = min(512, channels of the deepest student feature) = 7.
    assert layer.mid_channels == 7 and layer.out_channels == [6, 10, 10]
    assert [block.fuse for block in layer.blocks] == [True, True, False]  # the deepest does not fuse
    first, last = layer.blocks[0], layer.blocks[-1]
    assert tuple(first.reduce.kernel.shape) == (1, 1, 3, 7)
    assert tuple(first.attention.kernel.shape) == (1, 1, 14, 2) and first.attention.use_bias
    assert tuple(first.project.kernel.shape) == (3, 3, 7, 6)
    assert tuple(last.reduce.kernel.shape) == (1, 1, 7, 7) and last.attention is None
    assert tuple(last.project.kernel.shape) == (3, 3, 7, 10)
    # Per block: reduce kernel, 2 BatchNorms x (gamma, beta), project kernel (+ attention kernel, bias).
    assert len(layer.trainable_weights) == 3 * 6 + 2 * 2
    assert len(layer.non_trainable_weights) == 3 * 4  # moving statistics


def test_mid_channels_are_capped_at_512_and_settable():
    loss = ReviewKDLoss()
    loss.build(((None, 2, 2, 8), (None, 600)), ((None, 2, 2, 4), (None, 1024)))
    assert loss.layer.mid_channels == 512
    loss = ReviewKDLoss(mid_channels=5)
    loss.build(shapes(TEACHER), shapes(STUDENT))
    assert loss.layer.mid_channels == 5 and tuple(loss.layer.blocks[1].reduce.kernel.shape) == (1, 1, 5, 5)


def test_init_follows_the_reference():
    keras.utils.set_random_seed(3)
    loss = ReviewKDLoss(mid_channels=64)
    loss.build(((None, 4, 4, 32), (None, 2, 2, 32)), ((None, 4, 4, 256), (None, 2, 2, 256)))
    block = loss.layer.blocks[0]
    # kaiming_uniform_(a=1): U(+-sqrt(3 / fan_in)); the attention conv: torch's default U(+-1/sqrt(fan_in)).
    for kernel, bound in [
        (block.reduce.kernel, math.sqrt(3 / 256)),
        (block.project.kernel, math.sqrt(3 / (9 * 64))),
        (block.attention.kernel, 1 / math.sqrt(128)),
        (block.attention.bias, 1 / math.sqrt(128)),
    ]:
        values = np.abs(kernel.numpy())
        assert values.max() <= bound, kernel.path
        assert values.size < 10 or values.max() > 0.8 * bound, kernel.path  # the bias has two values


def test_gradients_reach_student_and_fusion_never_teacher():
    loss = built()
    loss_checks.assert_gradient_reaches_student_only(loss, TEACHER, STUDENT)
    weights = loss.layer.trainable_weights
    _, (student_grads,), weight_grads = backend_utils.value_and_grad(
        lambda student: loss(TEACHER, student), (STUDENT,), weights
    )
    names = [w.path for w in weights] + [f"student feature {i}" for i in range(len(STUDENT))]
    for name, grad in zip(names, list(weight_grads) + list(student_grads)):
        assert np.all(np.isfinite(grad)), name
        assert np.abs(grad).max() > 0, name


def test_same_value_under_xla():
    loss = built()
    loss_checks.assert_same_under_xla(loss, TEACHER, STUDENT, rtol=1e-5)


def test_float32_under_mixed_precision():
    loss_checks.assert_float32_under_float16_inputs(built(), TEACHER, STUDENT)


def test_layer_stays_float32_under_mixed_precision_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        loss = ReviewKDLoss()
        loss.build(shapes(TEACHER), shapes(STUDENT))
        value = loss(*loss_checks.cast((TEACHER, STUDENT), "float16"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert all(w.dtype == "float32" for w in loss.layer.weights)
    assert all(block.reduce.compute_dtype == "float32" for block in loss.layer.blocks)


def test_serialization_round_trip():
    loss = built(mid_channels=4, levels=[2, 1], name="review")
    loss_checks.assert_serializable(loss, TEACHER, STUDENT)
    clone = ReviewKDLoss.from_config(loss.get_config())
    assert clone.mid_channels == 4 and clone.levels == (2, 1) and clone.name == "review"
    layer = loss.layer
    assert ReviewFusion.from_config(layer.get_config()).get_config() == layer.get_config()
    block = layer.blocks[0]
    assert AttentionBasedFusion.from_config(block.get_config()).get_config() == block.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mid_channels": 0}, "mid_channels=0"),
        ({"mid_channels": 2.5}, "mid_channels=2.5"),
        ({"mid_channels": True}, "mid_channels=True"),
        ({"levels": 4}, "levels=4"),
        ({"levels": [4, 0]}, r"levels=\[4, 0\]"),
        ({"levels": [2.0]}, r"levels=\[2.0\]"),
    ],
)
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReviewKDLoss(**kwargs)


@pytest.mark.parametrize(
    "teacher, student, match",
    [
        (TEACHER[0], STUDENT[0], "a list of one or more feature maps"),  # not a list
        ([], [], "a list of one or more feature maps"),
        (TEACHER[:2], STUDENT, "2 teacher and 3 student features"),
        (
            TEACHER,
            (STUDENT[0], np.zeros((4, 2, 2, 5), "float32"), STUDENT[2]),
            re.escape("stage 2 has teacher shape (4, 4, 4, 10) and student shape (4, 2, 2, 5) (4x4 vs 2x2)"),
        ),
        (
            (np.zeros((4, 8, 6), "float32"),),
            (np.zeros((4, 8, 3), "float32"),),
            re.escape("teacher feature of shape (4, 8, 6)"),
        ),
        (
            TEACHER[::-1][1:],
            STUDENT[::-1][1:],
            "increasing depth.*student feature 2 of shape \\(4, 8, 8, 3\\)",
        ),
    ],
)
def test_rejects_bad_shapes_clearly(teacher, student, match):
    with pytest.raises(ValueError, match=match):
        ReviewKDLoss()(teacher, student)


def test_check_shapes_rejects_a_single_shape():
    with pytest.raises(ValueError, match=r"one per stage.*teacher_layer=\[\.\.\.\]"):
        ReviewKDLoss().check_shapes((None, 8, 8, 6), (None, 8, 8, 3))


def test_rebuild_with_other_shapes_raises():
    loss = built()
    loss.build(((8,) + TEACHER[0].shape[1:],) + shapes(TEACHER)[1:], shapes(STUDENT))  # batch size is free
    other = shapes(TEACHER)[:2] + ((None, 12),)
    with pytest.raises(ValueError, match=r"\(None, 12\)"):
        loss.build(other, shapes(STUDENT))


def test_default_name_is_keras_style():
    assert ReviewKDLoss().name == "review_kd_loss"
    assert ReviewKDLoss.num_maps is None


# --- inside a Distiller ---

LAYERS = (["bn1", "bn2", "pool"], ["block1", "block2", "pool"])


def review_distiller(**kwargs):
    term = keras_kd.Term(ReviewKDLoss(), teacher_layer=LAYERS[0], student_layer=LAYERS[1], **kwargs)
    return keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), [term])


def test_distiller_trains_the_fusion_with_the_student(digits):
    x, y = digits
    images = x.reshape(-1, 8, 8, 1)[:64]
    distiller = review_distiller()
    fusion = distiller.loss_layers["review_kd_loss"]
    assert isinstance(fusion, ReviewFusion) and fusion.out_channels == [8, 16, 16]
    assert {id(v) for v in fusion.trainable_weights} <= {id(v) for v in distiller.trainable_weights}
    assert not {id(v) for v in distiller.teacher.weights} & {id(v) for v in distiller.trainable_weights}
    teacher_before = [w.copy() for w in distiller.teacher.get_weights()]
    student_before = [w.copy() for w in distiller.student.get_weights()]
    fusion_before = [np.array(v) for v in fusion.trainable_weights]
    distiller.compile(keras.optimizers.Adam(1e-2), sparse_ce(), jit_compile=False)
    history = distiller.fit(images, y[:64], epochs=8, batch_size=64, verbose=0).history["review_kd_loss"]
    assert all(math.isfinite(v) for v in history)
    assert history[-1] < 0.8 * history[0], history
    for before, after in zip(teacher_before, distiller.teacher.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a) for b, a in zip(student_before, distiller.student.get_weights()))
    assert all(not np.array_equal(b, np.array(a)) for b, a in zip(fusion_before, fusion.trainable_weights))


def test_distiller_round_trips_through_keras_saving(digits, tmp_path):
    x, y = digits
    images, labels = x.reshape(-1, 8, 8, 1)[:64], y[:64]
    distiller = review_distiller(weight=5.0)
    distiller.compile("adam", sparse_ce(), jit_compile=False)
    _learnable_checks.perturb_trainable(distiller.loss_layers["review_kd_loss"])  # as if trained (no retrace)
    distiller.optimizer.build(distiller.trainable_variables)
    expected = distiller.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    config = distiller.get_config()
    assert keras_kd.Distiller.from_config(config).get_config()["terms"] == config["terms"]
    distiller.save(tmp_path / "review.keras")
    restored = keras.saving.load_model(tmp_path / "review.keras")
    (term,) = restored.terms
    assert isinstance(term.loss, ReviewKDLoss) and term.weight == 5.0
    assert term.teacher_layer == tuple(LAYERS[0]) and term.student_layer == tuple(LAYERS[1])
    saved, loaded = distiller.loss_layers["review_kd_loss"], restored.loss_layers["review_kd_loss"]
    for a, b in zip(saved.weights, loaded.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    got = restored.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)
    for key in ("review_kd_loss", "student_loss"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5)


def test_distiller_names_the_term_when_given_one_layer():
    term = keras_kd.Term(ReviewKDLoss(), teacher_layer="block1", student_layer="block1")
    with pytest.raises(ValueError, match="Term 'review_kd_loss'.*one per stage"):
        keras_kd.Distiller(cnn(8, "teacher"), cnn(4, "student"), [term])


def test_recipe_reads_stages_and_embedding_of_zoo_resnets():
    from keras_kd import models

    teacher = models.get("resnet14", (8, 8, 3), 10)
    student = models.get("resnet8", (8, 8, 3), 10)
    distiller = recipes.distiller("reviewkd", teacher, student)
    (term,) = distiller.terms
    assert term.teacher_layer == ("stage1_preact", "stage2_preact", "stage3_preact", "embedding")
    assert term.student_layer == ("stage1", "stage2", "stage3", "embedding")
    assert term.weight == 5.0 and distiller.student_loss_weight == 1.0
    # mid_channels = min(512, 64), outputs with the teacher's channels.
    assert distiller.loss_layers[term.name].mid_channels == 64
    assert distiller.loss_layers[term.name].out_channels == [16, 32, 64, 64]
    assert "reviewkd" in recipes.names() and "ReviewKDLoss" in keras_kd.losses.__all__
