"""Files written whole or not at all.

Every file keras_kd writes (`.tflite`, `.keras`, `report.json`, `report.md`,
`config.yaml`, plots) goes to a hidden temporary file in the destination's
folder, is flushed to disk, and only then renamed over the destination with
`os.replace`, which is atomic on POSIX and Windows within one file system.
A full disk, an error or a Ctrl-C in the middle of a write therefore leaves
the previous file (or no file) in place, never a truncated one, and the
temporary file is removed.

    with keras_kd.files.atomic_path("student.keras") as temporary:
        student.save(temporary)          # any writer that takes a path
    keras_kd.files.write_text("report.json", text)
"""

import contextlib
import os
import secrets
from pathlib import Path

PARTIAL = ".partial"  # in the names of temporary files; one left behind marks a write that was killed


def _fsync(path):
    """Flushes the file at `path` to disk, so the rename never exposes
    an empty file after a power loss."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _temporary_name(path):
    """A hidden, unique name beside `path` with the same suffix."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same folder, same suffix, so
    writers that read the extension, such as Keras or Matplotlib, still
    work); when the block ends without error it replaces `path`. On any
    error, KeyboardInterrupt included, the temporary file is deleted and
    `path` is left as it was. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    try:
        yield temporary
        if not temporary.is_file():
            raise FileNotFoundError(f"Nothing was written to {str(temporary)!r} for {str(path)!r}.")
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def write_bytes(path, data):
    """Writes `data` to `path` atomically; returns `path` as a string."""
    with atomic_path(path) as temporary, open(temporary, "xb") as handle:
        handle.write(data)
    return str(path)


def write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically; returns `path` as a string."""
    return write_bytes(path, text.encode(encoding))


def create_text(path, text, encoding="utf-8"):
    """Creates `path` holding `text`, whole, only if it does not exist yet:
    of several processes creating the same path at once exactly one
    succeeds; the others get a FileExistsError. (The complete temporary
    file is hard-linked to `path`, which fails when `path` exists.)"""
    path = Path(path)
    temporary = _temporary_name(path)
    try:
        with open(temporary, "xb") as handle:
            handle.write(text.encode(encoding))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # FileExistsError when `path` exists
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: exclusive creation, then the text
            with open(path, "x", encoding=encoding) as handle:
                handle.write(text)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    return str(path)


def save_model(model, path):
    """`model.save(path)` (a `.keras` file), atomically; returns `path` as a string."""
    with atomic_path(path) as temporary:
        model.save(temporary)
    return str(path)
