"""Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning", CVPR 2018."""

import keras
from keras import ops

from keras_kd.losses.kd import KDLoss
from keras_kd.schemes._peers import PeerTrainer
from keras_kd.validation import validate_positive


@keras.saving.register_keras_serializable(package="keras_kd")
class MutualLearning(PeerTrainer):
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
    peers' losses and any regularization losses). `predict(x)` returns the
    first peer's output (`mutual(x)`, every peer's, as a list); the peers
    stay plain Keras models (`mutual.peers[k]`).

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

    peer_logs = ("loss", "kd_loss")
    trains_on = "the labels (cross-entropy plus mimicry)"

    def __init__(self, peers, temperature=1.0, kd_weight=1.0, name="mutual_learning", **kwargs):
        temperature = validate_positive("temperature", temperature)
        kd_weight = validate_positive("kd_weight", kd_weight, allow_zero=True)
        super().__init__(peers, "mutual learning", name, **kwargs)
        self.temperature, self.kd_weight = temperature, kd_weight
        self.kd_loss = KDLoss(temperature=self.temperature)

    def extra_losses(self, sample_weight, logits):
        """Each peer's mimicry term `peer{k}_kd_loss`, and their sum weighted by `kd_weight`."""
        values = {}
        for k, z_k in enumerate(logits, start=1):
            # KDLoss stop-gradients its first argument: peer j is a fixed target here.
            mimicry = [
                self.kd_loss(z_j, z_k, sample_weight=sample_weight) for j, z_j in enumerate(logits, start=1) if j != k
            ]
            values[f"peer{k}_kd_loss"] = ops.cast(sum(mimicry), "float32") / float(len(mimicry))
        return values, self.kd_weight * sum(values.values())

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "kd_weight": self.kd_weight}
