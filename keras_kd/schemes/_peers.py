"""What the schemes that train several peers in one `fit()` share (deep
mutual learning, filter grafting): the model that runs the peers, the peers'
validation and their accuracy."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_kd.losses.base import num_replicas


class PeerTrainer(keras.Model):
    """Base of the schemes that train `K >= 2` peers in one `fit()`.

    Every step runs each peer once on the batch (training mode) and takes one
    gradient step on the total of `compute_losses`: the peers' supervised
    losses, the scheme's own terms (`extra_losses`, which subclasses define;
    they log `peer{k}_{name}` for every other `name` in `peer_logs`) and the
    peers' regularization losses. The logs hold those, each
    peer's `peer{k}_accuracy` and the total `loss`; `metrics` are computed on
    the first peer's output, and `call(x)` returns it.
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
        return self.peers[0](inputs, training=training)

    def compute_losses(self, y, sample_weight, logits):
        """Return ({log name: value}, total) for the peers' `logits` (one
        tensor per peer) on a labelled batch: each peer's supervised loss
        (`peer{k}_loss`), the scheme's own terms (`extra_losses`) and the
        peers' regularization losses, counted once."""
        values = {}
        total = tf.constant(0.0)
        for k, z_k in enumerate(logits, start=1):
            values[f"peer{k}_loss"] = tf.cast(self._compile_loss(y, z_k, sample_weight), "float32")
            total = total + values[f"peer{k}_loss"]
        extra, extra_total = self.extra_losses(sample_weight, logits)
        values.update(extra)
        total = total + extra_total
        for loss in self.losses:
            total = total + tf.cast(loss, "float32")
        return values, total

    def extra_losses(self, sample_weight, logits):
        """The scheme's terms beyond the supervised losses: ({log name:
        value}, their weighted sum). None here."""
        return {}, 0.0

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

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled(y)
        with tf.GradientTape() as tape:
            logits = [peer(x, training=True) for peer in self.peers]
            values, total = self.compute_losses(y, sample_weight, logits)
            scaled_total = self.optimizer.scale_loss(total)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_trackers(x, y, sample_weight, logits, values, total)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._check_compiled(y)
        logits = [peer(x, training=False) for peer in self.peers]
        values, total = self.compute_losses(y, sample_weight, logits)
        return self._update_trackers(x, y, sample_weight, logits, values, total)

    def _update_trackers(self, x, y, sample_weight, logits, values, total):
        batch_size = tf.shape(tf.nest.flatten(x)[0])[0]
        # Keras divides per-sample losses by the replica count; undo it for the logs.
        replicas = num_replicas()
        self._loss_tracker.update_state(total * replicas, sample_weight=batch_size)
        for tracker in self.peer_log_trackers:
            tracker.update_state(values[tracker.name] * replicas, sample_weight=batch_size)
        for tracker, z_k in zip(self.peer_accuracy_trackers, logits):
            tracker.update_state(correct(y, z_k), sample_weight=sample_weight)
        return self.compute_metrics(x, y, logits[0], sample_weight=sample_weight)

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
    return ops.cast(ops.equal(ops.cast(labels, "int64"), ops.cast(predicted, "int64")), "float32")


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
