"""Reading a model's features: the outputs of named layers, taken from the
same forward pass as the model's own output, on every Keras backend."""

import keras
from keras import ops

OUTPUT = "__output__"  # feature key of a model's own output


class FeatureExtractor:
    """Calls a model once and returns {feature key: tensor}.

    Kept outside Keras' attribute tracking on purpose: it shares its layers
    with the teacher or student, which the Distiller already tracks.
    """

    def __init__(self, model, keys, role):
        self.model = model
        self.role = role
        self.keys = tuple(keys)
        layer_names = [key for key in self.keys if key != OUTPUT]
        if not layer_names:
            self.graph = None
            return
        if not getattr(model, "inputs", None):
            raise ValueError(
                f"The {role} '{model.name}' is not a functional or Sequential "
                f"model with known inputs, so the outputs of its layers "
                f"{layer_names} cannot be read in the same forward pass. Build "
                "it with keras.Input, or distill its outputs only."
            )
        available = [layer.name for layer in model.layers]
        outputs = {}
        for key in self.keys:
            if key == OUTPUT:
                outputs[key] = model_output(model)
            elif key not in available:
                raise ValueError(
                    f"The {role} '{model.name}' has no layer named '{key}'. "
                    f"Available layers: {available}"
                )
            else:
                outputs[key] = model.get_layer(key).output
        self.graph = keras.Model(model.inputs, outputs, name=f"{model.name}_features")

    def with_keys(self, keys):
        """An extractor of the same model that also reads `keys`."""
        return FeatureExtractor(self.model, sorted({*self.keys, *keys}), self.role)

    @property
    def shapes(self):
        """{key: static shape}; None for the output of a subclassed model."""
        if self.graph is None:
            return {OUTPUT: static_output_shape(self.model)}
        return {key: tuple(tensor.shape) for key, tensor in self.graph.output.items()}

    def __call__(self, x, training):
        if self.graph is None:
            return {OUTPUT: self.model(self.select_inputs(x), training=training)}
        return self.graph(self.select_inputs(x), training=training)

    def select_inputs(self, x):
        """From a dict batch, the model's own inputs by name: a teacher may
        read privileged features that the student never sees."""
        if not isinstance(x, dict) or not getattr(self.model, "inputs", None):
            return x
        names = [tensor.name for tensor in self.model.inputs]
        missing = [name for name in names if name not in x]
        if missing:
            raise ValueError(
                f"The {self.role} '{self.model.name}' takes inputs {names}, but the batch holds {sorted(x)} "
                f"(missing {missing})."
            )
        selected = [x[name] for name in names]
        return selected[0] if len(selected) == 1 else selected


def model_output(model):
    outputs = model.outputs
    return outputs[0] if len(outputs) == 1 else outputs


def static_output_shape(model):
    if getattr(model, "outputs", None):
        output = model_output(model)
        return tuple(output.shape) if not isinstance(output, list) else None
    return None


def feature_keys(layer):
    """The feature keys a term's `teacher_layer`/`student_layer` reads."""
    if layer is None:
        return (OUTPUT,)
    return layer if isinstance(layer, tuple) else (layer,)


def gather(features, layer):
    """The feature(s) a term compares, from {key: tensor}."""
    if isinstance(layer, tuple):
        return tuple(features[key] for key in layer)
    return features[OUTPUT if layer is None else layer]


def ensemble_logits(logits, weights, temperature=1.0):
    """Logits whose softmax at `temperature` is the weighted average of the
    teachers' softened outputs: `T * log(sum_i w_i softmax(z_i / T))`
    (Hinton et al. 2015 average the soft targets of an ensemble)."""
    temperature = ops.cast(temperature, "float32")
    log_probabilities = ops.stack(
        [ops.log_softmax(ops.cast(z, "float32") / temperature, axis=-1) for z in logits], axis=0
    )
    log_weights = ops.reshape(
        ops.log(ops.convert_to_tensor(weights, "float32")), [-1] + [1] * (len(log_probabilities.shape) - 1)
    )
    return temperature * ops.logsumexp(log_probabilities + log_weights, axis=0)
