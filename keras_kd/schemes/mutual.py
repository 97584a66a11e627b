"""Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_kd.losses.base import num_replicas, validate_positive
from keras_kd.losses.kd import KDLoss


@keras.saving.register_keras_serializable(package="keras_kd")
class MutualLearning(keras.Model):
    """Deep mutual learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018): two
    or more peers, all trainable, teach each other with one `fit()`.

    Each step runs every peer once on the batch (training mode) and peer `k`
    minimises

        L_k = CE(y, z_k) + kd_weight * mean_{j != k} KL(p_j^T || p_k^T) * T^2,
        p^T = softmax(z / T),

    with `KDLoss(temperature)` as the KL term (the `T^2` factor included; at
    the paper's `T = 1` it is plain `KL(p_j || p_k)`). The paper weighs the
    mimicry term by `1 / (K - 1)` for `K` peers, which is the mean here, and
    uses `kd_weight = 1`.

    The reference implementation updates the peers one after the other in a
    step, each against the others' current predictions. This one takes one
    gradient step on `sum_k L_k` (a simultaneous update): every peer's
    targets `p_j` pass through `stop_gradient`, so each peer's gradient is
    that of its own `L_k` alone. This is the common vectorised variant; it
    differs from the reference only in that peer `k` sees the other peers'
    predictions from before, not after, their update in the same step.

    `compile(optimizer, loss, metrics)` works as usual: `loss` is the
    supervised loss applied to every peer (a classification loss on logits,
    e.g. `SparseCategoricalCrossentropy(from_logits=True)`) and `metrics` are
    computed on the first peer's output. The logs hold, for each peer `k`
    (1-based), `peer{k}_loss` (its supervised loss), `peer{k}_kd_loss` (its
    mimicry term, before `kd_weight`) and `peer{k}_accuracy` (top-1 against
    the labels, sparse or one-hot), plus the total `loss` (the sum of the
    peers' losses and any regularization losses). `call(x)` returns the
    first peer's output; the peers stay plain Keras models
    (`mutual.peers[k]`).

    Args:
        peers: a list of two or more distinct, built `keras.Model`s with the
            same output shape (class logits). They may differ in
            architecture.
        temperature: softmax temperature `T > 0` of the mimicry term (the
            paper uses 1).
        kd_weight: weight `>= 0` of the mimicry term (the paper uses 1).

    Example:

    ```python
    mutual = MutualLearning([peer_a, peer_b])  # from keras_kd.schemes.mutual
    mutual.compile(optimizer="adam",
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    mutual.fit(x_train, y_train, epochs=30)
    mutual.evaluate_peers(x_test, y_test)  # [accuracy of peer 1, of peer 2]
    ```
    """

    def __init__(self, peers, temperature=1.0, kd_weight=1.0, name="mutual_learning", **kwargs):
        peers = _validate_peers(peers)
        # compile() then wraps the optimizer for loss scaling under mixed_float16.
        kwargs.setdefault("dtype", peers[0].dtype_policy)
        super().__init__(name=name, **kwargs)
        self.peers = peers
        self.temperature = validate_positive("temperature", temperature)
        self.kd_weight = validate_positive("kd_weight", kd_weight, allow_zero=True)
        self.kd_loss = KDLoss(temperature=self.temperature)
        self.peer_loss_trackers = [keras.metrics.Mean(name=f"peer{k}_loss") for k in self._indices()]
        self.peer_kd_trackers = [keras.metrics.Mean(name=f"peer{k}_kd_loss") for k in self._indices()]
        self.peer_accuracy_trackers = [keras.metrics.Mean(name=f"peer{k}_accuracy") for k in self._indices()]
        self.built = True

    def _indices(self):
        return range(1, len(self.peers) + 1)

    def call(self, inputs, training=None):
        return self.peers[0](inputs, training=training)

    def compute_losses(self, y, sample_weight, logits):
        """Return ({log name: value}, total) for the peers' `logits` (one
        tensor per peer) on a labelled batch."""
        values = {}
        total = tf.constant(0.0)
        for k, z_k in enumerate(logits, start=1):
            supervised = tf.cast(self._compile_loss(y, z_k, sample_weight), "float32")
            # KDLoss stop-gradients its first argument: peer j is a fixed target here.
            mimicry = [
                self.kd_loss(z_j, z_k, sample_weight=sample_weight) for j, z_j in enumerate(logits, start=1) if j != k
            ]
            kd = tf.cast(tf.add_n(mimicry), "float32") / float(len(mimicry))
            values[f"peer{k}_loss"], values[f"peer{k}_kd_loss"] = supervised, kd
            total = total + supervised + self.kd_weight * kd
        for loss in self.losses:  # the peers' regularizers, counted once
            total = total + tf.cast(loss, "float32")
        return values, total

    def _check_compiled(self, y):
        if y is None:
            raise ValueError(
                "MutualLearning trains every peer on the labels (cross-entropy plus mimicry), "
                "but the data has none. Feed (x, y) batches."
            )
        if self._compile_loss is None:
            raise ValueError(
                "MutualLearning needs the peers' supervised loss: pass `loss=` to compile(), e.g. "
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
        for k, z_k in enumerate(logits):
            name = f"peer{k + 1}"
            self.peer_loss_trackers[k].update_state(values[f"{name}_loss"] * replicas, sample_weight=batch_size)
            self.peer_kd_trackers[k].update_state(values[f"{name}_kd_loss"] * replicas, sample_weight=batch_size)
            self.peer_accuracy_trackers[k].update_state(correct(y, z_k), sample_weight=sample_weight)
        return self.compute_metrics(x, y, logits[0], sample_weight=sample_weight)

    def evaluate_peers(self, x, y, batch_size=256):
        """Top-1 accuracy of each peer on `(x, y)` (inference mode), as a
        list of floats in the order of `peers`. `y` holds class ids or
        one-hot rows."""
        return peer_accuracies(self.peers, x, y, batch_size)

    def get_config(self):
        return {
            "name": self.name,
            "peers": [keras.saving.serialize_keras_object(peer) for peer in self.peers],
            "temperature": self.temperature,
            "kd_weight": self.kd_weight,
        }

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


def _output_shape(model, scheme="mutual learning"):
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None  # subclassed model: its shape shows on the first step
    if len(outputs) != 1:
        raise ValueError(
            f"Peer '{model.name}' has {len(outputs)} outputs; {scheme} needs one output of class logits per peer."
        )
    return tuple(outputs[0].shape[1:])


def _validate_peers(peers, scheme="mutual learning"):
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
