"""Tests of the semantic backends: cache, encoders, chat LLMs, answer parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from recbole_sada.semantic import (
    SEMANTIC_DEFAULTS,
    SemanticCache,
    SemanticError,
    content_digest,
    get_chat_llm,
    get_encoder,
    parse_choices,
    resolve_config,
)

EMBED_DIM = 8


# --------------------------------------------------------------------- server
class FakeApi:
    """State of the local OpenAI-compatible server: a script of canned replies."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: list[dict] = []
        self.lock = threading.Lock()

    def next_action(self) -> dict | None:
        with self.lock:
            return self.script.pop(0) if self.script else None

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"].endswith(path))


def _fake_vector(text: str) -> list[float]:
    """Deterministic pseudo embedding of a text."""
    rng = np.random.default_rng(int(content_digest(text)[:8], 16))
    return rng.normal(size=EMBED_DIM).tolist()


def _make_handler(api: FakeApi):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict | None = None):
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def do_POST(self):
            length = int(self.headers.get("Content-Length", 0))
            payload = json.loads(self.rfile.read(length) or b"{}")
            with api.lock:
                api.requests.append({"path": self.path, "json": payload,
                                     "auth": self.headers.get("Authorization")})
            action = api.next_action()
            if action is not None:
                time.sleep(action.get("sleep", 0))
                if "status" in action:
                    return self._send(action["status"], action.get("body", b"{}"),
                                      action.get("headers"))
            if self.path.endswith("/embeddings"):
                data = [{"object": "embedding", "index": i, "embedding": _fake_vector(t)}
                        for i, t in enumerate(payload["input"])]
                data.reverse()  # clients must order by index
                body = {"object": "list", "data": data, "model": payload["model"]}
            elif self.path.endswith("/chat/completions"):
                last = payload["messages"][-1]["content"]
                body = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                             "content": f"echo: {last}"}}]}
            else:
                return self._send(404, b'{"error": "not found"}')
            return self._send(200, json.dumps(body).encode())

    return Handler


@pytest.fixture
def fake_api(monkeypatch):
    """An OpenAI-compatible server on a free port of 127.0.0.1, run in a thread."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(api))
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def api_cfg(fake_api, tmp_path, monkeypatch):
    """Config for the OpenAI backends against the fake server, with tiny backoff."""
    monkeypatch.setenv("SADA_TEST_KEY", "sk-test")
    return {
        "encoder_backend": "openai",
        "encoder_model": "fake-embed",
        "encoder_batch_size": 3,
        "llm_backend": "openai",
        "llm_model": "fake-chat",
        "api_base_url": fake_api.base_url,
        "api_key_env": "SADA_TEST_KEY",
        "api_timeout": 2.0,
        "api_max_retries": 2,
        "api_backoff": 0.01,
        "api_backoff_max": 0.05,
        "cache_dir": str(tmp_path / "cache"),
    }


# ---------------------------------------------------------------------- config
class _RecBoleLikeConfig:
    """Mimics RecBole's Config: ``in`` and ``[]`` only, ``None`` for absent keys."""

    def __init__(self, values):
        self._values = values

    def __contains__(self, key):
        return key in self._values

    def __getitem__(self, key):
        return self._values.get(key)


def test_resolve_config_defaults_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("RECBOLE_SADA_CACHE", raising=False)
    conf = resolve_config(None)
    assert conf == {**SEMANTIC_DEFAULTS, "llm_temperature": 0.0}
    assert conf["cache_dir"] == "saved/sada_cache"
    monkeypatch.setenv("RECBOLE_SADA_CACHE", str(tmp_path / "env"))
    assert resolve_config({})["cache_dir"] == str(tmp_path / "env")
    conf = resolve_config(_RecBoleLikeConfig({"encoder_batch_size": 7, "llm_model": None,
                                               "cache_dir": "explicit", "other": 1}))
    assert conf["encoder_batch_size"] == 7 and conf["llm_model"] is None
    assert conf["cache_dir"] == "explicit" and "other" not in conf


def test_invalid_values_name_the_key():
    with pytest.raises(SemanticError, match="encoder_batch_size"):
        resolve_config({"encoder_batch_size": 0})
    with pytest.raises(SemanticError, match="api_timeout"):
        resolve_config({"api_timeout": "soon"})


def test_unknown_backend_names_key_and_values(tmp_path):
    with pytest.raises(SemanticError) as err:
        get_encoder({"encoder_backend": "word2vec", "cache_dir": str(tmp_path)})
    assert "encoder_backend" in str(err.value) and "sentence-transformers" in str(err.value)
    with pytest.raises(SemanticError) as err:
        get_chat_llm({"llm_backend": "llamacpp", "cache_dir": str(tmp_path)})
    message = str(err.value)
    assert "llm_backend" in message and "transformers" in message and "openai" in message
    assert "\n" not in message


def test_openai_backends_need_a_model_name(tmp_path):
    with pytest.raises(SemanticError, match="encoder_model"):
        get_encoder({"encoder_backend": "openai", "cache_dir": str(tmp_path)})
    with pytest.raises(SemanticError, match="llm_model"):
        get_chat_llm({"llm_backend": "openai", "cache_dir": str(tmp_path)})


# ----------------------------------------------------------------------- cache
def test_cache_round_trip_and_stats(tmp_path):
    cache = SemanticCache(tmp_path)
    vec = np.arange(5, dtype=np.float64) / 7
    key = content_digest("hello", {"p": 1})
    assert key == content_digest("hello", {"p": 1}) != content_digest("hello", {"p": 2})
    assert cache.get_vectors("b", "m", [key]) == {}
    cache.put_vectors("b", "m", {key: vec})
    got = cache.get_vectors("b", "m", [key, "absent"])
    assert got[key].dtype == np.float32 and np.allclose(got[key], vec)
    assert cache.get_vectors("b", "other-model", [key]) == {}
    assert cache.get_answer("b", "m", key) is None
    cache.put_answer("b", "m", key, "réponse 3")
    assert cache.get_answer("b", "m", key) == "réponse 3"
    assert (cache.stats.hits, cache.stats.misses) == (2, 4)
    cache.close()
    reopened = SemanticCache(tmp_path)
    assert reopened.get_answer("b", "m", key) == "réponse 3"
    assert reopened.count() == {"vectors": 1, "answers": 1}


def test_cache_shared_by_processes(tmp_path):
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from recbole_sada.semantic.cache import SemanticCache
        cache = SemanticCache(sys.argv[1])
        for i in range(40):
            cache.put_vectors("b", "m", {f"{sys.argv[2]}-{i}": np.ones(4)})
            cache.put_answer("b", "m", f"{sys.argv[2]}-{i}", "x")
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag], env=env)
             for tag in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert SemanticCache(tmp_path).count() == {"vectors": 80, "answers": 80}


# --------------------------------------------------- sentence-transformers
@pytest.fixture(scope="module")
def minilm_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("minilm_cache")


def test_packaged_minilm_encoder(minilm_cache_dir):
    cfg = {"cache_dir": str(minilm_cache_dir), "encoder_batch_size": 2}
    encoder = get_encoder(cfg)
    assert encoder.backend == "sentence-transformers"
    texts = ["A funny animated movie about toys.", "An animated comedy film about toys.",
             "Quarterly tax filing deadlines for corporations.",
             "A funny animated movie about toys."]
    vectors = encoder.encode(texts)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32 and encoder.dim == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[3])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    assert encoder.stats.model_calls == 2 and encoder.stats.encoded == 3  # 3 distinct, batches of 2

    again = get_encoder(cfg)  # fresh instance, same on-disk cache
    assert np.allclose(again.encode(texts), vectors)
    assert again.stats.model_calls == 0 and again.stats.cache_hits == 3
    assert again.encode([]).shape == (0, 384)


# ---------------------------------------------------------- OpenAI embeddings
def test_openai_embeddings_batches_and_cache(fake_api, api_cfg):
    encoder = get_encoder(api_cfg)
    texts = [f"text {i}" for i in range(7)] + ["text 0", ""]
    vectors = encoder.encode(texts, show_progress=True)
    assert vectors.shape == (9, EMBED_DIM) and vectors.dtype == np.float32
    expected = np.array(_fake_vector("text 3"), dtype=np.float32)
    assert np.allclose(vectors[3], expected / np.linalg.norm(expected), atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sizes = [len(r["json"]["input"]) for r in fake_api.requests]
    assert sizes == [3, 3, 2]  # 8 distinct texts in batches of 3
    assert all(r["auth"] == "Bearer sk-test" and r["json"]["model"] == "fake-embed"
               for r in fake_api.requests)
    assert encoder.stats.model_calls == 3

    again = get_encoder(api_cfg)
    assert np.allclose(again.encode(texts), vectors)
    assert len(fake_api.requests) == 3 and again.stats.model_calls == 0


def test_openai_retries_429_then_succeeds(fake_api, api_cfg):
    fake_api.script = [{"status": 429, "headers": {"Retry-After": "30"}}, {"status": 503}]
    start = time.perf_counter()
    vectors = get_encoder(api_cfg).encode(["retry me"])
    assert vectors.shape == (1, EMBED_DIM)
    assert fake_api.count("/embeddings") == 3
    assert time.perf_counter() - start < 5  # Retry-After is capped by api_backoff_max


def test_openai_timeout_raises_after_retries(fake_api, api_cfg):
    cfg = {**api_cfg, "api_timeout": 0.2, "api_max_retries": 1}
    fake_api.script = [{"sleep": 0.6, "status": 200}, {"sleep": 0.6, "status": 200}]
    with pytest.raises(SemanticError) as err:
        get_encoder(cfg).encode(["slow"])
    assert "2 attempt" in str(err.value) and "api_timeout" in str(err.value)
    assert fake_api.count("/embeddings") == 2


def test_openai_401_names_the_env_var(fake_api, api_cfg):
    fake_api.script = [{"status": 401, "body": b'{"error": "bad key"}'}]
    with pytest.raises(SemanticError, match="SADA_TEST_KEY"):
        get_encoder(api_cfg).encode(["x"])
    assert fake_api.count("/embeddings") == 1  # no retry on auth errors


def test_openai_malformed_json(fake_api, api_cfg):
    fake_api.script = [{"status": 200, "body": b"<html>oops</html>"}]
    with pytest.raises(SemanticError, match="not JSON"):
        get_encoder(api_cfg).encode(["x"])


def test_openai_wrong_number_of_vectors(fake_api, api_cfg):
    body = json.dumps({"data": [{"index": 0, "embedding": [1.0, 0.0]}]}).encode()
    fake_api.script = [{"status": 200, "body": body}]
    with pytest.raises(SemanticError, match="1 embeddings for 2 texts"):
        get_encoder(api_cfg).encode(["x", "y"])


# ------------------------------------------------------------- OpenAI chat
def test_openai_chat_and_cache(fake_api, api_cfg):
    llm = get_chat_llm(api_cfg)
    assert llm.chat("Pick 2 of: 1. A 2. B") == "echo: Pick 2 of: 1. A 2. B"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert llm.chat(messages, max_new_tokens=5) == "echo: hi"
    sent = fake_api.requests[-1]["json"]
    assert sent["model"] == "fake-chat" and sent["max_tokens"] == 5
    assert sent["temperature"] == 0 and sent["messages"] == messages
    assert llm.stats.calls == 2

    again = get_chat_llm(api_cfg)
    assert again.chat(messages, max_new_tokens=5) == "echo: hi"
    assert again.chat("Pick 2 of: 1. A 2. B") == "echo: Pick 2 of: 1. A 2. B"
    assert fake_api.count("/chat/completions") == 2
    assert (again.stats.calls, again.stats.cache_hits) == (0, 2)
    again.chat(messages, max_new_tokens=6)  # other generation params: not cached
    assert fake_api.count("/chat/completions") == 3


def test_openai_chat_malformed_answer(fake_api, api_cfg):
    fake_api.script = [{"status": 200, "body": b'{"choices": []}'}]
    with pytest.raises(SemanticError, match="choices"):
        get_chat_llm(api_cfg).chat("hi")


# ------------------------------------------------------------------ parser
CANDIDATES = [(101, "Toy Story (1995)"), (102, "Heat"), (103, "Heat Wave"),
              (104, "GoldenEye"), (105, "Jumanji")]


@pytest.mark.parametrize("answer, n, ids, status", [
    ("3", 1, [103], "ok"),
    ("[3, 5]", 2, [103, 105], "ok"),
    ("Answer: 2", 1, [102], "ok"),
    ("3. Heat Wave\n5. Jumanji", 2, [103, 105], "ok"),
    ("1. Jumanji\n2. GoldenEye", 2, [105, 104], "ok"),  # enumerators, not choices
    ("I recommend heat wave and TOY STORY (1995).", 2, [103, 101], "ok"),
    ("Heat (2) and Jumanji", 2, [102, 105], "ok"),
    ("[5, 1, 2]", 2, [105, 101], "ok"),
    ("[3]", 2, [103], "partial"),
    ("[3, 9]", 2, [103], "out_of_pool"),
    ("[0, 12]", 2, [], "out_of_pool"),
    ("3, 3", 2, [103], "duplicate"),
    ("I cannot decide, sorry.", 2, [], "unparsable"),
    ("", 1, [], "unparsable"),
])
def test_parse_choices(answer, n, ids, status):
    result = parse_choices(answer, CANDIDATES, n)
    assert (result.ids, result.status) == (ids, status)


def test_parse_choices_counts():
    result = parse_choices("2, 2, 7, Jumanji, 8", CANDIDATES, 3)
    assert result.ids == [102, 105] and result.positions == [2, 5]
    assert (result.out_of_pool, result.duplicates, result.status) == (2, 1, "out_of_pool")


# --------------------------------------------------------- local SmolLM2 GGUF
def test_packaged_smollm2_is_deterministic(tmp_path):
    llm = get_chat_llm({"cache_dir": str(tmp_path), "llm_max_new_tokens": 8})
    assert llm.backend == "transformers"
    question = [{"role": "user", "content": "Name one fruit."}]
    first = llm.chat(question)
    assert isinstance(first, str) and first.strip() and llm.stats.calls == 1
    assert llm._generate(question, 8) == first  # greedy decoding: same text again
    assert llm.chat(question) == first
    assert (llm.stats.calls, llm.stats.cache_hits) == (1, 1)


def test_packaged_smollm2_batched_greedy_equals_one_by_one(tmp_path):
    llm = get_chat_llm({"cache_dir": str(tmp_path), "llm_max_new_tokens": 8, "llm_batch_size": 3})
    questions = [[{"role": "user", "content": q}] for q in
                 ("Name one fruit.", "Name two colours of a rainbow, please.", "Say hi.")]
    batched = llm.chat_many(questions)
    assert llm.stats.calls == 3 and all(isinstance(a, str) and a for a in batched)
    assert batched == [llm._generate(q, 8) for q in questions]  # left padding changes no answer
