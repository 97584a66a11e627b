"""Float64 NumPy helpers for the feature-map loss references (written
independently of keras_kd's own pooling code)."""

import numpy as np


def adaptive_avg_pool(x, height, width):
    """PyTorch's adaptive_avg_pool2d on a channels-last (B, H, W, C) array:
    output cell (i, j) averages rows [floor(i*H/h), ceil((i+1)*H/h)) and
    likewise for columns."""
    x = np.asarray(x, dtype="float64")
    in_h, in_w = x.shape[1:3]
    out = np.empty((x.shape[0], height, width, x.shape[3]))
    for i in range(height):
        h0, h1 = int(np.floor(i * in_h / height)), int(np.ceil((i + 1) * in_h / height))
        for j in range(width):
            w0, w1 = int(np.floor(j * in_w / width)), int(np.ceil((j + 1) * in_w / width))
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def pool_larger(a, b):
    """Pool the larger (by area) of two channels-last maps to the other's size."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if a.shape[1] * a.shape[2] > b.shape[1] * b.shape[2]:
        return adaptive_avg_pool(a, *b.shape[1:3]), b
    if a.shape[1] * a.shape[2] < b.shape[1] * b.shape[2]:
        return a, adaptive_avg_pool(b, *a.shape[1:3])
    return a, b


def to_nchw(x):
    """Channels-last to PyTorch's (B, C, H, W), as the references expect."""
    return np.transpose(np.asarray(x, "float64"), (0, 3, 1, 2))
