"""Text encoders and chat LLMs behind one config, with an on-disk cache.

Typical use::

    from recbole_sada.semantic import get_encoder, get_chat_llm, parse_choices

    encoder = get_encoder(config)          # a RecBole Config or a plain dict
    vectors = encoder.encode(item_texts)   # (n, d) float32, unit rows
    llm = get_chat_llm(config)
    answer = llm.chat("Pick ...")

:data:`SEMANTIC_DEFAULTS` is the single source of the defaults; a config only
needs the keys it changes. A key set to ``None`` (YAML ``~``) keeps its default.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .api import DEFAULT_BASE_URL, ApiSettings
from .cache import CacheStats, SemanticCache, content_digest
from .encoders import (
    EncoderStats,
    OpenAIEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    packaged_encoder_path,
)
from .errors import SemanticError
from .llm import ChatLLM, ChatStats, OpenAIChatLLM, TransformersChatLLM, packaged_llm_path
from .parse import ParseResult, parse_choices

CACHE_ENV = "RECBOLE_SADA_CACHE"

SEMANTIC_DEFAULTS: dict[str, Any] = {
    # text encoder
    "encoder_backend": "sentence-transformers",  # or "openai"
    "encoder_model": None,  # None: the packaged all-MiniLM-L6-v2 folder (384-d)
    "encoder_batch_size": 128,
    # chat LLM
    "llm_backend": "transformers",  # or "openai"
    "llm_model": None,  # None: the packaged SmolLM2-135M-Instruct GGUF file
    "llm_gguf_file": None,  # GGUF file inside llm_model when that is a folder or hub repo
    "llm_max_new_tokens": 128,
    "llm_temperature": 0.0,  # 0: deterministic greedy decoding
    "llm_seed": 2020,  # sampling seed when llm_temperature > 0
    "llm_batch_size": 8,  # prompts generated together by a local model (greedy decoding only)
    # local models
    "semantic_device": "cpu",  # cpu, cuda, cuda:1, ... or auto
    # OpenAI-compatible HTTP API
    "api_base_url": DEFAULT_BASE_URL,
    "api_key_env": "OPENAI_API_KEY",  # name of the env var holding the key
    "api_timeout": 60.0,  # seconds per request
    "api_max_retries": 5,  # retries on 429, 5xx, timeouts and dropped connections
    "api_backoff": 1.0,  # first retry delay (s), doubled each retry
    "api_backoff_max": 30.0,  # cap of one delay, Retry-After included
    # cache (config value, else env RECBOLE_SADA_CACHE, else this)
    "cache_dir": "saved/sada_cache",
}

ENCODER_BACKENDS = ("sentence-transformers", "openai")
LLM_BACKENDS = ("transformers", "openai")

__all__ = [
    "SEMANTIC_DEFAULTS", "ENCODER_BACKENDS", "LLM_BACKENDS", "CACHE_ENV",
    "resolve_config", "get_cache", "get_encoder", "get_chat_llm",
    "TextEncoder", "SentenceTransformerEncoder", "OpenAIEncoder", "EncoderStats",
    "ChatLLM", "TransformersChatLLM", "OpenAIChatLLM", "ChatStats",
    "SemanticCache", "CacheStats", "content_digest", "ApiSettings",
    "parse_choices", "ParseResult", "SemanticError",
    "packaged_encoder_path", "packaged_llm_path",
]


def _lookup(cfg: Any, key: str) -> Any:
    """Value of ``key`` in a dict or RecBole ``Config`` (``None`` when absent)."""
    try:
        return cfg[key] if key in cfg else None
    except (KeyError, TypeError):
        return None


def resolve_config(cfg: Any = None) -> dict[str, Any]:
    """Merge the semantic keys present in ``cfg`` over :data:`SEMANTIC_DEFAULTS`.

    Only the keys of :data:`SEMANTIC_DEFAULTS` are read; values that are absent
    or ``None`` keep the default. ``cache_dir`` falls back to the environment
    variable ``RECBOLE_SADA_CACHE`` before the default.
    """
    merged = dict(SEMANTIC_DEFAULTS)
    given = {}
    if cfg is not None:
        for key in SEMANTIC_DEFAULTS:
            value = _lookup(cfg, key)
            if value is not None:
                given[key] = value
    if "cache_dir" not in given and os.environ.get(CACHE_ENV):
        given["cache_dir"] = os.environ[CACHE_ENV]
    merged.update(given)
    _validate(merged)
    return merged


def _number(cfg: Mapping[str, Any], key: str, kind: type, minimum: float) -> None:
    """Check that ``cfg[key]`` is a number of ``kind`` at least ``minimum``."""
    value = cfg[key]
    try:
        ok = not isinstance(value, bool) and kind(value) == value and kind(value) >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        noun = "an integer" if kind is int else "a number"
        raise SemanticError(f"config key {key} must be {noun} >= {minimum:g}, got {value!r}")
    cfg[key] = kind(value)  # type: ignore[index]


def _validate(cfg: dict[str, Any]) -> None:
    """Type/range checks with one-line errors naming the key."""
    _number(cfg, "encoder_batch_size", int, 1)
    _number(cfg, "llm_max_new_tokens", int, 1)
    _number(cfg, "llm_temperature", float, 0)
    _number(cfg, "llm_seed", int, 0)
    _number(cfg, "llm_batch_size", int, 1)
    _number(cfg, "api_timeout", float, 0.001)
    _number(cfg, "api_max_retries", int, 0)
    _number(cfg, "api_backoff", float, 0)
    _number(cfg, "api_backoff_max", float, 0)
    for key in ("encoder_backend", "llm_backend", "api_base_url", "api_key_env", "cache_dir",
                "semantic_device"):
        if not isinstance(cfg[key], (str, os.PathLike)):
            raise SemanticError(f"config key {key} must be a string, got {cfg[key]!r}")


def _device(cfg: Mapping[str, Any]) -> str:
    """Torch device for local models (``auto``: cuda when available, else cpu)."""
    device = str(cfg["semantic_device"]).strip().lower()
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def get_cache(cfg: Any = None) -> SemanticCache:
    """The on-disk cache in the configured ``cache_dir``."""
    return SemanticCache(resolve_config(cfg)["cache_dir"])


def _check_backend(key: str, value: str, valid: tuple[str, ...]) -> str:
    name = str(value).strip().lower()
    if name not in valid:
        raise SemanticError(
            f"unknown {key} {value!r}; set {key} to one of: {', '.join(valid)}")
    return name


def get_encoder(cfg: Any = None, cache: SemanticCache | None = None) -> TextEncoder:
    """Build the text encoder selected by ``encoder_backend``.

    Args:
        cfg: a RecBole ``Config``, a dict, or ``None`` for all defaults.
        cache: share an existing cache instead of opening ``cache_dir``.
    """
    conf = resolve_config(cfg)
    backend = _check_backend("encoder_backend", conf["encoder_backend"], ENCODER_BACKENDS)
    cache = cache or SemanticCache(conf["cache_dir"])
    if backend == "openai":
        return OpenAIEncoder(conf["encoder_model"], cache, ApiSettings.from_config(conf),
                             batch_size=conf["encoder_batch_size"])
    return SentenceTransformerEncoder(conf["encoder_model"], cache,
                                      batch_size=conf["encoder_batch_size"], device=_device(conf))


def get_chat_llm(cfg: Any = None, cache: SemanticCache | None = None) -> ChatLLM:
    """Build the chat LLM selected by ``llm_backend``.

    Args:
        cfg: a RecBole ``Config``, a dict, or ``None`` for all defaults.
        cache: share an existing cache instead of opening ``cache_dir``.
    """
    conf = resolve_config(cfg)
    backend = _check_backend("llm_backend", conf["llm_backend"], LLM_BACKENDS)
    cache = cache or SemanticCache(conf["cache_dir"])
    generation = {
        "max_new_tokens": conf["llm_max_new_tokens"],
        "temperature": conf["llm_temperature"],
        "seed": conf["llm_seed"],
    }
    if backend == "openai":
        return OpenAIChatLLM(conf["llm_model"], cache, ApiSettings.from_config(conf), **generation)
    return TransformersChatLLM(conf["llm_model"], cache, gguf_file=conf["llm_gguf_file"],
                               device=_device(conf), batch_size=conf["llm_batch_size"], **generation)
