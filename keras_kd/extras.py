"""Optional dependencies, installed with the extras of `pyproject.toml`.

The core install distills, saves and exports to TFLite. Two features need
more and say which extra brings it:

    pip install "keras-kd[datasets]"       # tensorflow-datasets: datasets.load("cifar100"), ...
    pip install "keras-kd[optimization]"   # tf-keras + tensorflow-model-optimization: QAT, pruning, keras_kd.legacy
"""

import importlib

# module -> (distribution on the package index, extra that installs it)
OPTIONAL = {
    "tensorflow_datasets": ("tensorflow-datasets", "datasets"),
    "tf_keras": ("tf-keras", "optimization"),
    "tensorflow_model_optimization": ("tensorflow-model-optimization", "optimization"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def require(module, feature):
    """Import `module` (a key of `OPTIONAL`) or raise `MissingExtraError`
    saying which extra `feature` needs."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:  # the module is there but one of its own imports is missing
            raise
        distribution, extra = OPTIONAL[module]
        raise MissingExtraError(
            f"{feature} needs {distribution}, which is not installed. "
            f'Install it with: pip install "keras-kd[{extra}]"',
            name=module,
        ) from None
