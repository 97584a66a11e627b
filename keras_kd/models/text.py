"""BiLSTM text student of Tang et al., "Distilling Task-Specific Knowledge
from BERT into Simple Neural Networks" (2019): BERT distilled into a
single-layer BiLSTM over word embeddings, with a ReLU layer and a linear
classifier on its final hidden states.

Architecture: integer token ids of shape `(seq_len,)`, 0 = padding ->
`Embedding(vocab_size, embedding_dim, mask_zero=True)` (`token_embedding`)
-> `Bidirectional(LSTM(units))` (`stage1`; the last forward and backward
states concatenated, `2 * units` values) -> `Dense(hidden, relu)`
(`embedding`) -> `Dense` logits (`logits`).

Sizes: the paper uses 300-d word2vec vectors and a single BiLSTM layer with
a ReLU hidden layer. The defaults here (300 units per direction, 400 ReLU
units, a 30,000-token vocabulary) follow that description but were chosen
without the paper's table of hyperparameters at hand; reimplementations for
SST-2 commonly use 150 units and a 200-unit ReLU layer. Pass the sizes you
need. No pretrained vectors are loaded.

Parameters: `V * E` (embedding) `+ 2 * 4 * (u * (E + u) + u)` (BiLSTM;
Keras keeps one bias per gate where PyTorch keeps two) `+ (2u * h + h)`
`+ (h * C + C)`.
"""

import keras
from keras import layers


def bilstm(input_shape, num_classes, vocab_size=30000, embedding_dim=300, units=300, hidden=400, name="bilstm"):
    """A single-layer BiLSTM sentence classifier.

    Args:
        input_shape: `(seq_len,)`, token ids (0 is padding and masked).
        num_classes: number of logits.
        vocab_size: number of token ids, padding included.
        embedding_dim: size of the word vectors.
        units: LSTM units per direction.
        hidden: units of the ReLU layer.
        name: model name.
    """
    inputs = keras.Input(input_shape, dtype="int32", name="tokens")
    x = layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="token_embedding")(inputs)
    x = layers.Bidirectional(layers.LSTM(units), name="stage1")(x)
    x = layers.Dense(hidden, activation="relu", name="embedding")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
