"""Meng, Cheng, Li, Xu, Ji, Sun & Lu, "Filter Grafting for Deep Neural
Networks", CVPR 2020 (arXiv:2001.05868); reference code:
https://github.com/fxmeng/filter-grafting (`grafting_cifar/grafting.py`).

Several networks of the same architecture train in parallel; at the end of
every epoch each one replaces every layer's weights by a weighted average of
its own and another network's:

    H(W)  = -sum_i p_i log p_i          (n = 10 equal-width bins of the
                                         flattened weights, min to max)
    alpha = a / pi * arctan(c * (H(W_self) - H(W_other))) + 0.5
                                        (a = 0.4, c = 500)
    W_self <- alpha * W_self + (1 - alpha) * W_other

so the network whose layer carries more information (a higher entropy of
its weight distribution) keeps more of its own weights; `alpha` lies in
`(0.5 - a/2, 0.5 + a/2)`. This is the paper's final, layer-level
criterion, with the constants of the paper and of the reference code
(`--a 0.4 --c 500`, `entropy(x, n=10)`, `round(alpha, 2)`); the paper also
studies filter-level grafting and the L1 norm as criterion, which this
module does not implement.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_kd.schemes._peers import PeerTrainer, validate_peers
from keras_kd.validation import is_int, validate_positive, validate_positive_int

SCHEME = "filter grafting"
CONV_LAYERS = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
)
DEPTHWISE_LAYERS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
SEPARABLE_LAYERS = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def weight_entropy(weights, bins=10):
    """Entropy of the distribution of `weights` (Meng et al. 2020):
    the flattened values are counted in `bins` equal-width bins spanning
    `[min, max]` (the last bin closed, as `np.histogram`), `p_i` is the
    fraction of values in bin `i`, and `H = -sum_i p_i log p_i` (natural
    log, empty bins contribute 0). A constant tensor has entropy 0; values
    spread evenly over the bins reach the maximum `log(bins)`.

    Vectorised `keras.ops` (any backend), computed in float32; returns a
    scalar tensor.

    The reference counts bin `i` as `min + i*s <= x < min + (i+1)*s`, so the
    elements equal to the maximum fall in no bin and the `p_i` sum to
    `1 - (count of the max)/size`; here they fall in the last bin. For a
    kernel of `N` distinct values the two entropies differ by at most about
    `(1 + log N) / N` (the coefficient compares two such entropies, which
    both lose their maximum in the reference).
    """
    bins = _validate_bins(bins)
    weights = ops.convert_to_tensor(weights)
    size = math.prod(weights.shape)
    if size == 0:
        raise ValueError(f"weight_entropy needs at least one value. Received weights of shape {tuple(weights.shape)}.")
    x = ops.reshape(ops.cast(weights, "float32"), (-1,))
    low, high = ops.min(x), ops.max(x)
    position = ops.divide_no_nan(x - low, high - low) * float(bins)  # 0 everywhere for a constant tensor
    index = ops.clip(ops.cast(ops.floor(position), "int32"), 0, bins - 1)
    counts = ops.cast(ops.bincount(index, minlength=bins), "float32")  # length `bins`: index < bins
    p = counts / float(size)
    # p log p, with 0 log 0 = 0 (an empty bin's log reads p = 1).
    return 0.0 - ops.sum(p * ops.log(ops.where(p > 0, p, 1.0)))  # 0.0, not -0.0, for a constant tensor


def grafting_coefficient(entropy_self, entropy_other, a=0.4, c=500.0, rounding=None):
    """The weight `alpha` a network gives its own layer when grafting
    (Meng et al. 2020; the reference code's formula):

        alpha = a / pi * arctan(c * (entropy_self - entropy_other)) + 0.5

    0.5 for equal entropies, above 0.5 when the network's own layer has the
    higher entropy, always inside `(0.5 - a/2, 0.5 + a/2)`. The paper and
    the reference use `a = 0.4`, `c = 500`; the reference rounds `alpha` to
    `rounding = 2` decimals (`None` here: no rounding; the rounding is half
    to even). Element-wise on tensors; returns float32.
    """
    a, c = _validate_a(a), validate_positive("c", c)
    rounding = _validate_rounding(rounding)
    difference = ops.cast(entropy_self, "float32") - ops.cast(entropy_other, "float32")
    alpha = ops.cast(a / math.pi, "float32") * ops.arctan(ops.cast(c, "float32") * difference) + 0.5
    if rounding is not None:
        scale = ops.cast(10.0**rounding, "float32")
        alpha = ops.round(alpha * scale) / scale
    return alpha


@keras.saving.register_keras_serializable(package="keras_kd")
class FilterGrafting(keras.callbacks.Callback):
    """Filter grafting (Meng et al., CVPR 2020) as a Keras callback: at the
    end of every `every`-th epoch, network `k` of `K` peers receives the
    weights of network `k - 1` (network 1 receives from network `K`) layer
    by layer:

        alpha = a / pi * arctan(c * (H(u) - H(v))) + 0.5,  rounded to `rounding` decimals
        u <- alpha * u + (1 - alpha) * v

    where `u` is a kernel of network `k`, `v` the same kernel of network
    `k - 1` and `H` the entropy of the weights in `bins` equal-width bins
    (`weight_entropy`; defaults `a = 0.4`, `c = 500`, `bins = 10`,
    `rounding = 2`, as the paper and the reference). The ring comes from the
    reference code, which runs `--num K` processes: process `i` saves its
    checkpoint as number `i mod K` and grafts from number `i - 1`, so network
    1 receives from network `K`. Every peer is updated from the
    weights before this round (all new weights are computed first, then
    assigned), as in the reference, where each process grafts from the
    other's checkpoint of the same epoch.

    Grafted by default: the kernels of convolutions (`Conv1D/2D/3D`, their
    `Transpose` variants and `DepthwiseConv*D`, and
    `SeparableConv*D`'s depthwise and pointwise kernels, each with its own
    `alpha`); `include_dense=True` adds `Dense` kernels. Biases,
    BatchNormalization parameters and statistics and every other weight stay
    as they are. The epoch logs get `graft_coef_peer{k}`, the mean `alpha`
    of peer `k` over its grafted kernels, seen by the callbacks after it in
    the list (`History` and the progress bar, which Keras appends last,
    included). Keras validates before `on_epoch_end`, so `val_*` metrics are
    those of the weights before grafting, as the reference tests before it
    grafts; after `fit()` the peers hold the weights grafted at the last
    epoch, as in the reference.

    Differences from the reference: it selects the state-dict entries whose
    name contains "conv" and, through a variable left over from the loop,
    also averages every other entry (BatchNorm weights and running
    statistics, the final linear layer, any convolution whose name lacks
    "conv") with the `alpha` of the last "conv" entry before it, and gives
    convolution biases their own `alpha`; here only the kernels above
    change. Its entropy leaves the values equal to the maximum out of every
    bin (see `weight_entropy`).

    Args:
        peers: the `K >= 2` distinct, built peer models of one architecture
            (the same list of weight shapes). None: use the `peers` of the
            `GraftingTrainer` the callback is given to.
        every: graft at the end of every `every`-th epoch (`every >= 1`).
        bins: histogram bins of the entropy (integer `>= 2`).
        a: range of `alpha` around 0.5, `0 < a <= 1` (`alpha` stays within
            `(0.5 - a/2, 0.5 + a/2)`, a convex weight).
        c: steepness `> 0`: `alpha` has slope `a * c / pi` at equal
            entropies.
        rounding: decimals `alpha` is rounded to, or None.
        include_dense: also graft `Dense` kernels.

    The peers must start from different initial weights (build them under
    different seeds): grafting identical weights is a no-op, and the paper's
    point is to bring another network's information into a layer.
    """

    def __init__(self, peers=None, every=1, bins=10, a=0.4, c=500.0, rounding=2, include_dense=False):
        super().__init__()
        self.every = validate_positive_int("every", every)
        self.bins = _validate_bins(bins)
        self.a = _validate_a(a)
        self.c = validate_positive("c", c)
        self.rounding = _validate_rounding(rounding)
        self.include_dense = bool(include_dense)
        self.peers = None if peers is None else _validate_grafting_peers(peers)
        if self.peers is not None:
            _graft_targets(self.peers, self.include_dense)

    def _resolve_peers(self):
        if self.peers is not None:
            return self.peers
        peers = getattr(self.model, "peers", None) if self.model is not None else None
        if peers is None:
            raise ValueError(
                "FilterGrafting needs the peer models: pass `peers=` or give the callback to a "
                f"GraftingTrainer's fit(). Received model={self.model!r}"
            )
        return list(peers)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        for k, alphas in enumerate(self.graft(), start=1):
            if logs is not None:
                logs[f"graft_coef_peer{k}"] = float(np.mean(alphas))

    def graft(self):
        """Run one round of grafting now; return, per peer, the list of the
        `alpha`s of its grafted kernels (floats, in layer order)."""
        targets = _graft_targets(self._resolve_peers(), self.include_dense)
        entropies = [[weight_entropy(kernel, self.bins) for kernel in kernels] for kernels in targets]
        updates, alphas = [], []
        for k, kernels in enumerate(targets):
            source = (k - 1) % len(targets)  # network k receives from network k - 1, cyclically
            peer_alphas = []
            for i, kernel in enumerate(kernels):
                alpha = grafting_coefficient(entropies[k][i], entropies[source][i], self.a, self.c, self.rounding)
                own = ops.cast(kernel, "float32")
                other = ops.cast(targets[source][i], "float32")
                updates.append((kernel, ops.cast(alpha * own + (1.0 - alpha) * other, kernel.dtype)))
                peer_alphas.append(float(alpha))
            alphas.append(peer_alphas)
        for kernel, value in updates:  # only now: every peer grafts from the weights before this round
            kernel.assign(value)
        return alphas

    def get_config(self):
        # The peers are models, not configuration: a restored callback reads them from its GraftingTrainer.
        return {
            "every": self.every,
            "bins": self.bins,
            "a": self.a,
            "c": self.c,
            "rounding": self.rounding,
            "include_dense": self.include_dense,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_kd")
class GraftingTrainer(PeerTrainer):
    """Filter grafting (Meng et al., CVPR 2020): `K >= 2` peers of one
    architecture train in parallel in one `fit()`, and a `FilterGrafting`
    callback grafts each peer's layers from the previous peer's (cyclically)
    at the end of every `every`-th epoch, with

        H(W)  = -sum_i p_i log p_i                       (bins = 10)
        alpha = a / pi * arctan(c * (H(W_k) - H(W_{k-1}))) + 0.5   (a = 0.4, c = 500)
        W_k  <- alpha * W_k + (1 - alpha) * W_{k-1}

    (see `FilterGrafting` for the layers grafted and the differences from
    the reference code). The `K`-network ring is the reference's
    (`--num K`, network `i` grafts from network `i - 1`).

    Each peer minimises its own supervised loss; a step takes one gradient
    step on the sum, and since the peers share no weights each gets exactly
    the gradient of its own loss (the peers exchange information only
    through grafting). The reference trains the networks in separate
    processes, each with its own data order and, with `--difflr`, its own
    initial learning rate; here all peers see the same batches and share the
    optimizer's hyper-parameters, so their diversity comes from their
    initial weights alone: build the peers under different seeds.

    `fit()` puts the trainer's `FilterGrafting` (`trainer.grafting`, built
    from the arguments below) first in the callbacks, so that every other
    callback sees the `graft_coef_peer{k}` logs and the grafted weights
    (a `ModelCheckpoint` saves the weights training continues from), unless
    the callbacks already hold a `FilterGrafting` (which then grafts
    instead, reading its peers from the trainer when built with
    `peers=None`) or `graft=False`.

    `compile(optimizer, loss, metrics)` works as usual: `loss` is the
    supervised loss of every peer (e.g.
    `SparseCategoricalCrossentropy(from_logits=True)`) and `metrics` are
    computed on the first peer's output. The logs hold, for each peer `k`
    (1-based), `peer{k}_loss` and `peer{k}_accuracy`, the total `loss` (the
    sum of the peers' losses and regularization losses) and, at grafting
    epochs, `graft_coef_peer{k}`. `predict(x)` returns the first peer's
    output (`trainer(x)`, every peer's, as a list); the peers stay plain
    Keras models (`trainer.peers[k]`).

    Args:
        peers: a list of two or more distinct, built `keras.Model`s with the
            same list of weight shapes, built with different seeds.
        every, bins, a, c, rounding, include_dense: passed to
            `FilterGrafting` (defaults: the paper's and the reference's).
        graft: whether `fit()` adds `trainer.grafting` (False: independent
            training unless a `FilterGrafting` is passed to `fit()`).

    Example:

    ```python
    keras.utils.set_random_seed(1); peer_a = make_cnn()
    keras.utils.set_random_seed(2); peer_b = make_cnn()
    trainer = GraftingTrainer([peer_a, peer_b])  # from keras_kd.schemes.grafting
    trainer.compile(optimizer="adam",
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])
    trainer.fit(x_train, y_train, epochs=30)  # grafts after every epoch
    trainer.evaluate_peers(x_test, y_test)  # [accuracy of peer 1, of peer 2]
    ```
    """

    def __init__(
        self,
        peers,
        every=1,
        bins=10,
        a=0.4,
        c=500.0,
        rounding=2,
        include_dense=False,
        graft=True,
        name="grafting_trainer",
        **kwargs,
    ):
        peers = _validate_grafting_peers(peers)
        # Validates the grafting arguments and checks that the peers have kernels to graft.
        grafting = FilterGrafting(peers, every, bins, a, c, rounding, include_dense)
        grafting.peers = None  # reads them from the model it is given to
        super().__init__(peers, SCHEME, name, **kwargs)
        self.grafting = grafting
        self.graft = bool(graft)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        if self.graft and not any(isinstance(callback, FilterGrafting) for callback in callbacks):
            callbacks.insert(0, self.grafting)
        return super().fit(x, y, batch_size, epochs, verbose, callbacks, **kwargs)

    def get_config(self):
        return {**super().get_config(), **self.grafting.get_config(), "graft": self.graft}


def _validate_bins(bins):
    if not is_int(bins) or bins < 2:
        raise ValueError(f"`bins` must be an integer >= 2. Received: bins={bins!r}")
    return int(bins)


def _validate_a(a):
    a = validate_positive("a", a)
    if a > 1:
        raise ValueError(f"`a` must be <= 1 so that alpha stays in (0, 1). Received: a={a!r}")
    return a


def _validate_rounding(rounding):
    if rounding is not None and (not is_int(rounding) or rounding < 0):
        raise ValueError(f"`rounding` must be None or an integer >= 0. Received: rounding={rounding!r}")
    return None if rounding is None else int(rounding)


def _validate_grafting_peers(peers):
    """`validate_peers` plus the same list of weight shapes in every peer."""
    peers = validate_peers(peers, scheme=SCHEME)
    first = peers[0].weights
    for k, peer in enumerate(peers[1:], start=2):
        weights = peer.weights
        for i in range(max(len(first), len(weights))):
            ours = weights[i] if i < len(weights) else None
            theirs = first[i] if i < len(first) else None
            if ours is None or theirs is None or tuple(ours.shape) != tuple(theirs.shape):
                raise ValueError(
                    f"Peer {k} ('{peer.name}') differs from peer 1 ('{peers[0].name}') at weight {i}: "
                    f"{_describe(ours)} vs {_describe(theirs)}; filter grafting averages the peers weight by "
                    "weight and needs the same architecture."
                )
    return peers


def _describe(variable):
    return "no weight" if variable is None else f"'{variable.path}' of shape {tuple(variable.shape)}"


def _kernels(layer, include_dense):
    if isinstance(layer, CONV_LAYERS + DEPTHWISE_LAYERS):
        return [layer.kernel]
    if isinstance(layer, SEPARABLE_LAYERS):
        return [layer.depthwise_kernel, layer.pointwise_kernel]
    if include_dense and isinstance(layer, keras.layers.Dense):
        return [layer.kernel]
    return []


def _graft_targets(peers, include_dense):
    """Per peer, the kernels to graft, in layer order (nested layers included)."""
    targets = []
    for peer in peers:
        layers = peer._flatten_layers(include_self=False, recursive=True)
        targets.append([(type(layer), kernel) for layer in layers for kernel in _kernels(layer, include_dense)])
    if not targets[0]:
        kinds = "convolution" + ("" if include_dense else " (pass include_dense=True to graft Dense kernels)")
        raise ValueError(f"Filter grafting found no {kinds} kernels in peer 1 ('{peers[0].name}').")
    for k, kernels in enumerate(targets[1:], start=2):
        mismatch = len(kernels) != len(targets[0]) or any(
            kind != first_kind or tuple(kernel.shape) != tuple(first.shape)
            for (kind, kernel), (first_kind, first) in zip(kernels, targets[0])
        )
        if mismatch:
            raise ValueError(
                f"Peer {k} ('{peers[k - 1].name}') has other grafted layers than peer 1 ('{peers[0].name}'): "
                f"{[(kind.__name__, tuple(v.shape)) for kind, v in kernels]} vs "
                f"{[(kind.__name__, tuple(v.shape)) for kind, v in targets[0]]}."
            )
    return [[kernel for _, kernel in kernels] for kernels in targets]
