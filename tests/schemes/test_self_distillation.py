import keras
import numpy as np
import pytest

from keras_kd import export, models
from keras_kd.schemes.self_distillation import SelfDistillation
from tests.conftest import mlp, sparse_ce


def zoo_cnn(widths=(4, 8)):
    return models.get("cnn_small", (8, 8, 1), 10, widths=widths)


def images(digits, n):
    x, y = digits
    return x[:n].reshape(-1, 8, 8, 1), y[:n]


def test_a_head_per_stage_but_the_last_on_a_zoo_cnn():
    sd = SelfDistillation(zoo_cnn(widths=(4, 8, 16)))
    assert sd.sections == ["stage1", "stage2"]
    for head in sd.heads:  # bottleneck to the deepest stage's 16 channels, pooled
        assert [tuple(output.shape) for output in head.outputs] == [(None, 16), (None, 10)]
    # One stride-2 conv per halving to the deepest map (8x8 -> 2x2, 4x4 -> 2x2).
    assert [
        sum(layer.name.endswith("_conv") and "down" in layer.name for layer in head.layers) for head in sd.heads
    ] == [2, 1]
    exits = sd.exits(np.zeros((3, 8, 8, 1), "float32"))
    assert {key: tuple(value.shape) for key, value in exits.items()} == {
        "logits": (3, 10),
        "feature": (3, 16),
        "head1_logits": (3, 10),
        "head1_feature": (3, 16),
        "head2_logits": (3, 10),
        "head2_feature": (3, 16),
    }
    assert SelfDistillation(zoo_cnn()).sections == ["stage1"]  # the brief's cnn_small case


def test_dense_heads_on_an_mlp_project_to_the_deepest_width():
    sd = SelfDistillation(mlp(32, "mlp"), sections=["hidden"])
    assert [tuple(output.shape) for output in sd.heads[0].outputs] == [(None, 32), (None, 10)]
    narrow = SelfDistillation(mlp(32, "mlp"), sections=["hidden"], head_width=8)
    head = narrow.heads[0]
    assert head.get_layer("self_distillation_head1_dense").units == 8
    assert head.get_layer("self_distillation_head1_projection").units == 32
    assert [tuple(output.shape) for output in head.outputs] == [(None, 32), (None, 10)]


def test_one_step_trains_the_model_and_the_heads(digits):
    x, y = images(digits, 64)
    sd = SelfDistillation(zoo_cnn())
    sd.compile(keras.optimizers.SGD(0.1), sparse_ce(), metrics=["accuracy"])
    weights = sd.model.trainable_weights + sd.heads[0].trainable_weights
    before = [w.numpy() for w in weights]
    logs = sd.train_on_batch(x, y, return_dict=True)
    for weight, value in zip(weights, before):
        assert not np.allclose(weight.numpy(), value), f"{weight.path} did not change"
    expected = {"loss", "accuracy", "final_loss", "head1_loss", "head1_kd_loss", "head1_hint_loss", "head1_accuracy"}
    assert set(logs) == expected
    # The total is the paper's weighted sum (no regularizers here).
    evaluated = sd.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(
        evaluated["loss"],
        evaluated["final_loss"]
        + 0.7 * evaluated["head1_loss"]
        + 0.3 * evaluated["head1_kd_loss"]
        + 0.03 * evaluated["head1_hint_loss"],
        rtol=1e-5,
    )


class DistillationOnly(SelfDistillation):
    """Minimises the heads' KD and hint terms alone."""

    def compute_losses(self, y, sample_weight, exits):
        values, _ = super().compute_losses(y, sample_weight, exits)
        return values, values["head1_kd_loss"] + values["head1_hint_loss"]


@pytest.mark.filterwarnings("ignore:Gradients do not exist")  # the deepest classifier's, as intended
def test_kd_and_hint_terms_do_not_reach_the_deepest_classifier(digits):
    x, y = images(digits, 32)
    model = zoo_cnn()
    sd = DistillationOnly(model, alpha=1.0, beta=1.0)
    sd.compile(keras.optimizers.SGD(0.5), sparse_ce())
    deepest = [model.get_layer("logits").kernel, model.get_layer("stage2_conv").kernel]
    shallow = [model.get_layer("stage1_conv").kernel, sd.heads[0].get_layer("self_distillation_head1_logits").kernel]
    before = [w.numpy() for w in deepest + shallow]
    logs = sd.train_on_batch(x, y, return_dict=True)
    assert logs["head1_kd_loss"] > 0 and logs["head1_hint_loss"] > 0
    for weight, value in zip(deepest, before[:2]):  # reached through the stop-gradiented targets only: unchanged
        np.testing.assert_array_equal(weight.numpy(), value, err_msg=weight.path)
    for weight, value in zip(shallow, before[2:]):  # the head and the shallow section learn
        assert not np.allclose(weight.numpy(), value), weight.path


def test_export_model_is_the_original_classifier():
    model = zoo_cnn()
    names = [layer.name for layer in model.layers]
    count = len(model.weights)
    exported = SelfDistillation(model).export_model()
    assert exported is model
    assert [layer.name for layer in exported.layers] == names and len(exported.weights) == count


def trained_early_exit(digits):
    x, y = images(digits, 64)
    sd = SelfDistillation(zoo_cnn())
    sd.compile("adam", sparse_ce())
    sd.train_on_batch(x, y)
    return sd, sd.export_head(0), x[:8]


def test_export_head_is_the_early_exit(digits):
    sd, early, x = trained_early_exit(digits)
    assert early.inputs[0].shape[1:] == (8, 8, 1) and early.outputs[0].shape[1:] == (10,)
    expected = keras.ops.convert_to_numpy(sd.exits(x)["head1_logits"])
    np.testing.assert_allclose(early.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="index"):
        sd.export_head(1)


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="keras_kd.export converts through a TensorFlow SavedModel and imports tensorflow",
)
def test_export_head_converts_to_tflite(digits, tmp_path):
    sd, early, x = trained_early_exit(digits)
    expected = keras.ops.convert_to_numpy(sd.exits(x)["head1_logits"])
    path = export.to_tflite(early, tmp_path / "exit1.tflite")
    np.testing.assert_allclose(export.predict_tflite(path, x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (zoo_cnn, {"sections": ["stage9"]}, r"no layer named 'stage9'. Available layers: \[.*'stage1'"),
        (zoo_cnn, {"sections": ["stage1", "stage1"]}, "listed twice"),
        (zoo_cnn, {"sections": "stage1"}, "list of layer names"),
        (lambda: models.get("mlp_small", (64,), 10), {}, "fewer than two `stage"),
        (zoo_cnn, {"alpha": 1.5}, "alpha"),
        (zoo_cnn, {"beta": -1.0}, "beta"),
        (zoo_cnn, {"temperature": 0}, "temperature"),
        (zoo_cnn, {"head_width": 0}, "head_width"),
        (lambda: keras.Sequential([keras.layers.Dense(10)]), {}, "not a built functional"),
    ],
)
def test_bad_arguments_raise(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelfDistillation(make(), **kwargs)


def test_round_trips_through_keras_saving(digits, tmp_path):
    x, y = images(digits, 128)
    sd = SelfDistillation(zoo_cnn(), temperature=2.0, alpha=0.4, beta=0.1, head_width=6)
    sd.compile("adam", sparse_ce(), metrics=["accuracy"])
    sd.fit(x, y, epochs=1, batch_size=64, verbose=0)
    expected = sd.evaluate(x, y, verbose=0, return_dict=True)
    sd.save(tmp_path / "sd.keras")
    restored = keras.saving.load_model(tmp_path / "sd.keras")
    assert isinstance(restored, SelfDistillation)
    config, restored_config = sd.get_config(), restored.get_config()
    assert {k: v for k, v in restored_config.items() if k != "model"} == {
        k: v for k, v in config.items() if k != "model"
    }
    assert [layer.name for layer in restored.export_model().layers] == [layer.name for layer in sd.model.layers]
    got = restored.evaluate(x, y, verbose=0, return_dict=True)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5)
    np.testing.assert_allclose(
        restored.export_head(0).predict(x[:8], verbose=0), sd.export_head(0).predict(x[:8], verbose=0), rtol=1e-5
    )
    # predict is the deepest classifier's output; calling the model gives every exit.
    np.testing.assert_allclose(
        restored.predict(x[:8], verbose=0), sd.model.predict(x[:8], verbose=0), rtol=1e-5, atol=1e-6
    )
    assert set(restored(x[:8])) == set(sd.exits(x[:8]))
