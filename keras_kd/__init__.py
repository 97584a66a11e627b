"""keras_kd: knowledge distillation for Keras."""

from keras_kd import losses
