"""Ahn et al., "Variational Information Distillation for Knowledge Transfer",
CVPR 2019."""

import math

import keras
from keras import ops

from keras_kd.losses._learnable import LearnableLoss, torch_default_init
from keras_kd.losses.base import match_spatial, require_rank
from keras_kd.validation import validate_positive, validate_positive_int


@keras.saving.register_keras_serializable(package="keras_kd")
class VIDRegressor(keras.layers.Layer):
    """VID's variational head: a mean regressor and a per-channel variance.

    The regressor maps student features (B, H, W, C_s) to the predicted
    teacher mean (B, H, W, C_t) with three bias-free 1x1 convolutions and
    ReLUs between (C_s -> mid -> mid -> C_t); rank-2 features (B, C_s) use
    Dense layers instead. The variance is `softplus(log_scale) + eps` per
    teacher channel, with `log_scale` initialised so it starts at
    `init_pred_var`.

    `call(student)` returns `(pred_mean, pred_var)`; `pred_var` has shape
    (C_t,) and broadcasts against the mean.
    """

    def __init__(self, out_channels, mid_channels=None, init_pred_var=5.0, eps=1e-5, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the loss computes in float32
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.mid_channels = self.out_channels if mid_channels is None else int(mid_channels)
        self.init_pred_var = float(init_pred_var)
        self.eps = float(eps)

    def build(self, input_shape):
        def projection(units):
            if len(input_shape) == 4:
                return keras.layers.Conv2D(
                    units,
                    1,
                    use_bias=False,
                    kernel_initializer=torch_default_init(),
                    dtype="float32",
                )
            return keras.layers.Dense(
                units, use_bias=False, kernel_initializer=torch_default_init(), dtype="float32"
            )

        self.regressor = [
            projection(self.mid_channels),
            projection(self.mid_channels),
            projection(self.out_channels),
        ]
        shape = tuple(input_shape)
        for projection_layer in self.regressor:
            projection_layer.build(shape)
            shape = projection_layer.compute_output_shape(shape)
        # softplus^-1(init_pred_var - eps): the variance starts at init_pred_var.
        init = math.log(math.expm1(self.init_pred_var - self.eps))
        self.log_scale = self.add_weight(
            name="log_scale",
            shape=(self.out_channels,),
            initializer=keras.initializers.Constant(init),
        )

    def call(self, student):
        x = student
        for i, projection_layer in enumerate(self.regressor):
            if i:
                x = ops.relu(x)
            x = projection_layer(x)
        pred_var = ops.softplus(self.log_scale) + self.eps
        return x, pred_var

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.out_channels,), (self.out_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "mid_channels": self.mid_channels,
            "init_pred_var": self.init_pred_var,
            "eps": self.eps,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class VIDLoss(LearnableLoss):
    """Variational information distillation (Ahn, Hu, Damianou, Lawrence &
    Dai, "Variational Information Distillation for Knowledge Transfer",
    CVPR 2019).

    VID maximises a variational lower bound on the mutual information between
    teacher and student features: the teacher feature `t` is modelled as a
    Gaussian whose mean `mu(s)` is regressed from the student feature `s` and
    whose variance `sigma^2` is one learnable value per teacher channel:

        mu = regressor(s)          # 1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv
        sigma^2 = softplus(log_scale) + eps
        loss = mean over (h, w, c) of 0.5 * ((mu - t)^2 / sigma^2 + log sigma^2)

    i.e. the Gaussian negative log-likelihood up to a constant. The value is
    one number per example (the mean over positions and channels); its batch
    mean equals the reference's `torch.mean` over all elements. When the
    spatial sizes differ the larger map is average-pooled to the smaller one
    before the regressor, as the reference does. Rank-2 features (B, C) use
    Dense layers instead of 1x1 convolutions.

    The regressor and `log_scale` live in `layer` (a `VIDRegressor`), created
    by `build` and trained with the student.

    Published setting (CRD benchmark, RepDistiller `scripts/run_cifar_distill.sh`
    and `train_student.py`): weight 1 (`--distill vid -a 0 -b 1`), one
    `VIDLoss` per intermediate block output (`feat[1:-1]`, every stage of the
    network), with `mid_channels` equal to the teacher's channels,
    `init_pred_var = 5`, `eps = 1e-5`. The regressor's kernels use PyTorch's
    default initialisation, as the reference does.

    Args:
        mid_channels: width of the regressor's hidden layers; None (default)
            uses the teacher's channel count, as the reference does.
        init_pred_var: initial value of the predicted variance (> eps).
        eps: floor added to the variance (> 0).
    """

    def __init__(self, mid_channels=None, init_pred_var=5.0, eps=1e-5, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if mid_channels is not None:
            mid_channels = validate_positive_int("mid_channels", mid_channels)
        self.mid_channels = mid_channels
        self.eps = validate_positive("eps", eps)
        self.init_pred_var = validate_positive("init_pred_var", init_pred_var)
        if self.init_pred_var <= self.eps:
            raise ValueError(
                "`init_pred_var` must be greater than `eps` (the variance is "
                f"softplus(.) + eps > eps). Received: init_pred_var={init_pred_var!r}, eps={eps!r}"
            )

    def check_shapes(self, teacher_shape, student_shape):
        require_rank(self, teacher_shape, student_shape, (2, 4))
        if len(teacher_shape) != len(student_shape):
            raise ValueError(
                "VIDLoss needs teacher and student features of the same rank. Received: "
                f"teacher shape {teacher_shape} and student shape {student_shape}."
            )
        if teacher_shape[-1] is None or student_shape[-1] is None:
            raise ValueError(
                "VIDLoss needs known channel counts to build its regressor. Received: "
                f"teacher shape {teacher_shape} and student shape {student_shape}."
            )

    def make_layer(self, teacher_shape, student_shape):
        layer = VIDRegressor(
            out_channels=teacher_shape[-1],
            mid_channels=self.mid_channels,
            init_pred_var=self.init_pred_var,
            eps=self.eps,
            name=f"{self.name}_regressor",
        )
        # The regressor sees the student after spatial matching; 1x1 convs do
        # not depend on H and W, so the student's own shape builds it.
        layer.build(student_shape)
        return layer
        super().build(teacher_shape, student_shape)

    def call(self, teacher, student):
        teacher, student = match_spatial(teacher, student)
        pred_mean, pred_var = self._layer(student)
        neg_log_prob = 0.5 * (ops.square(pred_mean - teacher) / pred_var + ops.log(pred_var))
        return ops.mean(ops.reshape(neg_log_prob, (ops.shape(neg_log_prob)[0], -1)), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "mid_channels": self.mid_channels,
            "init_pred_var": self.init_pred_var,
            "eps": self.eps,
        }
