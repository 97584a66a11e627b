"""`PrimaryOutput`: for models whose `call` returns every output of one
forward pass (the Distiller's features, every peer's logits, every exit)
while `predict` and Keras' output spec see only the primary one."""

import contextlib


class PrimaryOutput:
    """Mixin for a `keras.Model` whose `call` returns every output of one
    forward pass (what its `compute_loss` reads), while `predict`,
    `predict_on_batch` and the output spec Keras builds the compiled loss and
    metrics on see only its primary output: inside `_primary_output()`,
    `call` returns that output alone (`_outputs_only` is True)."""

    _outputs_only = False

    @contextlib.contextmanager
    def _primary_output(self):
        previous, self._outputs_only = self._outputs_only, True
        try:
            yield
        finally:
            self._outputs_only = previous

    def predict(self, *args, **kwargs):
        with self._primary_output():
            return super().predict(*args, **kwargs)

    def predict_on_batch(self, *args, **kwargs):
        with self._primary_output():
            return super().predict_on_batch(*args, **kwargs)

    def _symbolic_build(self, *args, **kwargs):
        # Keras builds the compiled loss and metrics on the output spec of
        # `call`: they compare the labels with the primary output.
        with self._primary_output():
            return super()._symbolic_build(*args, **kwargs)
