"""File helpers every writer of the plugin shares: content hashes and atomic writes.

Every file the plugin writes that a later run reads (semantic feature files and their sidecars,
LLMSeR ``.aug`` files and stage caches, checkpoints) goes through :func:`atomic_path`: it is
written under a temporary name in the same folder and renamed over the target only when complete,
so an interrupted run never leaves a half-written file where a reader expects a whole one.
"""
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path


def file_sha256(path, missing_ok=False):
    """SHA-256 (hex) of a file's bytes; ``None`` for a missing file when ``missing_ok``."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path`` (when it was
    written), on an exception it is removed and ``path`` is left as it was.

    ``suffix`` ends the temporary name (e.g. ``".npy"``, which ``numpy.save`` would otherwise
    append itself).  The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        if tmp.exists():
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path, text):
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
