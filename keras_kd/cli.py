"""The `keras-kd` command (also `python -m keras_kd`).

keras-kd distill                      # the complete job on digits, in runs/<name>/
keras-kd distill --dataset mnist --data-dir ../shared/data --method kd+fitnet
keras-kd distill --config run.yaml    # the same settings from a file
keras-kd evaluate runs/x/student.keras --dataset digits
keras-kd export runs/x/student.keras --quantize int8 --dataset digits
keras-kd methods

`distill` and `evaluate` run on every Keras backend (`KERAS_BACKEND=jax` or
`torch`); TFLite export (`export`, the `distill` export stage, `--quantize`)
needs TensorFlow, and says so in one line elsewhere.

The console stays readable: each subcommand imports only what it needs
(`--help` and `methods` import neither Keras nor TensorFlow), TensorFlow's
C++ logs are silenced unless `--verbose`, and `distill` shows one progress
line per training stage (`keras_kd.progress`).
"""

import argparse
import logging
import os
import sys
import time
import zipfile


def _distill_parser(subparsers):
    parser = subparsers.add_parser(
        "distill",
        help="train (or load) a teacher, a scratch and a distilled student; export and report",
        description="Run a complete distillation job and write a run folder (report.json, report.md, "
        "student.keras, student.tflite, plots). Options override --config; unset ones take the "
        "dataset's defaults.",
    )
    parser.add_argument("--config", help="YAML or JSON file with the same settings (e.g. a run's config.yaml)")
    parser.add_argument("--dataset", help="digits | mnist | fashion_mnist | cifar10 | cifar100 | any tfds name")
    parser.add_argument("--data-dir", help="folder with <dataset>.npz (or $KERAS_KD_DATA_DIR)")
    parser.add_argument("--teacher", help="a .keras file or a zoo model name (keras-kd models)")
    parser.add_argument("--student", help="a zoo model name")
    parser.add_argument(
        "--assistant",
        help="teacher assistant(s) between teacher and student (TAKD): zoo names or .keras files, largest first, "
        "joined by ','; each is distilled from the model before it with the same method and epochs",
    )
    parser.add_argument("--method", help="a method (keras-kd methods) or several joined by '+', e.g. kd+at")
    parser.add_argument("--epochs", type=int, help="epochs of each student")
    parser.add_argument("--teacher-epochs", type=int, help="epochs of the teacher (default: --epochs)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, help="Adam's initial rate (cosine decay)")
    parser.add_argument("--temperature", type=float, help="softmax temperature of the methods that have one")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None, help="random shifts/flips")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--limit", type=int, help="use only the first N examples of each split")
    parser.add_argument(
        "--quantize", choices=["none", "float16", "dynamic", "int8"], help="of student.tflite (TensorFlow backend)"
    )
    parser.add_argument("--output", help="run folder (default runs/<dataset>-<method>-<time>)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="reuse an existing run folder")
    parser.add_argument(
        "--verbose",
        type=int,
        nargs="?",
        const=1,
        choices=[0, 1, 2],
        help="without it: one progress line per training stage. --verbose (or 1): Keras' own progress bars "
        "and TensorFlow's logs; 2: Keras' line per epoch and TensorFlow's logs; 0: the stage lines only",
    )
    parser.set_defaults(handler=_distill)


def _data_options(parser, required=True):
    parser.add_argument("--dataset", required=required, help="the dataset to evaluate on (see distill --dataset)")
    parser.add_argument("--data-dir", help="folder with <dataset>.npz (or $KERAS_KD_DATA_DIR)")
    parser.add_argument("--limit", type=int, help="use only the first N examples of each split")
    parser.add_argument("--batch-size", type=int, default=256)
    _verbose_flag(parser)


def _verbose_flag(parser):
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's logs (C++ and converter)")


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-kd", description="Knowledge distillation for Keras.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _distill_parser(subparsers)

    evaluate = subparsers.add_parser("evaluate", help="test accuracy of a .keras or .tflite model")
    evaluate.add_argument("model", help="a .keras or .tflite file")
    _data_options(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    export = subparsers.add_parser("export", help="convert a .keras model to TFLite")
    export.add_argument("model", help="a .keras file")
    export.add_argument("--quantize", choices=["none", "float16", "dynamic", "int8"], default="none")
    export.add_argument("--output", help="the .tflite file (default: beside the model)")
    _data_options(export, required=False)
    export.set_defaults(handler=_export)

    methods = subparsers.add_parser(
        "methods", help="list every method and training scheme with its paper, default constants and schedule"
    )
    methods.set_defaults(handler=_methods)

    models = subparsers.add_parser("models", help="list the reference models")
    models.set_defaults(handler=_models)
    return parser


def _distill(args):
    from keras_kd.job import DistillConfig, run

    settings = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "handler", "config") and value is not None
    }
    config = DistillConfig.from_file(args.config, **settings) if args.config else DistillConfig(**settings)
    run(config)
    return 0


def _load_model(path):
    from keras_kd import job

    return job.load_model(path, "model")


def _data(args):
    from keras_kd import datasets

    return datasets.load(args.dataset, batch_size=args.batch_size, data_dir=args.data_dir, limit=args.limit)


def _evaluate(args):
    import numpy as np

    from keras_kd import export

    data = _data(args)
    x, y = data.numpy("test")
    start = time.time()
    if args.model.endswith(".tflite"):
        scale = export.read_input_scale(args.model)
        if scale is not None:  # the file takes raw pixels (the job's student.tflite) and scales them itself
            x = x / np.float32(scale)
        # Checks the file's input shape and classes against the data's, as below for a .keras model.
        accuracy = export.evaluate_tflite(args.model, (x, y), batch_size=args.batch_size, num_classes=data.num_classes)
    else:
        model = _load_model(args.model)
        if (
            tuple(model.inputs[0].shape[1:]) != tuple(data.input_shape)
            or model.outputs[0].shape[-1] != data.num_classes
        ):
            raise ValueError(
                f"Model {args.model!r} maps {tuple(model.inputs[0].shape[1:])} to {model.outputs[0].shape[-1]} "
                f"classes; dataset {data.name!r} has inputs {tuple(data.input_shape)} and {data.num_classes} classes."
            )
        predictions = model.predict(x, batch_size=args.batch_size, verbose=0)
        accuracy = float(np.mean(np.argmax(predictions, -1) == y))
    print(f"{args.model}: test accuracy {accuracy:.4f} on {len(y)} {data.name} examples ({time.time() - start:.1f}s)")
    return 0


def _export(args):
    from keras_kd import backend, export

    backend.require_tensorflow("keras-kd export (TFLite conversion)")  # before loading or reading data
    model = _load_model(args.model)
    representative = None
    if args.quantize == "int8":
        if not args.dataset:
            raise ValueError("--quantize int8 calibrates on training inputs: give --dataset (and --data-dir).")
        # The images to_tflite calibrates on (its num_calibration_samples), not the whole split.
        representative = _data(args).numpy("train", count=200)[0]
    suffix = "" if args.quantize == "none" else f"_{args.quantize}"
    output = args.output or os.path.splitext(args.model)[0] + f"{suffix}.tflite"
    path = export.to_tflite(model, output, quantize=args.quantize, representative_data=representative)
    print(f"Wrote {path} ({os.path.getsize(path):,} bytes, quantize={args.quantize})")
    if args.dataset:
        data = _data(args)
        accuracy = export.evaluate_tflite(path, data.numpy("test"), num_classes=data.num_classes)
        print(f"TFLite test accuracy {accuracy:.4f}")
    return 0


def _methods(args):
    # The stored copy of the recipes' descriptions: reading `keras_kd.recipes` imports Keras.
    from keras_kd import catalog

    for name, info in catalog.METHODS.items():
        print(f"{name:<10} {info['loss']}: {info['paper']}")
        constants = ", ".join(f"{k}={v}" for k, v in info["constants"].items())
        print(
            f"{'':<10} weight {info['weight']}, supervised weight {info['student_loss_weight']}"
            f"{', ' + constants if constants else ''}; features: {info['features']}"
        )
        combined = (info["combined_weight"], info["combined_student_loss_weight"])
        if combined != (info["weight"], info["student_loss_weight"]):
            print(
                f"{'':<10} combined with other methods (e.g. kd+at): weight {combined[0]}, "
                f"supervised weight {combined[1]}"
            )
        print(f"{'':<10} schedule: {info['schedule']}")
    print("\ntraining schemes (keras_kd.recipes.scheme(name, ...)):")
    for name, info in catalog.SCHEMES.items():
        print(f"{name:<17} {info['build']}: {info['paper']}")
        constants = ", ".join(f"{k}={v}" for k, v in info["constants"].items())
        print(f"{'':<17} trains {info['trains']}; {constants}")
    return 0


def _models(args):
    from keras_kd import models

    for name in models.names():
        print(f"{name:<16} {models.describe(name)}")
    return 0


def main(argv=None):
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    # Before anything imports TensorFlow (the handlers import what they need).
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices from predicting with several models
    verbose = getattr(args, "verbose", None)
    loud = verbose is True or verbose in (1, 2)  # a bool from evaluate/export, a level from distill
    native = None
    if not loud and args.command != "methods":
        _quiet_tensorflow()
        if argv is None:  # the process's own command line: this process's stderr is ours to redirect
            native = _NativeStderr()
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("keras-kd: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_user_error(error):
            raise  # a bug: keep the traceback
        print(f"keras-kd {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    finally:
        if native is not None:
            native.restore()


def _quiet_tensorflow():
    """TensorFlow's C++ logging off (TF_CPP_MIN_LOG_LEVEL=3, read when TensorFlow
    loads; a value the user set is kept) and absl's Python logging (the TFLite
    converter's) at errors only."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import logging as absl_logging  # absl-py: a TensorFlow dependency, light on its own

    absl_logging.set_verbosity(absl_logging.ERROR)


class _NativeStderr:
    """Sends what native code writes to file descriptor 2 to /dev/null, while
    Python's `sys.stderr` (warnings, tracebacks, this command's errors) keeps
    writing where stderr went.

    TensorFlow 2.19+ logs through absl before it reads TF_CPP_MIN_LOG_LEVEL
    ("All log messages before absl::InitializeLog() ...", oneDNN, "Could not
    find cuda drivers"), and TFLite's interpreter announces its XNNPACK
    delegate from C++: no setting silences these. A crash inside native code
    then ends without its message: rerun with `--verbose`.
    """

    def __init__(self):
        sys.stderr.flush()
        self._stderr = sys.stderr
        self._saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        sys.stderr = open(  # a duplicate of the original stderr, line-buffered like it
            os.dup(self._saved), "w", buffering=1, encoding=self._stderr.encoding, errors="backslashreplace"
        )

    def restore(self):
        sys.stderr.flush()  # left open: a logging handler made meanwhile may still write to it
        os.dup2(self._saved, 2)
        os.close(self._saved)
        sys.stderr = self._stderr


def _is_user_error(error):
    """True for what bad input, data or surroundings cause (one line, exit 2):
    invalid values and files, missing or corrupt data, an unwritable or busy
    output, a loss that became non-finite, a feature the Keras backend lacks.
    Anything else (TypeError, AttributeError, a RuntimeError from deep
    inside, ...) is a bug and keeps its traceback."""
    import yaml

    from keras_kd.backend import TensorFlowRequiredError
    from keras_kd.datasets import DataUnavailableError
    from keras_kd.extras import MissingExtraError

    return isinstance(
        error,
        (
            ValueError,
            OSError,
            zipfile.BadZipFile,
            yaml.YAMLError,
            FloatingPointError,
            DataUnavailableError,
            MissingExtraError,  # one line naming the extra to install
            TensorFlowRequiredError,  # one sentence naming the feature
        ),
    )

if __name__ == "__main__":
    sys.exit(main())
