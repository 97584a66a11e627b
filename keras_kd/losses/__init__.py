"""Distillation losses: one `keras.losses.Loss` per method, one file each."""

from keras_kd.losses.base import DistillationLoss
from keras_kd.losses.kd import KDLoss
