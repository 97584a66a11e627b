"""SGD with PyTorch's coupled L2 weight decay.

The distillation literature's CIFAR protocols (RepDistiller / CRD,
torchdistill, ...) train with `torch.optim.SGD(params, lr, momentum=0.9,
weight_decay=5e-4)`, where the weight decay is an L2 penalty *coupled* to
the gradient: it goes through the momentum. Keras' `SGD(weight_decay=...)`
is *decoupled* (Loshchilov & Hutter): it shrinks the weights outside the
momentum. With the same coefficient the two are different regularisers;
`CoupledSGD` reproduces the PyTorch form.

    optimizer = keras_kd.optimizers.CoupledSGD(0.05, momentum=0.9, coupled_weight_decay=5e-4)
"""

import numbers

import keras
from keras import ops

_FORMS = """
    For a variable `w` with gradient `g`, momentum `mu`, learning rate `lr_t`
    at step `t` and weight decay `wd`:

    PyTorch, `torch.optim.SGD(momentum=mu, weight_decay=wd)` (dampening 0,
    the buffer `b` starts at zero, so its first step is `b = g + wd * w`):

        g' = g + wd * w                     # coupled L2: the gradient of (wd / 2) * ||w||^2
        b  = mu * b + g'
        w  = w - lr_t * b                   # nesterov: w = w - lr_t * (g' + mu * b)

    `CoupledSGD(momentum=mu, coupled_weight_decay=wd)`, in Keras' momentum
    form (the velocity `v` holds the learning rate):

        g' = g + wd * w
        v  = mu * v - lr_t * g'
        w  = w + v                          # nesterov: w = w + mu * v - lr_t * g'

    Keras' `SGD(momentum=mu, weight_decay=wd)` (decoupled; applied before the
    update, outside the momentum):

        w  = w - lr_t * wd * w
        v  = mu * v - lr_t * g
        w  = w + v

    Coupled vs decoupled: in the coupled form the decay term `wd * w` is
    accumulated by the momentum, so once the velocity is in its steady state
    each step shrinks `w` by about `lr * wd * w / (1 - mu)`: ten times the
    decoupled form's `lr * wd * w` at `mu = 0.9`. (The coupled term is also
    part of the gradient that `mu` smooths, and is added after any gradient
    clipping, as PyTorch adds it inside `step()` after `clip_grad_norm_`.)

    Keras' vs PyTorch's momentum: `v_t = -lr_t * b_t` exactly while the
    learning rate is constant, so the two produce the same weights. When the
    learning rate changes, PyTorch multiplies the whole buffer (past
    gradients included) by the new rate, while Keras' velocity keeps the old
    rate on the past gradients: after a step schedule divides the rate by
    10, Keras still moves by `mu^k * v` at the old rate for the next few
    steps (the difference decays as `mu^k`, about 1/(1 - mu) = 10 steps at
    mu = 0.9); under a per-step schedule such as cosine decay the difference
    is of the order of the rate's change over those steps.
"""


@keras.saving.register_keras_serializable(package="keras_kd")
class CoupledSGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with PyTorch's coupled L2 weight decay.

    Every trainable variable's gradient gets `+ coupled_weight_decay * w`
    before the momentum update, as in `torch.optim.SGD(weight_decay=...)`;
    PyTorch applies it to every parameter it is given (RepDistiller's
    `train_student.py` passes all of `trainable_list.parameters()`: kernels,
    biases and BatchNormalization's scale and offset), and so does this
    optimizer. `exclude_from_weight_decay(var_list=..., var_names=...)`
    excludes variables from it (e.g. `var_names=["bias", "gamma", "beta"]`).
    It is the gradient of an L2 penalty `(wd / 2) * sum(w ** 2)` added to the
    loss, without the penalty appearing in the reported loss.
    {forms}
    Args:
        learning_rate: as `keras.optimizers.SGD`.
        momentum: as `keras.optimizers.SGD`, a float in [0, 1].
        nesterov: as `keras.optimizers.SGD`.
        coupled_weight_decay: float >= 0, PyTorch's `weight_decay`; 0 is
            plain SGD. Keras' decoupled `weight_decay` cannot be set with it
            (one optimizer applies one form; a nonzero value of both raises).
        **kwargs: the other `keras.optimizers.SGD` arguments (`clipnorm`,
            `global_clipnorm`, `use_ema`, `loss_scale_factor`, `name`, ...).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, coupled_weight_decay=0.0, **kwargs):
        wd = coupled_weight_decay
        if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not wd >= 0 or wd == float("inf"):
            raise ValueError(
                f"coupled_weight_decay must be a finite float >= 0. Received: coupled_weight_decay={wd!r}"
            )
        if kwargs.get("weight_decay") and wd:
            raise ValueError(
                "CoupledSGD applies one form of weight decay: set coupled_weight_decay (PyTorch's coupled L2) or "
                "weight_decay (Keras' decoupled form), not both. Received: "
                f"coupled_weight_decay={wd!r}, weight_decay={kwargs['weight_decay']!r}"
            )
        if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
            momentum = float(momentum)  # Keras' SGD accepts only a float (0 would be refused)
        super().__init__(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov, **kwargs)
        self.coupled_weight_decay = float(wd)

    def update_step(self, gradient, variable, learning_rate):
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.coupled_weight_decay, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["coupled_weight_decay"] = self.coupled_weight_decay
        return config


CoupledSGD.__doc__ = CoupledSGD.__doc__.replace("{forms}", _FORMS)

__all__ = ["CoupledSGD"]
