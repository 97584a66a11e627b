"""Zhang, Song, Gao, Chen, Bao & Ma, "Be Your Own Teacher: Improve the
Performance of Convolutional Neural Networks via Self Distillation", ICCV
2019."""

import math

import keras
from keras import layers, ops

from keras_kd.backend import regularization_loss, track_batch_value
from keras_kd.losses.kd import KDLoss
from keras_kd.models import feature_layers
from keras_kd.models._layers import bn, conv
from keras_kd.primary_output import PrimaryOutput
from keras_kd.sample_index import batch_size_of
from keras_kd.schemes._peers import correct
from keras_kd.validation import validate_positive


class _Exits:
    """The one functional graph returning every exit of a forward pass.

    Kept outside Keras' attribute tracking on purpose: it shares its layers
    with the classifier and the heads, which SelfDistillation already tracks.
    """

    def __init__(self, graph):
        self.graph = graph

    def __call__(self, x, training):
        return self.graph(x, training=training)


@keras.saving.register_keras_serializable(package="keras_kd")
class SelfDistillation(PrimaryOutput, keras.Model):
    """Self distillation, "Be Your Own Teacher" (Zhang, Song, Gao, Chen, Bao
    & Ma, ICCV 2019): the deepest classifier of a network teaches shallow
    classifiers attached to its earlier sections, and through them the
    shallow sections themselves.

    The functional classifier `model` is cut after each layer in `sections`;
    each cut gets an auxiliary head (the paper's bottleneck + classifier)
    that outputs a feature `F_i` of the deepest feature's width and logits
    `z_i`. The deepest classifier is the model's own output `z_C`, and `F_C`
    is the vector it classifies (the pooled embedding). One forward pass
    yields every exit, and the step minimises

        L = CE(y, z_C)
            + sum_i [(1 - alpha) * CE(y, z_i)
                     + alpha * KL(p_C^T || p_i^T) * T^2
                     + beta * ||F_i - F_C||^2],      p^T = softmax(z / T),

    where `p_C^T` and `F_C` pass through `stop_gradient`: the deepest
    classifier is a target for the heads, never pulled towards them (the
    backbone sections before a cut still learn from that cut's head).
    `||.||^2` is the squared L2 norm per example (summed over the feature),
    averaged over the batch. CE is the loss given to `compile()`.

    Heads, per section feature map `(H, W, C)`: 1x1 conv to `width` channels
    + BN + ReLU (the bottleneck's projection), then one stride-2 3x3 conv +
    BN + ReLU per halving needed to reach the spatial size of the deepest
    feature map (the map the model pools into `F_C`), then global average
    pooling; for vector sections `(C,)` (MLPs): Dense(`width`) + BN + ReLU.
    `width` is `head_width`, else the channel count (or units) of the
    deepest `stage{i}` layer, else of the deepest feature map, else `F_C`'s
    width; when it differs from `F_C`'s width a linear Dense projects the
    pooled vector to it. That vector is `F_i`; a Dense layer on it gives
    `z_i`. These are simplified bottlenecks, which keeps them small: plain
    convs where the released code stacks separable convs, and no attention
    module gating the sections (which that code adds).

    Constants: `alpha = 0.3` and `T = 3` are the released code's defaults
    (`loss_coefficient`, `temperature` in ArchipLab-LinfengZhang/
    pytorch-self-distillation-final `train.py`); `beta = 0.03` weighs the
    hint term, which that code omits. The code's soft-target term is a cross
    entropy without `T^2`; here it is `KL * T^2` (`keras_kd.losses.KDLoss`),
    which has the same gradient times `T^2`.

    Logs: `final_loss` (CE of the deepest classifier), per head `i` (1-based,
    `heads[i - 1]`) `head{i}_loss` (CE), `head{i}_kd_loss`,
    `head{i}_hint_loss` (before their weights) and `head{i}_accuracy`, the
    total `loss`, and the compiled metrics on the deepest output. Keras' own
    step runs it on every backend: `call(x)` returns every exit of one
    forward pass (as `exits`), `compute_loss` the total `L`; `predict(x)`
    returns the model's own output.

    Args:
        model: a built functional `keras.Model` whose output layer (e.g. a
            Dense `logits`) classifies a feature vector.
        sections: names of the layers whose outputs end the shallow
            sections, shallowest first. Default: every `stage{i}` layer but
            the last (`keras_kd.models.feature_layers(model)["stages"][:-1]`).
        temperature: softmax temperature `T > 0` of the KD term.
        alpha: weight in `[0, 1]` of the KD term against the heads' CE.
        beta: weight `>= 0` of the hint term.
        head_width: channels (or units) of the heads' bottleneck; None for
            the default above.

    Example:

    ```python
    model = keras_kd.models.get("resnet20", (32, 32, 3), 100)
    sd = SelfDistillation(model)  # from keras_kd.schemes.self_distillation
    sd.compile(optimizer="sgd",
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               metrics=["accuracy"])
    sd.fit(train_ds, epochs=200)
    classifier = sd.export_model()       # the model alone, no heads
    early_exit = sd.export_head(0)       # input -> logits of the shallowest head
    ```
    """

    def __init__(
        self,
        model,
        sections=None,
        temperature=3.0,
        alpha=0.3,
        beta=0.03,
        head_width=None,
        name="self_distillation",
        **kwargs,
    ):
        _validate_model(model)
        kwargs.setdefault("dtype", model.dtype_policy)
        super().__init__(name=name, **kwargs)
        self.temperature = validate_positive("temperature", temperature)
        self.alpha = validate_positive("alpha", alpha, allow_zero=True)
        if self.alpha > 1:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha!r}")
        self.beta = validate_positive("beta", beta, allow_zero=True)
        if head_width is not None and (
            isinstance(head_width, bool) or not isinstance(head_width, int) or head_width < 1
        ):
            raise ValueError(f"`head_width` must be a positive int or None. Received: head_width={head_width!r}")
        self.head_width = head_width
        self.sections = _validate_sections(model, sections)

        feature = _input_of(model.outputs[0])
        if feature is None or len(feature.shape) != 2:
            shape = None if feature is None else tuple(feature.shape)
            raise ValueError(
                f"The output layer of '{model.name}' classifies {shape or 'several tensors'}; SelfDistillation "
                "needs it to classify one feature vector (batch, features), e.g. Dense logits after global "
                "pooling."
            )
        feature_width = feature.shape[-1]
        deepest_map = _input_of(feature)
        if deepest_map is None or len(deepest_map.shape) != 4:
            deepest_map = None
        stages = feature_layers(model)["stages"]
        reference = model.get_layer(stages[-1]).output if stages else deepest_map
        width = head_width or (reference.shape[-1] if reference is not None else feature_width)
        num_classes = model.outputs[0].shape[-1]

        self.model = model
        heads = []
        exits = {"logits": model.outputs[0], "feature": feature}
        for i, section in enumerate(self.sections, start=1):
            tensor = model.get_layer(section).output
            head = _head(f"{name}_head{i}", tensor.shape, width, feature_width, num_classes, deepest_map)
            exits[f"head{i}_feature"], exits[f"head{i}_logits"] = head(tensor)
            heads.append(head)
        self.heads = heads
        self._exits = _Exits(keras.Model(model.input, exits, name=f"{name}_exits"))
        self.kd_loss = KDLoss(temperature=self.temperature)
        # MSE averages over the feature; times its width it is the squared norm.
        self.hint_loss = keras.losses.MeanSquaredError(name="hint_loss", dtype="float32")
        self._feature_width = float(feature_width)

        count = range(1, len(self.heads) + 1)
        self.final_loss_tracker = keras.metrics.Mean(name="final_loss")
        self.head_trackers = {
            f"head{i}_{kind}": keras.metrics.Mean(name=f"head{i}_{kind}")
            for i in count
            for kind in ("loss", "kd_loss", "hint_loss", "accuracy")
        }
        self.built = True

    def call(self, inputs, training=None):
        """Every exit of one forward pass (`exits`); the model's own output
        alone in `predict`."""
        if self._outputs_only:
            return self.model(inputs, training=training)
        return self._exits(inputs, training=training)

    def exits(self, x, training=False):
        """Every exit of one forward pass: `{"logits", "feature",
        "head{i}_logits", "head{i}_feature"}` (see the class docstring)."""
        return self._exits(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total `L` of `compute_losses` on the exits `call` returned
        (`y_pred`); updates the per-exit trackers."""
        self._check_compiled(y)
        if self._outputs_only:  # Keras building the compiled loss on the model's output spec
            return self._compile_loss(y, y_pred, sample_weight)
        values, total = self.compute_losses(y, sample_weight, y_pred)
        batch_size = batch_size_of(x)
        for key, value in values.items():
            tracker = self.final_loss_tracker if key == "final_loss" else self.head_trackers[key]
            track_batch_value(tracker, value, batch_size)
        for i in range(1, len(self.heads) + 1):
            accuracy = correct(y, ops.stop_gradient(y_pred[f"head{i}_logits"]))
            self.head_trackers[f"head{i}_accuracy"].update_state(accuracy, sample_weight=sample_weight)
        return total

    def compute_losses(self, y, sample_weight, exits):
        """Return ({log name: value}, total) for the `exits()` of a batch."""
        final = ops.cast(self._compile_loss(y, exits["logits"], sample_weight), "float32")
        values = {"final_loss": final}
        total = final
        target = ops.stop_gradient(ops.cast(exits["feature"], "float32"))
        for i in range(1, len(self.heads) + 1):
            logits = exits[f"head{i}_logits"]
            ce = ops.cast(self._compile_loss(y, logits, sample_weight), "float32")
            kd = ops.cast(self.kd_loss(exits["logits"], logits, sample_weight=sample_weight), "float32")
            feature = ops.cast(exits[f"head{i}_feature"], "float32")
            hint = self._feature_width * self.hint_loss(target, feature, sample_weight=sample_weight)
            values.update({f"head{i}_loss": ce, f"head{i}_kd_loss": kd, f"head{i}_hint_loss": hint})
            total = total + (1.0 - self.alpha) * ce + self.alpha * kd + self.beta * hint
        return values, total + regularization_loss(self)  # regularizers of the model and the heads

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics of the deepest classifier's output."""
        self._check_compiled(y)
        if not self._outputs_only:  # else `call` gave the model's output alone
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _check_compiled(self, y):
        if y is None:
            raise ValueError(
                "SelfDistillation trains every classifier on the labels, but the data has none. Feed (x, y) batches."
            )
        if self._compile_loss is None:
            raise ValueError(
                "SelfDistillation needs the classifiers' supervised loss: pass `loss=` to compile(), e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)."
            )

    def export_model(self):
        """The classifier without heads: `self.model` itself (same layers and
        weights), ready to save or `keras_kd.export.to_tflite`."""
        return self.model

    def export_head(self, index):
        """A standalone functional model from the input to the logits of
        `heads[index]` (0-based; logged as `head{index + 1}`): the early
        exit after `sections[index]`. It shares its layers and weights with
        the trained model."""
        if isinstance(index, bool) or not isinstance(index, int) or not -len(self.heads) <= index < len(self.heads):
            raise ValueError(
                f"`index` must be an int in [0, {len(self.heads)}) for the heads after sections "
                f"{self.sections}. Received: index={index!r}"
            )
        index %= len(self.heads)
        tensor = self.model.get_layer(self.sections[index]).output
        _, logits = self.heads[index](tensor)
        return keras.Model(self.model.input, logits, name=f"{self.model.name}_exit{index + 1}")

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.model),
            "sections": list(self.sections),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "beta": self.beta,
            "head_width": self.head_width,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def _validate_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model. Received: model={model!r}")  # noqa: TRY004 (ValueError throughout, as in Distiller)
    if not model.built or not getattr(model, "inputs", None) or not getattr(model, "outputs", None):
        raise ValueError(
            f"The model '{model.name}' is not a built functional or Sequential model with known inputs, "
            "so its sections cannot be read in one forward pass. Build it with keras.Input."
        )
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"The model '{model.name}' must have one output of class logits (batch, classes). Received "
            f"outputs of shapes {[tuple(output.shape) for output in model.outputs]}."
        )


def _validate_sections(model, sections):
    available = [layer.name for layer in model.layers]
    if sections is None:
        sections = feature_layers(model)["stages"][:-1]
        if not sections:
            raise ValueError(
                f"The model '{model.name}' has fewer than two `stage{{i}}` layers, so there is no shallow "
                f"section to attach a head to. Pass `sections=[layer names]`. Available layers: {available}"
            )
    if isinstance(sections, str) or not isinstance(sections, (list, tuple)) or not sections:
        raise ValueError(f"`sections` must be a non-empty list of layer names. Received: sections={sections!r}")
    sections = list(sections)
    for section in sections:
        if section not in available:
            raise ValueError(f"The model '{model.name}' has no layer named {section!r}. Available layers: {available}")
        if sections.count(section) > 1:
            raise ValueError(f"Section {section!r} is listed twice in sections={sections!r}.")
        rank = len(model.get_layer(section).output.shape)
        if rank not in (2, 4):
            raise ValueError(
                f"Section {section!r} outputs rank-{rank} features; heads take feature maps (batch, H, W, C) "
                "or vectors (batch, C)."
            )
    return sections


def _input_of(tensor):
    """The single input of the layer that produced a symbolic `tensor`, or
    None (an input of the model, or a layer with several inputs)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    operation, node_index, _ = history
    inputs = operation._inbound_nodes[node_index].input_tensors
    return inputs[0] if len(inputs) == 1 else None


def _head(name, input_shape, width, feature_width, num_classes, deepest_map):
    """A head model: section feature -> [F_i, logits]."""
    inputs = keras.Input(tuple(input_shape[1:]), name=f"{name}_input")
    if len(input_shape) == 4:
        x = conv(width, 1, f"{name}_conv")(inputs)
        x = bn(f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        for j in range(1, _halvings(input_shape, deepest_map) + 1):
            x = conv(width, 3, f"{name}_down{j}_conv", strides=2)(x)
            x = bn(f"{name}_down{j}_bn")(x)
            x = layers.ReLU(name=f"{name}_down{j}_relu")(x)
        x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    else:
        x = layers.Dense(width, name=f"{name}_dense")(inputs)
        x = bn(f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    if width != feature_width:
        x = layers.Dense(feature_width, name=f"{name}_projection")(x)
    logits = layers.Dense(num_classes, name=f"{name}_logits")(x)
    return keras.Model(inputs, [x, logits], name=name)


def _halvings(input_shape, deepest_map):
    """Stride-2 steps from the section's spatial size to the deepest map's
    (0 when either is unknown: global pooling absorbs the rest)."""
    if deepest_map is None:
        return 0
    steps = 0
    for size, target in zip(input_shape[1:3], deepest_map.shape[1:3]):
        if size is None or target is None or size <= target:
            continue
        steps = max(steps, math.ceil(math.log2(size / target)))
    return steps
