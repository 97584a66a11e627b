"""What the schemes that train several peers in one `fit()` share (deep
mutual learning, filter grafting): the peers' step, their validation and
their accuracy (the
`PrimaryOutput` mixin they share with the Distiller is in
`keras_kd.primary_output`)."""

import keras
import numpy as np
from keras import ops

from keras_kd.backend import regularization_loss, track_batch_value
from keras_kd.primary_output import PrimaryOutput
from keras_kd.sample_index import batch_size_of


class PeerTrainer(PrimaryOutput, keras.Model):
    """Base of the schemes that train `K >= 2` peers in one `fit()`.

    Keras' own step runs it on every backend: `call` runs each peer once on
    the batch and returns their outputs (a list, in peer order);
    `compute_loss` returns the total of `compute_losses`: the peers'
    supervised losses, the scheme's own terms (`extra_losses`, which
    subclasses define; they log `peer{k}_{name}` for every other `name` in
    `peer_logs`) and the peers' regularization losses. The logs hold those,
    each peer's `peer{k}_accuracy` and the total `loss`; `metrics` are
    computed on the first peer's output, which `predict` returns.
    """

    peer_logs = ("loss",)  # per-peer values of `compute_losses`, logged as peer{k}_{name}
    trains_on = "the labels"  # for the error raised on data without labels

    def __init__(self, peers, scheme, name, **kwargs):
        peers = validate_peers(peers, scheme=scheme)
        # compile() then wraps the optimizer for loss scaling under mixed_float16.
        kwargs.setdefault("dtype", peers[0].dtype_policy)
        super().__init__(name=name, **kwargs)
        self.peers = peers
        indices = range(1, len(peers) + 1)
        self.peer_log_trackers = [keras.metrics.Mean(name=f"peer{k}_{log}") for log in self.peer_logs for k in indices]
        self.peer_accuracy_trackers = [keras.metrics.Mean(name=f"peer{k}_accuracy") for k in indices]
        self.built = True

    def call(self, inputs, training=None):
        """Every peer's output on `inputs`, as a list in peer order (the
        first peer's alone in `predict`)."""
        if self._outputs_only:
            return self.peers[0](inputs, training=training)
        return [peer(inputs, training=training) for peer in self.peers]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The total of `compute_losses` on the peers' outputs (`y_pred`, from
        `call`); updates the per-peer trackers."""
        self._check_compiled(y)
        if self._outputs_only:  # Keras building the compiled loss on the first peer's output spec
            return self._compile_loss(y, y_pred, sample_weight)
        values, total = self.compute_losses(y, sample_weight, y_pred)
        batch_size = batch_size_of(x)
        for tracker in self.peer_log_trackers:
            track_batch_value(tracker, values[tracker.name], batch_size)
        for tracker, z_k in zip(self.peer_accuracy_trackers, y_pred):
            tracker.update_state(correct(y, ops.stop_gradient(z_k)), sample_weight=sample_weight)
        return total

    def compute_losses(self, y, sample_weight, logits):
        """Return ({log name: value}, total) for the peers' `logits` (one
        tensor per peer) on a labelled batch: each peer's supervised loss
        (`peer{k}_loss`), the scheme's own terms (`extra_losses`) and the
        peers' regularization losses, counted once."""
        values = {}
        total = ops.zeros((), "float32")
        for k, z_k in enumerate(logits, start=1):
            values[f"peer{k}_loss"] = ops.cast(self._compile_loss(y, z_k, sample_weight), "float32")
            total = total + values[f"peer{k}_loss"]
        extra, extra_total = self.extra_losses(sample_weight, logits)
        values.update(extra)
        return values, total + extra_total + regularization_loss(self)

    def extra_losses(self, sample_weight, logits):
        """The scheme's terms beyond the supervised losses: ({log name:
        value}, their weighted sum). None here."""
        return {}, 0.0

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The compiled metrics of the first peer's output."""
        self._check_compiled(y)
        if not self._outputs_only:  # else `call` gave the first peer's output alone
            y_pred = y_pred[0]
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _check_compiled(self, y):
        name = type(self).__name__
        if y is None:
            raise ValueError(
                f"{name} trains every peer on {self.trains_on}, but the data has none. Feed (x, y) batches."
            )
        if self._compile_loss is None:
            raise ValueError(
                f"{name} needs the peers' supervised loss: pass `loss=` to compile(), e.g. "
                "keras.losses.SparseCategoricalCrossentropy(from_logits=True)."
            )

    def evaluate_peers(self, x, y, batch_size=256):
        """Top-1 accuracy of each peer on `(x, y)` (inference mode), as a
        list of floats in the order of `peers`. `y` holds class ids or
        one-hot rows."""
        return peer_accuracies(self.peers, x, y, batch_size)

    def get_config(self):
        return {"name": self.name, "peers": [keras.saving.serialize_keras_object(peer) for peer in self.peers]}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["peers"] = [keras.saving.deserialize_keras_object(peer) for peer in config["peers"]]
        return cls(**config)


def peer_accuracies(peers, x, y, batch_size=256):
    """Top-1 accuracy of each model in `peers` on `(x, y)` (inference mode);
    `y` holds class ids or one-hot rows."""
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(-1)
    labels = labels.reshape(-1)
    return [
        float(np.mean(np.argmax(peer.predict(x, batch_size=batch_size, verbose=0), -1) == labels)) for peer in peers
    ]


def correct(y, logits):
    """1.0 where `argmax(logits)` is the label, else 0.0, per example; `y`
    holds class ids (shape `(batch,)` or `(batch, 1)`) or one-hot rows."""
    predicted = ops.argmax(logits, axis=-1)
    y = ops.convert_to_tensor(y)
    if len(y.shape) == len(logits.shape) and y.shape[-1] != 1:
        labels = ops.argmax(y, axis=-1)
    else:
        labels = ops.reshape(y, ops.shape(predicted))
    return ops.cast(ops.equal(ops.cast(labels, "int32"), ops.cast(predicted, "int32")), "float32")


def _output_shape(model, scheme):
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None  # subclassed model: its shape shows on the first step
    if len(outputs) != 1:
        raise ValueError(
            f"Peer '{model.name}' has {len(outputs)} outputs; {scheme} needs one output of class logits per peer."
        )
    return tuple(outputs[0].shape[1:])


def validate_peers(peers, scheme):
    """Return `peers` as a list after checking that they are two or more
    distinct, built Keras models with no shared weights and one output of
    the same shape; `scheme` names the caller in the error messages."""
    if isinstance(peers, keras.Model) or not isinstance(peers, (list, tuple)):
        raise ValueError(f"`peers` must be a list of keras.Model. Received: peers={peers!r}")  # noqa: TRY004 (ValueError throughout, as in Distiller)
    peers = list(peers)
    if len(peers) < 2:
        raise ValueError(f"{scheme.capitalize()} needs at least 2 peers. Received {len(peers)}: {peers!r}")
    for k, peer in enumerate(peers, start=1):
        if not isinstance(peer, keras.Model):
            raise ValueError(f"Peer {k} must be a keras.Model. Received: {peer!r}")  # noqa: TRY004 (ValueError throughout, as in Distiller)
        if not peer.built:
            raise ValueError(
                f"Peer {k} ('{peer.name}') is not built. Create it with keras.Input or call it on a batch first."
            )
    variables = {}
    for k, peer in enumerate(peers, start=1):
        for j, other in enumerate(peers[: k - 1], start=1):
            if peer is other:
                raise ValueError(f"Peers {j} and {k} are the same model '{peer.name}'; give distinct models.")
        for variable in peer.weights:
            owner = variables.setdefault(id(variable), k)
            if owner != k:
                raise ValueError(
                    f"Peers {owner} ('{peers[owner - 1].name}') and {k} ('{peer.name}') share the weight "
                    f"'{variable.path}'; {scheme} needs independent peers."
                )
    shapes = [_output_shape(peer, scheme) for peer in peers]
    known = [(k, shape) for k, shape in enumerate(shapes, start=1) if shape is not None]
    for k, shape in known[1:]:
        if shape != known[0][1]:
            first = known[0][0]
            raise ValueError(
                f"Peer {k} ('{peers[k - 1].name}') outputs shape {shape}, but peer {first} "
                f"('{peers[first - 1].name}') outputs {known[0][1]}; every peer must output the same logits shape."
            )
    return peers
