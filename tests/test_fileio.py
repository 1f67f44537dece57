"""Shared file helpers: atomic writes never leave a half-written target; hashes of bytes."""
import hashlib

import numpy as np
import pytest

from recbole_sada.fileio import atomic_path, atomic_write_text, file_sha256


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old\n")
    assert target.read_text() == "old\n"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"  # untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]  # no temporary left
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"


def test_atomic_path_suffix_for_writers_that_append_one(tmp_path):
    target = tmp_path / "pool.npy"
    with atomic_path(target, suffix=".npy") as tmp:
        np.save(tmp, np.arange(3))
    assert np.array_equal(np.load(target), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["pool.npy"]


def test_file_sha256(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc" * 1000)
    assert file_sha256(p) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert file_sha256(tmp_path / "missing", missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing")
