"""Faults for the reliability tests: a disk that fills up mid-write."""

import contextlib
import resource


@contextlib.contextmanager
def disk_full(limit_bytes=256):
    """Within the block, writing a file beyond `limit_bytes` fails with
    OSError (EFBIG) after the bytes before it were written, as on a full
    disk. (RLIMIT_FSIZE; CPython ignores the SIGXFSZ that comes with it.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def leftovers(folder):
    """Temporary files of interrupted writes in `folder`."""
    return sorted(path.name for path in folder.iterdir() if ".partial" in path.name)
