"""CoupledSGD reproduces torch.optim.SGD's coupled L2 weight decay (a NumPy
re-implementation of its update), differs from Keras' decoupled form, and
serializes."""

import math

import keras
import numpy as np
import pytest

from keras_kd.optimizers import CoupledSGD


def torch_sgd(params, grad_fn, steps, lr, momentum, weight_decay, nesterov=False):
    """torch.optim.SGD's update (dampening 0), in float64 NumPy: returns the parameters after `steps`."""
    params = [np.array(p, dtype=np.float64) for p in params]
    buffers = [None] * len(params)
    for _ in range(steps):
        grads = grad_fn(params)
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g + weight_decay * p
            if momentum:
                buffers[i] = g.copy() if buffers[i] is None else momentum * buffers[i] + g
                g = g + momentum * buffers[i] if nesterov else buffers[i]
            params[i] = p - lr * g
    return params


# A quadratic 0.5 * sum(a * (w - c)^2) per variable: gradient a * (w - c).
RNG = np.random.default_rng(0)
INITIAL = [RNG.normal(size=(3, 2)), RNG.normal(size=(2,))]
CURVATURE = [RNG.uniform(0.5, 2.0, size=(3, 2)), RNG.uniform(0.5, 2.0, size=(2,))]
CENTRE = [RNG.normal(size=(3, 2)), RNG.normal(size=(2,))]


def quadratic_grads(params):
    return [a * (p - c) for p, a, c in zip(params, CURVATURE, CENTRE)]


def run_keras(optimizer, steps, grad_fn=quadratic_grads, initial=INITIAL):
    variables = [keras.Variable(p.astype("float32")) for p in initial]
    for _ in range(steps):
        grads = grad_fn([np.asarray(v.numpy(), dtype=np.float64) for v in variables])
        optimizer.apply([g.astype("float32") for g in grads], variables)
    return [v.numpy() for v in variables]


@pytest.mark.parametrize(
    "momentum, nesterov, weight_decay",
    [(0.9, False, 5e-4), (0.9, True, 5e-4), (0.0, False, 5e-2), (0.9, False, 0.0)],
)
def test_matches_pytorch_sgd_with_coupled_weight_decay(momentum, nesterov, weight_decay):
    optimizer = CoupledSGD(0.05, momentum=momentum, nesterov=nesterov, coupled_weight_decay=weight_decay)
    ours = run_keras(optimizer, steps=25)
    reference = torch_sgd(INITIAL, quadratic_grads, 25, 0.05, momentum, weight_decay, nesterov)
    for got, want in zip(ours, reference):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(ours[0], INITIAL[0])


def test_fit_of_a_dense_model_matches_pytorch():
    """model.fit with full batches: linear regression, MSE, analytic gradients in the reference."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    kernel, bias = rng.normal(size=(3, 1)), np.zeros(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([kernel.astype("float32"), bias.astype("float32")])
    model.compile(CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=1e-2), "mse")
    model.fit(x, y, batch_size=16, epochs=12, shuffle=False, verbose=0)

    def grads(params):
        w, b = params
        error = x @ w + b - y
        return [2 / len(x) * x.T @ error, 2 / len(x) * error.sum(0)]

    want = torch_sgd([kernel, bias], grads, 12, 0.1, 0.9, 1e-2)
    for got, expected in zip(model.get_weights(), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_coupled_decay_goes_through_the_momentum():
    """With no loss gradient, Keras' decoupled form shrinks w by lr * wd per step; the coupled form,
    accumulated by momentum 0.9, by about lr * wd / (1 - 0.9): ten times more in the steady state."""
    lr, wd, steps = 0.1, 1e-2, 300
    zero = lambda params: [np.zeros_like(p) for p in params]  # noqa: E731
    ones = [np.ones((2,))]
    coupled = run_keras(CoupledSGD(lr, momentum=0.9, coupled_weight_decay=wd), steps, zero, ones)[0]
    decoupled = run_keras(keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd), steps, zero, ones)[0]
    np.testing.assert_allclose(decoupled, (1 - lr * wd) ** steps, rtol=1e-4)
    np.testing.assert_allclose(coupled, torch_sgd(ones, zero, steps, lr, 0.9, wd)[0], rtol=1e-4)
    ratio = math.log(coupled[0]) / math.log(decoupled[0])
    assert 8 < ratio < 12, ratio
    # Without momentum the two forms coincide.
    plain = run_keras(CoupledSGD(lr, coupled_weight_decay=wd), steps, zero, ones)[0]
    np.testing.assert_allclose(plain, (1 - lr * wd) ** steps, rtol=1e-4)


def test_decay_applies_to_every_variable_unless_excluded():
    zero = lambda params: [np.zeros_like(p) for p in params]  # noqa: E731
    optimizer = CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=0.1)
    variables = [keras.Variable(np.ones(2, "float32"), name=name) for name in ("kernel", "bias")]
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    for _ in range(3):
        optimizer.apply([np.zeros(2, "float32")] * 2, variables)
    kernel, bias = (v.numpy() for v in variables)
    np.testing.assert_allclose(kernel, torch_sgd([np.ones(2)], zero, 3, 0.1, 0.9, 0.1)[0], rtol=1e-5)
    np.testing.assert_array_equal(bias, np.ones(2))


def test_serialization_round_trip():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([10, 20], [0.05, 0.005, 0.0005])
    optimizer = CoupledSGD(schedule, momentum=0.9, nesterov=True, coupled_weight_decay=5e-4, clipnorm=1.0)
    config = optimizer.get_config()
    assert config["coupled_weight_decay"] == 5e-4 and config["weight_decay"] is None
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is CoupledSGD
    assert restored.coupled_weight_decay == 5e-4 and restored.momentum == 0.9 and restored.nesterov
    assert keras.optimizers.serialize(restored) == keras.optimizers.serialize(optimizer)
    config = CoupledSGD(0.05, momentum=0.9, coupled_weight_decay=1e-4).get_config()
    assert CoupledSGD.from_config(config).get_config() == config


def test_keras_file_of_a_compiled_model(tmp_path):
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    y = np.arange(8) % 3
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(CoupledSGD(0.01, momentum=0.9, coupled_weight_decay=5e-4), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is CoupledSGD
    assert loaded.optimizer.coupled_weight_decay == 5e-4 and loaded.optimizer.momentum == 0.9
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)  # it trains on


@pytest.mark.parametrize("value", [-1e-4, float("nan"), float("inf"), "5e-4", None, True])
def test_bad_weight_decay_is_named(value):
    with pytest.raises(ValueError, match=f"coupled_weight_decay={value!r}".replace("(", r"\(").replace(")", r"\)")):
        CoupledSGD(0.1, coupled_weight_decay=value)


def test_both_forms_at_once_are_refused():
    with pytest.raises(ValueError, match="not both.*coupled_weight_decay=0.0005, weight_decay=0.0005"):
        CoupledSGD(0.1, momentum=0.9, coupled_weight_decay=5e-4, weight_decay=5e-4)
    assert CoupledSGD(0.1, weight_decay=5e-4).weight_decay == 5e-4  # the decoupled form alone is Keras' SGD
    assert CoupledSGD(0.1, momentum=0).momentum == 0.0  # an int momentum is accepted
