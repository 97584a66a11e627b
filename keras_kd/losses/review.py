"""Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021."""

import math

import keras
from keras import ops

from keras_kd.losses._learnable import LearnableLoss, torch_default_init
from keras_kd.losses.base import adaptive_avg_pool
from keras_kd.validation import is_int, validate_positive_int

HCL_LEVELS = (4, 2, 1)  # the reference's pooled sizes, each weighted half the previous one
MAX_MID_CHANNELS = 512  # the reference's mid_channel = min(512, channels of the deepest student feature)


def _kaiming_uniform_a1():
    """torch's `kaiming_uniform_(w, a=1)`: U(-sqrt(3 / fan_in), sqrt(3 / fan_in)),
    the init of the reference's ABF convolutions."""
    return keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="uniform")


def _batch_norm(name):
    # PyTorch BatchNorm2d constants (its momentum 0.1 is 0.9 here).
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32", name=name)


def _as_map(x):
    """(B, C) vectors become (B, 1, 1, C) maps, as the reference's
    `pooled_feat.unsqueeze(-1).unsqueeze(-1)`; maps pass unchanged."""
    return ops.reshape(x, (-1, 1, 1, x.shape[-1])) if len(x.shape) == 2 else x


def _as_map_shape(shape):
    shape = tuple(shape)
    return (shape[0], 1, 1, shape[1]) if len(shape) == 2 else shape


def nearest_resize(x, height, width):
    """PyTorch's `F.interpolate(x, (height, width), mode="nearest")` on a
    channels-last map: output row i reads input row floor(i * H_in / height),
    likewise for columns (a gather, so it also runs under XLA)."""
    in_height, in_width = x.shape[1], x.shape[2]
    if in_height != height:
        x = ops.take(x, [(i * in_height) // height for i in range(height)], axis=1)
    if in_width != width:
        x = ops.take(x, [(j * in_width) // width for j in range(width)], axis=2)
    return x


def _without_batch(shapes):
    """(teacher shapes, student shapes) of per-stage shapes, batch sizes dropped."""
    return tuple(tuple(shape[1:] for shape in side) for side in shapes)


def _per_example_mean(x):
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def hierarchical_context_loss(teacher, student, levels=HCL_LEVELS):
    """ReviewKD's hierarchical context loss (HCL) between two channels-last
    maps of the same shape (B, H, W, C), one value per example.

    The MSE at full resolution has weight 1; each level `l` of `levels` with
    `l < H` adds the MSE of both maps adaptive-average-pooled to (l, l) with
    half the previous weight (1/2, 1/4, 1/8 for the levels used); the sum is
    divided by the total weight. Levels >= H are skipped and do not halve the
    weight, as in the reference's `hcl` (so an 8x8 map uses 1, 1/2, 1/4, 1/8
    for full, 4, 2, 1; a 4x4 map 1, 1/2, 1/4 for full, 2, 1; a 1x1 map the MSE
    alone).
    """
    difference = student - teacher  # pooling is linear: pool(s) - pool(t) = pool(s - t)
    loss = _per_example_mean(ops.square(difference))
    weight = total = 1.0
    for level in levels:
        if level >= difference.shape[1]:
            continue
        weight /= 2.0
        pooled = adaptive_avg_pool(difference, level, level)
        loss = loss + weight * _per_example_mean(ops.square(pooled))
        total += weight
    return loss / total


@keras.saving.register_keras_serializable(package="keras_kd")
class AttentionBasedFusion(keras.layers.Layer):
    """ReviewKD's attention based fusion (ABF) block for one stage.

    `call(x, residual)` maps the student feature `x` (B, H, W, C_s) to
    `mid_channels` (1x1 conv without bias + BatchNorm). With `fuse`, the
    fused feature of the deeper stage, `residual` (B, h, w, mid_channels), is
    upsampled to (H, W) by nearest neighbour and the two are blended by a
    two-channel attention map, `a = sigmoid(conv1x1([x, residual]))`:
    `x = x * a[..., 0] + residual * a[..., 1]`. A 3x3 conv ('same', no bias)
    + BatchNorm then maps the result to the teacher's `out_channels`.

    Returns `(output, fused)`: the (B, H, W, out_channels) map compared with
    the teacher, and the (B, H, W, mid_channels) map passed to the next,
    shallower block.
    """

    def __init__(self, mid_channels, out_channels, fuse=True, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the loss computes in float32
        super().__init__(**kwargs)
        self.mid_channels = int(mid_channels)
        self.out_channels = int(out_channels)
        self.fuse = bool(fuse)
        self.reduce = keras.layers.Conv2D(
            self.mid_channels,
            1,
            use_bias=False,
            kernel_initializer=_kaiming_uniform_a1(),
            dtype="float32",
            name="reduce",
        )
        self.reduce_norm = _batch_norm("reduce_norm")
        self.attention = None
        if self.fuse:
            bound = 1.0 / math.sqrt(2 * self.mid_channels)  # torch's default conv bias init
            self.attention = keras.layers.Conv2D(
                2,
                1,
                activation="sigmoid",
                kernel_initializer=torch_default_init(),
                bias_initializer=keras.initializers.RandomUniform(-bound, bound),
                dtype="float32",
                name="attention",
            )
        self.project = keras.layers.Conv2D(
            self.out_channels,
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=_kaiming_uniform_a1(),
            dtype="float32",
            name="project",
        )
        self.project_norm = _batch_norm("project_norm")

    def build(self, input_shape):
        shape = tuple(input_shape)
        mid_shape = shape[:-1] + (self.mid_channels,)
        self.reduce.build(shape)
        self.reduce_norm.build(mid_shape)
        if self.attention is not None:
            self.attention.build(shape[:-1] + (2 * self.mid_channels,))
        self.project.build(mid_shape)
        self.project_norm.build(shape[:-1] + (self.out_channels,))

    def call(self, x, residual=None, training=None):
        x = self.reduce_norm(self.reduce(x), training=training)
        if self.attention is not None:
            if residual is None:
                raise ValueError(f"{self.name} fuses a deeper stage's feature; call it with `residual`.")
            residual = nearest_resize(residual, x.shape[1], x.shape[2])
            attention = self.attention(ops.concatenate([x, residual], axis=-1))
            x = x * attention[..., :1] + residual * attention[..., 1:]
        return self.project_norm(self.project(x), training=training), x

    def compute_output_shape(self, input_shape, residual_shape=None):
        shape = tuple(input_shape)
        return shape[:-1] + (self.out_channels,), shape[:-1] + (self.mid_channels,)

    def get_config(self):
        return {
            **super().get_config(),
            "mid_channels": self.mid_channels,
            "out_channels": self.out_channels,
            "fuse": self.fuse,
        }


@keras.saving.register_keras_serializable(package="keras_kd")
class ReviewFusion(keras.layers.Layer):
    """The review path of ReviewKD: one `AttentionBasedFusion` per stage.

    `call(features)` takes the student's maps in increasing depth (shallowest
    first) and reviews them deepest first: the deepest block only projects
    its feature; every shallower block fuses its own feature with the fused
    feature of the block below it. Returns one map per stage, in the input's
    order, with `out_channels[i]` channels.
    """

    def __init__(self, out_channels, mid_channels, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.out_channels = [int(c) for c in out_channels]
        self.mid_channels = int(mid_channels)
        last = len(self.out_channels) - 1
        self.blocks = [
            AttentionBasedFusion(self.mid_channels, channels, fuse=i < last, name=f"abf{i + 1}")
            for i, channels in enumerate(self.out_channels)
        ]

    def build(self, input_shape):
        for block, shape in zip(self.blocks, input_shape):
            block.build(shape)

    def call(self, features, training=None):
        outputs = [None] * len(self.blocks)
        residual = None
        for i in reversed(range(len(self.blocks))):
            outputs[i], residual = self.blocks[i](features[i], residual=residual, training=training)
        return outputs

    def compute_output_shape(self, input_shape):
        return [tuple(shape)[:-1] + (c,) for shape, c in zip(input_shape, self.out_channels)]

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "mid_channels": self.mid_channels}


@keras.saving.register_keras_serializable(package="keras_kd")
class ReviewKDLoss(LearnableLoss):
    """Knowledge review (Chen, Liu, Zhao & Jia, "Distilling Knowledge via
    Knowledge Review", CVPR 2021).

    Takes one feature per stage on each side, in increasing depth, called as
    `loss([t_1, ..., t_N], [s_1, ..., s_N])` (N >= 1); channels-last maps
    (B, H, W, C) or (B, C) vectors (the pooled embedding, read as a 1x1 map).
    The student's features are reviewed deepest first by attention based
    fusion (ABF, `ReviewFusion`): with `m_i = BN(conv1x1(s_i))` (mid_channels),

        f_N = m_N
        f_i = m_i * a_i[0] + up(f_{i+1}) * a_i[1],
              a_i = sigmoid(conv1x1([m_i, up(f_{i+1})]))   (2 channels)
        o_i = BN(conv3x3(f_i))                            (C_t_i channels)

    (`up`: nearest-neighbour upsampling to s_i's size), and each output is
    compared with the teacher's feature of the same stage by the
    hierarchical context loss:

        loss = sum_i HCL(o_i, t_i)
        HCL(o, t) = (MSE(o, t) + sum_{l in (4, 2, 1), l < H} w_l MSE(pool_l(o), pool_l(t)))
                    / (1 + sum w_l)

    where `pool_l` is adaptive average pooling to (l, l) and the weights
    halve with each level used (1/2, 1/4, 1/8): `hierarchical_context_loss`.
    One value per example; its batch mean is the reference's `hcl`. Teacher
    and student must agree spatially stage by stage (as ResNet pairs do);
    channel counts may differ. (The reference's `out_shapes` also upsamples a
    fused feature to a larger teacher map, for its ShuffleNet and MobileNet
    students; that case raises an error here.)

    The fusion blocks live in `layer` (a `ReviewFusion`), created by `build`
    and trained with the student. Their BatchNorms always use batch
    statistics, as in the reference's training loop (train mode); the moving
    statistics they keep are never read.

    Constants (dvlab-research/ReviewKD `CIFAR-100/model/reviewkd.py` and
    mdistiller `distillers/ReviewKD.py`): HCL levels (4, 2, 1);
    `mid_channels = min(512, channels of the deepest student feature)`; ABF
    convolutions initialised with `kaiming_uniform_(a=1)`, the attention
    convolution with PyTorch's default; BatchNorm momentum 0.1 (0.9 in Keras
    terms), eps 1e-5. Published CIFAR-100 setting (`CIFAR-100/train.py`,
    `script/reviewKD.sh`, mdistiller `configs/cifar100/reviewkd.yaml`):
    student features `feat[1:]` (the output of every residual stage and the
    pooled feature) against the teacher's pre-ReLU stages and pooled
    feature, cross-entropy weight 1, term weight 5 for resnet32x4 ->
    resnet8x4 (also WRN and ShuffleNetV1 pairs; 8 for ShuffleNetV2, 0.6 for
    resnet56 -> resnet20, 1 for resnet110 -> resnet32), ramped linearly from
    0 over the first 20 epochs (`WeightScheduler`).

    Args:
        mid_channels: channels of the fused features; None (default) takes
            min(512, channels of the deepest student feature), as the
            reference does.
        levels: pooled sizes of the HCL, default (4, 2, 1); an empty list
            leaves the full-resolution MSE alone.
    """

    num_maps = None  # one map per stage, any number of stages

    def __init__(self, mid_channels=None, levels=HCL_LEVELS, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        if mid_channels is not None:
            mid_channels = validate_positive_int("mid_channels", mid_channels)
        self.mid_channels = mid_channels
        if not isinstance(levels, (list, tuple)) or not all(is_int(level) and level >= 1 for level in levels):
            raise ValueError(
                f"`levels` must be a list of positive integers (pooled sizes). Received: levels={levels!r}"
            )
        self.levels = tuple(int(level) for level in levels)

    def _map_shapes(self, side, shapes, teacher_shape, student_shape):
        is_list = isinstance(shapes, (list, tuple)) and len(shapes) > 0
        if not is_list or not all(isinstance(s, (list, tuple)) for s in shapes):
            raise ValueError(
                f"ReviewKDLoss takes a list of features per network, one per stage (give "
                f"Term(teacher_layer=[...], student_layer=[...])). Received: {side} shape {shapes}."
            )
        for shape in shapes:
            if len(shape) not in (2, 4):
                raise ValueError(
                    f"ReviewKDLoss expects (B, H, W, C) maps or (B, C) vectors. Received: a {side} feature of "
                    f"shape {tuple(shape)} (teacher shapes {teacher_shape}, student shapes {student_shape})."
                )
            if any(dim is None for dim in tuple(shape)[1:]):
                raise ValueError(
                    f"ReviewKDLoss needs known spatial sizes and channels. Received: a {side} feature of shape "
                    f"{tuple(shape)} (teacher shapes {teacher_shape}, student shapes {student_shape})."
                )
        return [_as_map_shape(shape) for shape in shapes]

    def check_shapes(self, teacher_shape, student_shape):
        teacher = self._map_shapes("teacher", teacher_shape, teacher_shape, student_shape)
        student = self._map_shapes("student", student_shape, teacher_shape, student_shape)
        if len(teacher) != len(student):
            raise ValueError(
                "ReviewKDLoss compares stage by stage and needs as many student features as teacher features. "
                f"Received: {len(teacher)} teacher and {len(student)} student features "
                f"(teacher shapes {teacher_shape}, student shapes {student_shape})."
            )
        for i, (t, s) in enumerate(zip(teacher, student)):
            if t[1:3] != s[1:3]:
                raise ValueError(
                    f"ReviewKDLoss compares teacher and student features of the same spatial size, but stage "
                    f"{i + 1} has teacher shape {tuple(teacher_shape[i])} and student shape "
                    f"{tuple(student_shape[i])} ({t[1]}x{t[2]} vs {s[1]}x{s[2]})."
                )
        for i in range(len(student) - 1):
            if student[i + 1][1] > student[i][1] or student[i + 1][2] > student[i][2]:
                raise ValueError(
                    "ReviewKDLoss takes the features in increasing depth (shallowest first, e.g. stage1, "
                    f"stage2, ..., embedding), so their spatial sizes cannot grow; student feature {i + 2} of "
                    f"shape {tuple(student_shape[i + 1])} is larger than feature {i + 1} of shape "
                    f"{tuple(student_shape[i])}."
                )

    def build(self, teacher_shape, student_shape):
        # Shapes are lists of per-stage shapes, so the batch dimension is the
        # first of each shape, not the first element (LearnableLoss's check).
        self.check_shapes(teacher_shape, student_shape)
        shapes = tuple(tuple(tuple(s) for s in side) for side in (teacher_shape, student_shape))
        if self._layer is not None:
            if _without_batch(shapes) != _without_batch(self._shapes):
                raise ValueError(
                    f"ReviewKDLoss was built for teacher shapes {self._shapes[0]} and student shapes "
                    f"{self._shapes[1]}. Received: teacher shapes {shapes[0]} and student shapes {shapes[1]}."
                )
            return
        self._layer = self.make_layer(*shapes)
        self._shapes = shapes
        self.built = True

    def make_layer(self, teacher_shape, student_shape):
        student = [_as_map_shape(shape) for shape in student_shape]
        mid_channels = self.mid_channels or min(MAX_MID_CHANNELS, student[-1][-1])
        layer = ReviewFusion(
            out_channels=[shape[-1] for shape in teacher_shape],
            mid_channels=mid_channels,
            name=f"{self.name}_fusion",
        )
        layer.build(student)
        return layer

    def call(self, teacher, student):
        # Batch statistics in the fusion's BatchNorms, as the reference trains them.
        outputs = self._layer([_as_map(s) for s in student], training=True)
        losses = [hierarchical_context_loss(_as_map(t), o, self.levels) for t, o in zip(teacher, outputs)]
        return ops.sum(ops.stack(losses, axis=0), axis=0)

    def get_config(self):
        return {**super().get_config(), "mid_channels": self.mid_channels, "levels": list(self.levels)}
