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
"""

import argparse
import os
import sys
import time
import traceback
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up chatter off the terminal


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
    parser.add_argument("--verbose", type=int, choices=[0, 1, 2], help="Keras fit verbosity")
    parser.set_defaults(handler=_distill)


def _data_options(parser, required=True):
    parser.add_argument("--dataset", required=required, help="the dataset to evaluate on (see distill --dataset)")
    parser.add_argument("--data-dir", help="folder with <dataset>.npz (or $KERAS_KD_DATA_DIR)")
    parser.add_argument("--limit", type=int, help="use only the first N examples of each split")
    parser.add_argument("--batch-size", type=int, default=256)


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
        representative = _data(args).numpy("train")[0]
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
    from keras_kd import recipes

    for name in recipes.names():
        info = recipes.describe(name)
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
    for name in recipes.scheme_names():
        info = recipes.describe_scheme(name)
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
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices from predicting with several models
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


def _is_user_error(error):
    """True for what bad input, data or surroundings cause (one line, exit 2):
    invalid values and files, missing or corrupt data, an unwritable or busy
    output, a loss that became non-finite, a feature the Keras backend lacks.
    Anything else (TypeError, AttributeError, a RuntimeError from deep
    inside, ...) is a bug and keeps its traceback."""
    import yaml

    from keras_kd import backend
    from keras_kd.datasets import DataUnavailableError

    if isinstance(error, (ValueError, OSError, zipfile.BadZipFile, yaml.YAMLError, FloatingPointError)):
        return True
    if isinstance(error, DataUnavailableError):
        return True
    # `backend.require_tensorflow` raises a plain RuntimeError of one clear sentence.
    frames = traceback.extract_tb(error.__traceback__)
    return type(error) is RuntimeError and bool(frames) and frames[-1].filename == backend.__file__


if __name__ == "__main__":
    sys.exit(main())
