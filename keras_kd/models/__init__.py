"""Reference model zoo: the teacher/student pairs of the distillation
literature, as functional Keras models with no pretrained weights.

    teacher = keras_kd.models.get("resnet32x4", (32, 32, 3), 100)
    student = keras_kd.models.get("resnet8x4", (32, 32, 3), 100)
    t, s = keras_kd.models.feature_layers(teacher), keras_kd.models.feature_layers(student)
    distiller = keras_kd.recipes.distiller("at", teacher, student, t["stages"], s["stages"])

Families: Hinton et al.'s MNIST MLPs (`mlp`), Ba & Caruana's shallow mimic
net with a linear bottleneck (`mimic`), small plain CNNs (`cnn`), and
the CIFAR ResNets, Wide ResNets, MobileNetV2 and ShuffleNets of the CRD
benchmark (`resnet`, `wrn`, `mobilenetv2`, `shufflenetv1`, `shufflenetv2`,
after RepDistiller's `models/`), plus the BiLSTM text student of Tang et al.
(`text`). `names()` lists them, `describe(name)` says what each is.

Layer-name convention (what `feature_layers` reads; follow it in your own
models and they work the same way):

- `stage1`, `stage2`, ... `stageN`: the output of each stage, in increasing
  depth (for CNNs, non-increasing spatial size); the features that
  feature-based methods (FitNets, AT, ...) compare.
- `stage{i}_preact`: optional, the same feature before its final ReLU, with
  the shape of `stage{i}` (for the methods that distill pre-ReLU values,
  e.g. AB); each family's module says which tensor it is. `feature_layers`
  reports them only when every stage has one, so they pair with the stages.
- `embedding`: optional, the penultimate vector fed to the classifier (the
  pooled features), for relational methods (RKD, SP, PKT, CRD, ...).
- `logits`: the output layer, raw logits (no softmax).

Every model returned by `get` is built, named after its zoo entry unless
`name=` is given, and outputs logits of shape `(batch, num_classes)`.
Parameter counts are published for PyTorch models, which count trainable
parameters only (a BatchNormalization's moving mean and variance are
buffers there, weights in Keras): compare them with the trainable count.
"""

import dataclasses
import re

from keras_kd.models import (
    cnn,
    mimic,
    mlp,
    mobilenetv2,
    resnet,
    shufflenetv1,
    shufflenetv2,
    text,
    wrn,
)
from keras_kd.validation import is_int


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: object
    kwargs: dict
    description: str
    input_ranks: tuple = (3,)  # 3: (H, W, C) images; 1: (seq_len,) token ids or flat vectors


_CRD = "params published for CIFAR-100 in Tian et al., ICLR 2020 (CRD)"
_RESNET = "CIFAR ResNet (He et al., CVPR 2016; RepDistiller models/resnet.py)"
_WRN = "Wide ResNet (Zagoruyko & Komodakis, BMVC 2016; RepDistiller models/wrn.py)"
_HINTON = "MLP of Hinton, Vinyals & Dean 2015 (MNIST)"
_CNN = "plain conv-BN-ReLU CNN for 8x8 digits / MNIST / CIFAR, no reference paper"


def _resnet(depth, channels, published=None):
    wide = "x4" if channels[1] == 64 else ""
    note = f"; {published} {_CRD}" if published else "; no published count"
    return _Entry(
        resnet.resnet,
        {"depth": depth, "channels": channels},
        f"ResNet-{depth}{wide}, {_RESNET}, channels {list(channels)}{note}",
    )


def _wrn(depth, k, published=None):
    note = f"; {published} {_CRD}" if published else "; no published count"
    return _Entry(wrn.wrn, {"depth": depth, "widen_factor": k}, f"WRN-{depth}-{k}, {_WRN}{note}")


def _mlp(hidden, dropout, description):
    # MLPs flatten their input: images or flat vectors.
    return _Entry(mlp.mlp, {"hidden": hidden, "dropout": dropout}, description, input_ranks=(1, 3))


_SMALL, _WIDE = (16, 16, 32, 64), (32, 64, 128, 256)

_ZOO = {
    "hinton_teacher": _mlp(
        (1200, 1200),
        0.2,
        f"{_HINTON} teacher: 1200-1200 ReLU, dropout 0.2 (the paper: 0.5 on hidden units, 0.2 on inputs); "
        "2,395,210 params on 784 inputs/10 classes",
    ),
    "hinton_student": _mlp(
        (800, 800), 0.0, f"{_HINTON} student: 800-800 ReLU, no dropout; 1,276,810 params on 784 inputs/10 classes"
    ),
    "mlp_small": _mlp((64,), 0.0, "MLP with one 64-unit ReLU layer; no published count"),
    "mlp_tiny": _mlp((16,), 0.0, "MLP with one 16-unit ReLU layer; no published count"),
    "mimic": _Entry(
        mimic.mimic_student,
        {"hidden_units": 2000, "bottleneck": 250},
        "shallow mimic net of Ba & Caruana 2014 (Do Deep Nets Really Need to be Deep?): linear bottleneck "
        "(k=250, as their TIMIT SNN-MIMIC models; not checked offline) -> one 2000-unit ReLU layer (width ours) "
        "-> logits; train it on the teacher's logits (recipe logit_mse); 718,010 params on 784 inputs/10 classes",
        input_ranks=(1, 3),
    ),
    "cnn_large": _Entry(cnn.cnn, {"widths": (32, 64, 128)}, f"{_CNN}, widths 32-64-128; no published count"),
    "cnn_small": _Entry(cnn.cnn, {"widths": (16, 32)}, f"{_CNN}, widths 16-32; no published count"),
    "cnn_tiny": _Entry(cnn.cnn, {"widths": (4, 8)}, f"{_CNN}, widths 4-8; no published count"),
    "resnet8": _resnet(8, _SMALL, "0.08M"),
    "resnet14": _resnet(14, _SMALL),
    "resnet20": _resnet(20, _SMALL, "0.28M"),
    "resnet32": _resnet(32, _SMALL, "0.47M"),
    "resnet44": _resnet(44, _SMALL),
    "resnet56": _resnet(56, _SMALL, "0.86M"),
    "resnet110": _resnet(110, _SMALL, "1.73M"),
    "resnet8x4": _resnet(8, _WIDE, "1.23M"),
    "resnet32x4": _resnet(32, _WIDE, "7.43M"),
    "wrn_16_1": _wrn(16, 1),
    "wrn_16_2": _wrn(16, 2, "0.70M"),
    "wrn_16_4": _wrn(16, 4),
    "wrn_28_4": _wrn(28, 4),
    "wrn_40_1": _wrn(40, 1, "0.57M"),
    "wrn_40_2": _wrn(40, 2, "2.26M"),
    "mobilenetv2": _Entry(
        mobilenetv2.mobilenetv2,
        {"expansion": 6, "width_mult": 0.5},
        "CIFAR MobileNetV2 (Sandler et al., CVPR 2018; RepDistiller models/mobilenetv2.py mobile_half), "
        f"T=6, width 0.5; 0.81M {_CRD}",
    ),
    "shufflenetv1": _Entry(
        shufflenetv1.shufflenetv1,
        {},
        "CIFAR ShuffleNet (Zhang et al., CVPR 2018; RepDistiller models/ShuffleNetv1.py ShuffleV1), "
        f"3 groups, 240-480-960; 0.95M {_CRD}",
    ),
    "shufflenetv2": _Entry(
        shufflenetv2.shufflenetv2,
        {"net_size": 1},
        "CIFAR ShuffleNetV2 (Ma et al., ECCV 2018; RepDistiller models/ShuffleNetv2.py ShuffleV2), "
        f"net size 1, 116-232-464; 1.35M {_CRD}",
    ),
    "bilstm": _Entry(
        text.bilstm,
        {},
        "BiLSTM text student (Tang et al. 2019, distilling BERT): Embedding(30000, 300) -> BiLSTM(300) -> "
        "Dense(400, relu) -> logits; input (seq_len,) token ids; no published count",
        input_ranks=(1,),
    ),
}


def names():
    """Sorted names of the zoo's models."""
    return sorted(_ZOO)


def _entry(name):
    if name not in _ZOO:
        raise ValueError(f"Unknown model {name!r}. Available models: {names()}")
    return _ZOO[name]


def describe(name):
    """One line: the model's family, reference and published parameter count."""
    return f"{name}: {_entry(name).description}"


_SHAPES = {1: "(length,)", 3: "(H, W, C)"}


def _check_input_shape(name, input_shape, ranks):
    expected = " or ".join(_SHAPES[rank] for rank in ranks)
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) not in ranks or not all(is_int(d) and d > 0 for d in shape):
        raise ValueError(
            f"Model {name!r} takes input_shape {expected}: a tuple of positive ints. "
            f"Received: input_shape={input_shape!r}"
        )
    return shape


def get(name, input_shape, num_classes, /, **kwargs):
    """Builds zoo model `name` (a functional, built `keras.Model`).

    Args:
        name: one of `names()` (positional: `name=` names the model).
        input_shape: shape of one example without the batch axis: `(H, W, C)`
            for image models, `(sequence_length,)` for `bilstm`; MLPs take
            either `(H, W, C)` or flat `(features,)` (they flatten it).
        num_classes: number of logits, an int >= 2.
        **kwargs: override the entry's builder arguments (see its module),
            e.g. `dropout=0.5` or `name="teacher"`.
    """
    entry = _entry(name)
    shape = _check_input_shape(name, input_shape, entry.input_ranks)
    if not is_int(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2. Received: num_classes={num_classes!r}")
    arguments = {"name": name, **entry.kwargs, **kwargs}
    return entry.builder(shape, num_classes, **arguments)


def with_input_normalization(model, mean, std, name="input_normalization"):
    """`model` behind a fixed per-channel standardisation `(x - mean) / std`.

    The PyTorch protocols normalise the images in the data pipeline (e.g.
    RepDistiller's `transforms.Normalize(mean, std)` for CIFAR-100); here the
    model does it, so the data stays in [0, 1] and a TFLite export takes
    [0, 1] inputs. The returned functional model is a copy of `model` (same
    weights, same layer names, so `feature_layers` and the recipes' layer
    names work unchanged) after a non-trainable
    `keras.layers.Normalization(mean=mean, variance=std**2)` named `name`.

    Args:
        model: a functional `keras.Model` with one input.
        mean, std: per-channel values (the input's last axis), or scalars.
    """
    import keras
    import numpy as np

    mean, std = np.asarray(mean, "float64"), np.asarray(std, "float64")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError(f"mean must be finite and std finite and > 0. Received: mean={mean!r}, std={std!r}")
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise ValueError(f"with_input_normalization takes a functional model with one input. Received: {model!r}")
    inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype, name=model.inputs[0].name)
    normalized = keras.layers.Normalization(mean=mean.tolist(), variance=(std**2).tolist(), name=name)(inputs)

    def call(layer, *args, **kwargs):  # the layers that read the input read its normalised value
        args, kwargs = keras.tree.map_structure(lambda t: normalized if t is inputs else t, (args, kwargs))
        return layer(*args, **kwargs)

    # Fresh layers (a layer shared by two graphs would give its first graph's tensor as `layer.output`, which
    # the distillers' feature extractors read), holding `model`'s weights.
    clone = keras.models.clone_model(model, input_tensors=inputs, call_function=call)
    for layer in model.layers:
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


_STAGE = re.compile(r"stage(\d+)")


def feature_layers(model):
    """The feature layers of a model that follows the naming convention.

    Reads layer names only, so it works on models loaded from `.keras` files
    and on your own models that follow the convention (module docstring).

    Returns:
        A dict with `"stages"`: the `stage{i}` layer names by increasing `i`;
        `"preact"`: the matching `stage{i}_preact` names when every stage has
        one, else `[]` (so the two lists always pair up); `"embedding"`: the
        `embedding` layer's name if there is one, else the last stage, else
        None.
    """
    layer_names = {layer.name for layer in model.layers}
    matches = [_STAGE.fullmatch(name) for name in layer_names]
    stages = [m.group(0) for m in sorted(filter(None, matches), key=lambda m: int(m.group(1)))]
    preact = [f"{name}_preact" for name in stages]
    if not stages or not all(name in layer_names for name in preact):
        preact = []
    if "embedding" in layer_names:
        embedding = "embedding"
    else:
        embedding = stages[-1] if stages else None
    return {"stages": stages, "preact": preact, "embedding": embedding}


__all__ = ["describe", "feature_layers", "get", "names", "with_input_normalization"]
