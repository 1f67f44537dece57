"""Minimal client for OpenAI-compatible HTTP APIs (standard library only).

Shared by the embedding and the chat-completion backends: JSON POST with a
bearer key read from an environment variable, a per-request timeout, and
retries with exponential backoff on 429, 5xx, timeouts and dropped
connections.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .errors import SemanticError

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_RETRY_STATUS = {408, 409, 425, 429}


@dataclass
class ApiSettings:
    """Connection settings of an OpenAI-compatible endpoint.

    Attributes:
        base_url: e.g. ``https://api.openai.com/v1`` or ``http://localhost:8000/v1``.
        api_key_env: name of the environment variable holding the key; when the
            variable is unset or empty no ``Authorization`` header is sent (local
            servers often need none).
        timeout: seconds allowed for one request.
        max_retries: retries after the first attempt.
        backoff: first retry delay in seconds, doubled on every retry.
        backoff_max: cap of a single delay, also applied to ``Retry-After``.
    """

    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ApiSettings":
        """Build settings from a merged semantic config dict."""
        return cls(
            base_url=str(cfg.get("api_base_url") or DEFAULT_BASE_URL),
            api_key_env=str(cfg.get("api_key_env") or "OPENAI_API_KEY"),
            timeout=float(cfg["api_timeout"]),
            max_retries=int(cfg["api_max_retries"]),
            backoff=float(cfg["api_backoff"]),
            backoff_max=float(cfg["api_backoff_max"]),
        )

    def url(self, endpoint: str) -> str:
        """Join the base URL and an endpoint such as ``embeddings``."""
        return self.base_url.rstrip("/") + "/" + endpoint.lstrip("/")


class _Retryable(Exception):
    """A failed attempt worth repeating; ``wait`` is a server-requested delay."""

    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


def _retry_after_seconds(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _short_body(raw: bytes, limit: int = 200) -> str:
    """First characters of a response body, on one line."""
    text = raw.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _headers(settings: ApiSettings) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get(settings.api_key_env, "").strip()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _attempt(url: str, body: bytes, settings: ApiSettings) -> bytes:
    """Send one request; return the body or raise ``_Retryable``/``SemanticError``."""
    request = urllib.request.Request(url, data=body, headers=_headers(settings), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        detail = _short_body(err.read() or b"")
        status = err.code
        if status in (401, 403):
            raise SemanticError(
                f"POST {url} was refused with HTTP {status} ({detail}); put a valid API key in "
                f"the environment variable {settings.api_key_env} (config key api_key_env names it)"
            ) from None
        if status in _RETRY_STATUS or status >= 500:
            wait = _retry_after_seconds(err.headers.get("Retry-After") if err.headers else None)
            raise _Retryable(f"HTTP {status} ({detail})", wait) from None
        raise SemanticError(
            f"POST {url} failed with HTTP {status} ({detail}); check api_base_url and the "
            "model name (encoder_model / llm_model)"
        ) from None
    except (TimeoutError, socket.timeout):
        raise _Retryable(f"no answer within api_timeout={settings.timeout:g} s") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            raise _Retryable(f"no answer within api_timeout={settings.timeout:g} s") from None
        raise _Retryable(f"connection failed ({err.reason})") from None
    except (ConnectionError, http.client.HTTPException) as err:
        raise _Retryable(f"connection failed ({type(err).__name__}: {err})") from None


def post_json(
    endpoint: str,
    payload: Mapping[str, Any],
    settings: ApiSettings,
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """POST ``payload`` as JSON to ``{base_url}/{endpoint}`` and return the decoded object.

    Raises:
        SemanticError: on an authentication failure, a non-retryable HTTP status,
            retries exhausted, or a body that is not a JSON object.
    """
    url = settings.url(endpoint)
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    attempts = max(0, int(settings.max_retries)) + 1
    last = ""
    for attempt in range(attempts):
        try:
            raw = _attempt(url, body, settings)
        except _Retryable as exc:
            last = exc.reason
            if attempt + 1 < attempts:
                sleep(_delay(attempt, exc.wait, settings))
            continue
        return _decode(raw, url)
    raise SemanticError(
        f"POST {url} failed after {attempts} attempt(s): {last}; check that the server at "
        "api_base_url is up, or raise api_timeout / api_max_retries"
    )


def _delay(attempt: int, requested: float | None, settings: ApiSettings) -> float:
    """Seconds to wait before the next attempt (server hint or exponential backoff)."""
    delay = requested if requested is not None else settings.backoff * (2 ** attempt)
    return max(0.0, min(delay, settings.backoff_max))


def _decode(raw: bytes, url: str) -> dict:
    """Decode a JSON object response or raise a one-line ``SemanticError``."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SemanticError(
            f"POST {url} returned a body that is not JSON ({_short_body(raw, 80)!r}); "
            "check that api_base_url points at an OpenAI-compatible API (usually ending in /v1)"
        ) from None
    if not isinstance(data, dict):
        raise SemanticError(
            f"POST {url} returned JSON that is not an object; check that api_base_url points "
            "at an OpenAI-compatible API"
        )
    return data
