"""On-disk cache for text embeddings and chat answers.

One SQLite file holds two tables: ``vectors`` (float32 embeddings) and
``answers`` (chat completions). Rows are keyed by ``(backend, model, digest)``
where ``digest`` is the SHA-256 of the text or prompt together with every
parameter that changes the result. SQLite's file locking, write-ahead logging
and a generous busy timeout make the file safe to share between processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import SemanticError

CACHE_FILENAME = "semantic_cache.sqlite3"

# Stay well below SQLite's limit on host parameters per statement.
_LOOKUP_CHUNK = 500

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS vectors (
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        digest TEXT NOT NULL,
        dim INTEGER NOT NULL,
        vec BLOB NOT NULL,
        PRIMARY KEY (backend, model, digest)
    )""",
    """CREATE TABLE IF NOT EXISTS answers (
        backend TEXT NOT NULL,
        model TEXT NOT NULL,
        digest TEXT NOT NULL,
        answer TEXT NOT NULL,
        PRIMARY KEY (backend, model, digest)
    )""",
)


def content_digest(payload: Any, params: Mapping[str, Any] | None = None) -> str:
    """Return the SHA-256 hex digest of a text/prompt plus its parameters.

    ``payload`` and ``params`` must be JSON serialisable; keys are sorted so
    that the digest does not depend on dict order.
    """
    blob = json.dumps(
        {"payload": payload, "params": dict(params or {})},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    """Lookup counters of one :class:`SemanticCache` instance."""

    hits: int = 0
    misses: int = 0


class SemanticCache:
    """SQLite-backed store of embeddings and chat answers.

    Args:
        cache_dir: folder of the cache file (created on first use).

    The connection is opened lazily and reopened after a fork, so one instance
    may be created before worker processes start.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)
        self.path = self.cache_dir / CACHE_FILENAME
        self.stats = CacheStats()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    def _connection(self) -> sqlite3.Connection:
        """Open (or reopen after a fork) the database and create the tables."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False)
            self._configure(conn)
        except (OSError, sqlite3.Error) as exc:
            raise SemanticError(
                f"cannot open the semantic cache {self.path}: {exc}; "
                "set cache_dir (or env RECBOLE_SADA_CACHE) to a writable folder"
            ) from exc
        self._conn, self._pid = conn, os.getpid()
        return conn

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        """Enable write-ahead logging where the filesystem allows it; create tables."""
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # e.g. network filesystems: the default rollback journal still works
        conn.execute("PRAGMA synchronous=NORMAL")
        with conn:
            for statement in _SCHEMA:
                conn.execute(statement)

    def close(self) -> None:
        """Close the connection (it is reopened on the next access)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn, self._pid = None, None

    def __enter__(self) -> "SemanticCache":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _count(self, found: int, asked: int) -> None:
        self.stats.hits += found
        self.stats.misses += asked - found

    # ---------------------------------------------------------------- vectors
    def get_vectors(self, backend: str, model: str, digests: Iterable[str]) -> dict[str, np.ndarray]:
        """Return ``{digest: float32 vector}`` for the digests present in the cache."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            conn = self._connection()
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                chunk = wanted[start:start + _LOOKUP_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT digest, dim, vec FROM vectors "
                    f"WHERE backend=? AND model=? AND digest IN ({marks})",
                    (backend, model, *chunk),
                ).fetchall()
                for digest, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype="<f4")
                    if vec.size == dim:
                        found[digest] = vec.astype(np.float32)
            self._count(len(found), len(wanted))
        return found

    def put_vectors(self, backend: str, model: str, items: Mapping[str, np.ndarray]) -> None:
        """Store ``{digest: vector}`` as little-endian float32 (one transaction)."""
        rows = []
        for digest, vec in items.items():
            arr = np.ascontiguousarray(np.asarray(vec, dtype="<f4").reshape(-1))
            rows.append((backend, model, digest, int(arr.size), arr.tobytes()))
        if not rows:
            return
        with self._lock:
            conn = self._connection()
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors (backend, model, digest, dim, vec) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )

    # ---------------------------------------------------------------- answers
    def get_answer(self, backend: str, model: str, digest: str) -> str | None:
        """Return the cached answer for ``digest`` or ``None``."""
        with self._lock:
            row = self._connection().execute(
                "SELECT answer FROM answers WHERE backend=? AND model=? AND digest=?",
                (backend, model, digest),
            ).fetchone()
            self._count(int(row is not None), 1)
        return None if row is None else row[0]

    def put_answer(self, backend: str, model: str, digest: str, answer: str) -> None:
        """Store one answer."""
        with self._lock:
            conn = self._connection()
            with conn:
                conn.execute(
                    "INSERT OR REPLACE INTO answers (backend, model, digest, answer) "
                    "VALUES (?, ?, ?, ?)",
                    (backend, model, digest, str(answer)),
                )

    # ------------------------------------------------------------ inspection
    def count(self) -> dict[str, int]:
        """Return the number of stored vectors and answers."""
        with self._lock:
            conn = self._connection()
            n_vec = conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            n_ans = conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return {"vectors": int(n_vec), "answers": int(n_ans)}
