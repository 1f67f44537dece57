"""LLMSeR: the augmentation pipeline (no leakage, parser fallbacks, resume) and the dual-channel
models (weights, loss, .aug checks).  Small synthetic data, a bag-of-words encoder and scripted
chat LLMs keep every test fast and offline."""
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_sada.errors import InputError
from recbole_sada.llmser import pipeline as P
from recbole_sada.llmser.__main__ import main as llmser_main
from recbole_sada.llmser.augfile import read_aug, sidecar_path
from recbole_sada.model.llmser import channel_weights, prepend_items
from recbole_sada.semantic import ChatLLM, SemanticCache, TextEncoder

N_USERS, N_ITEMS = 40, 30


# ------------------------------------------------------------------------------------ fixtures
def write_distinct_dataset(root, name="llmtiny", seed=1):
    """Users with distinct items (no repeats), two tastes; returns ``{user: items}`` in time order."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    seqs = {}
    with open(folder / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(1, N_USERS + 1):
            length = int(rng.integers(4, 12))
            base = 1 if u % 2 else N_ITEMS // 2 + 1
            items = (base + rng.permutation(N_ITEMS // 2)[:length]).tolist()
            seqs[f"u{u}"] = [f"i{i}" for i in items]
            for t, i in enumerate(items, start=1):
                f.write(f"u{u}\ti{i}\t{t}\n")
    with open(folder / f"{name}.item", "w") as f:
        f.write("item_id:token\ttitle:token\n")
        for i in range(1, N_ITEMS + 1):
            kind = "action thriller" if i <= N_ITEMS // 2 else "romantic comedy"
            f.write(f"i{i}\t{kind} film {i}\n")
    return seqs


class BagOfWordsEncoder(TextEncoder):
    """Deterministic offline encoder: hashed word counts (titles sharing words are similar)."""

    backend = "test-bow"

    def __init__(self, cache, dim=32):
        super().__init__("bow", cache)
        self.width = dim

    def _embed_batch(self, texts):
        out = np.zeros((len(texts), self.width), dtype=np.float32)
        for r, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[r, zlib.crc32(word.encode()) % self.width] += 1.0
        return out + 1e-3


class ScriptedChat(ChatLLM):
    """Chat LLM whose answers come from ``respond(messages, call_index)``; counts model calls and
    can stop (KeyboardInterrupt) after ``stop_after`` calls."""

    backend = "test-script"

    def __init__(self, cache, respond, stop_after=None):
        super().__init__("script", cache, max_new_tokens=16)
        self.respond = respond
        self.stop_after = stop_after
        self.prompts = []

    def _generate(self, messages, max_new_tokens):
        if self.stop_after is not None and len(self.prompts) >= self.stop_after:
            raise KeyboardInterrupt("simulated interrupt")
        self.prompts.append(messages)
        return self.respond(messages, len(self.prompts) - 1)


def mixed_answers(messages, i):
    """Valid / out-of-pool / duplicate / garbage answers, chosen by a hash of the question (so a
    prompt always gets the same answer); a repair turn is answered validly for half the questions."""
    question = messages[1]["content"]
    h = zlib.crc32(question.encode())
    many = "exactly" in question.split("Answer format:")[-1]
    if messages[-1]["content"].startswith("That answer cannot be used"):
        return ("1, 2, 3" if many else "2") if (h >> 3) % 2 else "still no idea"
    kind = h % 4
    if kind == 0:
        return "2, 4, 1" if many else "3"
    if kind == 1:
        return "25, 99, 40" if many else "57"
    if kind == 2:
        return "2, 2, 2" if many else "1, 1"
    return "I like films a lot."


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmser_data")
    write_distinct_dataset(root)
    return root


@pytest.fixture
def cfg(data_root, tmp_path):
    return {
        "data_path": str(data_root),
        "checkpoint_dir": str(tmp_path / "saved"),
        "cache_dir": str(tmp_path / "cache"),
        "aug_file": str(tmp_path / "llmtiny.aug"),
        "hidden_size": 16, "inner_size": 32, "embedding_size": 16, "n_layers": 1, "n_heads": 1,
        "MAX_ITEM_LIST_LENGTH": 8, "train_batch_size": 16, "eval_batch_size": 64,
        "ccg_epochs": 1, "rcs_epochs": 1, "n_candidates": 6, "n_pseudo": 3, "n_reason": 4,
        "show_progress": False, "state": "WARNING", "train_mode": "sequence", "epochs": 1,
    }


def make_pipeline(cfg, chat=None, backbone="SASRec", **overrides):
    config = P.pipeline_config("llmtiny", backbone, config_dict={**cfg, **overrides})
    cache = SemanticCache(cfg["cache_dir"])
    return P.LLMSeRPipeline(config, backbone, chat_llm=chat, encoder=BagOfWordsEncoder(cache),
                            show_progress=False, log=None)


def aug_rows(path):
    rows, meta = read_aug(path, "user_id", "remake")
    return {u: (items, w) for u, items, w in rows}, meta


# ------------------------------------------------------------------------------------ leakage
def test_ccg_trains_on_reversed_train_part_only(cfg, monkeypatch):
    raw = write_distinct_dataset(Path(cfg["data_path"]))  # same seed: the sequences of the fixture
    seen = {}
    real_fit = P.fit_backbone

    def spy(model, seqs, epochs, config, desc, show_progress, **kw):
        seen[desc.split()[0]] = [list(s) for s in seqs]
        return real_fit(model, seqs, epochs, config, desc, show_progress, **kw)

    monkeypatch.setattr(P, "fit_backbone", spy)
    pipe = make_pipeline(cfg, llmser_llm="none")
    pipe.run()
    d = pipe.data
    tok = lambda ids: [str(d.item_token[i]) for i in ids]  # noqa: E731
    assert set(seen) == {"CCG", "RCS"}
    for row, user in enumerate(d.token_of_user):
        full = raw[user]
        train, heldout = full[:-2], full[-2:]
        assert tok(d.seqs[row]) == train
        assert tok(seen["CCG"][row]) == train[::-1]          # reversed, nothing dropped
        assert not set(heldout) & set(tok(seen["CCG"][row]))  # valid/test never in CCG data
        assert tok(seen["RCS"][row]) == train[:-1]            # RCS never sees the masked item
    # the stage inputs are cut from the same data: sample tensors hold train items only
    item_seq, lengths, targets = P.sequence_samples(seen["CCG"], 8)
    for row, user in enumerate(d.token_of_user):
        used = set(tok(item_seq[row][item_seq[row] > 0].tolist())) | set(tok(targets[row][targets[row] > 0].tolist()))
        assert not used & set(raw[user][-2:])


def test_candidates_are_train_items_minus_own_history(cfg):
    pipe = make_pipeline(cfg, llmser_llm="none", n_candidates=8)
    pipe.run()
    d = pipe.data
    pools = np.load(next(Path(pipe.work_dir).glob("pool-*.npy")))
    rows, _ = aug_rows(pipe.aug_path)
    train_items = {int(i) for seq in d.seqs for i in seq}
    assert (pools > 0).any() and 0 in d.never and not set(d.never.tolist()) & train_items
    for row, user in enumerate(d.token_of_user):
        banned = set(d.seqs[row].tolist())
        pool = [i for i in pools[row] if i > 0]
        assert not banned & set(pool) and set(pool) <= train_items
        assert len(pool) == len(set(pool))
        pseudo = rows[user][0]
        assert set(pseudo) <= {str(d.item_token[i]) for i in pool}
        assert not set(pseudo) & {str(d.item_token[i]) for i in banned}


def test_no_ccg_pool_is_semantic_and_excludes_history(cfg):
    pipe = make_pipeline(cfg, llmser_llm="none", use_ccg=False)
    summary = pipe.run()
    assert "semantic" in summary["ccg"]["pool"]
    d = pipe.data
    pools = np.load(next(Path(pipe.work_dir).glob("pool-*.npy")))
    for row in range(len(d.uids)):
        banned = set(d.seqs[row].tolist()) | set(d.never.tolist())
        assert not banned & set(pools[row][pools[row] > 0].tolist())


def plant_held_out_items(root, variant, name="llmtiny", n=6):
    """Users u1..u<n> get a last (test) interaction with an item no one else has, titled
    differently per ``variant``: those items occur only in held-out interactions."""
    folder = Path(root) / name
    with open(folder / f"{name}.inter", "a") as f:
        f.writelines(f"u{u}\th{u}\t100\n" for u in range(1, n + 1))
    with open(folder / f"{name}.item", "a") as f:
        words = "action thriller film" if variant == "a" else "romantic comedy film"
        f.writelines(f"h{u}\t{words} {u}\n" for u in range(1, n + 1))


@pytest.mark.parametrize("use_ccg", [True, False])
def test_held_out_only_items_never_reach_pools_prompts_or_reliability(cfg, tmp_path, use_ccg):
    """Two copies differing only in the texts of held-out-only items: same pools, same prompts,
    same .aug (pseudo items and reliabilities)."""
    out = {}
    for variant in ("a", "b"):
        root = tmp_path / variant
        write_distinct_dataset(root)
        plant_held_out_items(root, variant)
        local = {**cfg, "data_path": str(root), "checkpoint_dir": str(root / "saved"), "cache_dir": str(root / "cache"),
                 "aug_file": str(root / "llmtiny.aug")}
        chat = ScriptedChat(SemanticCache(local["cache_dir"]), mixed_answers)
        pipe = make_pipeline(local, chat=chat, use_ccg=use_ccg)
        pipe.run()
        pools = np.load(next(Path(pipe.work_dir).glob("pool-*.npy")))
        out[variant] = (pools, chat.prompts, aug_rows(pipe.aug_path)[0], pipe.data)
    (pa, qa, ra, da), (pb, qb, rb, _) = out["a"], out["b"]
    held = {i for i, t in enumerate(da.item_token) if str(t).startswith("h")}
    assert len(held) == 6 and held <= set(da.never.tolist())
    assert np.array_equal(pa, pb) and not held & set(pa.ravel().tolist())
    assert qa and qa == qb
    assert ra == rb
# ------------------------------------------------------------------------------------ LLM answers
@pytest.mark.parametrize(
    "answers, picks, outcome, status",
    [
        (["2, 3, 1"], [20, 30, 10], "ok", "ok"),                     # valid
        (["7, 9, 3", "3, 1, 2"], [30, 10, 20], "repaired", "out_of_pool"),
        (["2, 2, 2", "no idea"], [20], "filled", "duplicate"),     # one usable pick survives
        (["lovely films", "really"], [], "failed", "unparsable"),  # garbage twice
        (["action film 3 and 1", "2"], [30, 10, 20], "filled", "partial"),  # a title counts as a pick
    ],
)
def test_ask_llm_cases(tmp_path, answers, picks, outcome, status):
    script = list(answers)
    chat = ScriptedChat(SemanticCache(tmp_path), lambda m, i: script[i])
    candidates = [(10, "action film 1"), (20, "comedy film 2"), (30, "action film 3")]
    messages = [{"role": "user", "content": "pick"}]
    ids, how, first = P.ask_llm(chat, messages, candidates, 3, 8)
    assert (ids, how, first) == (picks, outcome, status)
    assert chat.stats.calls == len(answers)  # exactly one repair turn when needed
    if len(answers) > 1:
        assert chat.prompts[1][-1]["content"].startswith("That answer cannot be used")


def test_pipeline_with_scripted_llm_counts_fallbacks(cfg):
    chat = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    pipe = make_pipeline(cfg, chat=chat)
    summary = pipe.run()
    snf, arv = summary["snf"]["outcomes"], summary["arv"]["outcomes"]
    assert sum(snf.values()) == N_USERS and sum(arv.values()) == N_USERS
    assert {"llm_ok", "llm_repaired"} <= set(snf) and {"llm_filled", "llm_failed"} & set(snf)
    assert {"llm_ok", "llm_repaired"} <= set(arv) and "llm_fallback" in arv
    assert set(summary["snf"]["first_answer"]) >= {"ok", "out_of_pool", "duplicate", "unparsable"}
    rows, meta = aug_rows(pipe.aug_path)
    assert len(rows) == N_USERS and meta["llm"] == "test-script:script"
    assert meta["prompt_versions"]["snf"] == P.prompts.SNF_VERSION
    for items, w in rows.values():
        assert len(items) == len(set(items)) == 3 and 0.0 <= w <= 1.0
    # every prompt sent was an SNF or ARV question or one repair turn
    assert chat.stats.calls == summary["snf"]["llm_calls"] + summary["arv"]["llm_calls"]


def test_max_users_limits_the_llm_path(cfg):
    chat = ScriptedChat(SemanticCache(cfg["cache_dir"]), lambda m, i: "1, 2, 3" if "exactly" in m[-1]["content"] else "1")
    pipe = make_pipeline(cfg, chat=chat, max_users=5)
    summary = pipe.run()
    assert summary["snf"]["outcomes"] == {"llm_ok": 5, "semantic_unsampled": N_USERS - 5}
    assert summary["arv"]["outcomes"]["llm_ok"] == 5
    assert chat.stats.requests == chat.stats.calls + chat.stats.cache_hits == 10  # identical prompts hit the cache
    lengths = sorted(len(s) for s in pipe.data.seqs)
    sampled = sorted(len(pipe.data.seqs[r]) for r in pipe.llm_users())
    assert sampled == lengths[:5]  # the shortest training sequences go first


class BatchedScriptedChat(ScriptedChat):
    """A :class:`ScriptedChat` that receives its prompts in batches (records their sizes)."""

    def __init__(self, cache, respond, batch_size, stop_after=None):
        super().__init__(cache, respond, stop_after=stop_after)
        self.batch_size = batch_size
        self.batches = []

    def _generate_many(self, batch, max_new_tokens):
        """All answers of a batch at once, as a local model generates them: an interrupt loses
        the whole batch."""
        if self.stop_after is not None and len(self.prompts) + len(batch) > self.stop_after:
            raise KeyboardInterrupt("simulated interrupt")
        self.batches.append(len(batch))
        return [self._generate(m, max_new_tokens) for m in batch]


def test_chat_many_is_chat_in_batches(tmp_path):
    chat = BatchedScriptedChat(SemanticCache(tmp_path / "a"), lambda m, i: m[-1]["content"].upper(), batch_size=2)
    questions = ["a", "b", "a", "c", "d", "e"]
    assert chat.chat("c") == "C" and chat.batches == [1]
    answers = chat.chat_many(questions)
    assert answers == [q.upper() for q in questions]
    assert chat.batches == [1, 2, 2]  # "c" from the cache, the second "a" asked once
    assert (chat.stats.requests, chat.stats.calls, chat.stats.cache_hits) == (7, 5, 2)
    one = ScriptedChat(SemanticCache(tmp_path / "b"), lambda m, i: m[-1]["content"].upper())
    assert [one.chat(q) for q in questions] == answers
    assert chat.chat("e") == "E" and chat.stats.calls == 5  # batched answers are cached like chat's


def test_pipeline_llm_batches_give_the_same_file(cfg, tmp_path):
    """The SNF / ARV questions sent a batch of users at a time: same prompts, answers, outcomes
    and .aug file as one user at a time."""
    one = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    pipe1 = make_pipeline(cfg, chat=one)
    s1 = pipe1.run()
    cfg2 = {**cfg, "cache_dir": str(tmp_path / "cache2"), "checkpoint_dir": str(tmp_path / "saved2"),
            "aug_file": str(tmp_path / "batched.aug")}
    many = BatchedScriptedChat(SemanticCache(cfg2["cache_dir"]), mixed_answers, batch_size=4)
    pipe2 = make_pipeline(cfg2, chat=many)
    s2 = pipe2.run()
    assert max(many.batches) == 4 and len(many.batches) < many.stats.calls
    assert sorted(json.dumps(p) for p in one.prompts) == sorted(json.dumps(p) for p in many.prompts)
    for stage in ("snf", "arv"):
        assert s1[stage]["outcomes"] == s2[stage]["outcomes"]
        assert s1[stage]["llm_calls"] == s2[stage]["llm_calls"]
    assert aug_rows(pipe1.aug_path)[0] == aug_rows(pipe2.aug_path)[0]


def test_resume_after_an_interrupted_batch_repeats_no_answered_prompt(cfg):
    first = BatchedScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers, batch_size=4, stop_after=10)
    with pytest.raises(KeyboardInterrupt):
        make_pipeline(cfg, chat=first).run()
    assert 0 < len(first.prompts) <= 10 and sum(first.batches) == len(first.prompts)
    second = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    summary = make_pipeline(cfg, chat=second).run()
    # every prompt answered before the interrupt came from the cache; the lost batch was asked again
    assert not {json.dumps(p) for p in first.prompts} & {json.dumps(p) for p in second.prompts}
    assert summary["snf"]["resumed"] > 0


# ------------------------------------------------------------------------------------ resume / CLI
def test_resume_does_not_repeat_llm_calls(cfg):
    cache = SemanticCache(cfg["cache_dir"])
    first = ScriptedChat(cache, mixed_answers, stop_after=25)
    with pytest.raises(KeyboardInterrupt):
        make_pipeline(cfg, chat=first).run()
    assert len(first.prompts) == 25
    second = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    pipe = make_pipeline(cfg, chat=second)
    summary = pipe.run()
    done_users = summary["snf"]["resumed"]
    assert done_users > 0
    seen_first = {json.dumps(p) for p in first.prompts}
    assert not seen_first & {json.dumps(p) for p in second.prompts}  # nothing generated twice
    aug1 = Path(pipe.aug_path).read_text()
    third = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    summary3 = make_pipeline(cfg, chat=third).run()
    assert third.stats.requests == 0 and third.stats.calls == 0
    assert summary3["snf"]["resumed"] == summary3["arv"]["resumed"] == N_USERS
    assert summary3["ccg"].get("resumed") is True
    assert Path(pipe.aug_path).read_text() == aug1
    # a new size reuses the CCG model but redoes SNF/ARV; the LLM cache answers repeated prompts
    fourth = ScriptedChat(SemanticCache(cfg["cache_dir"]), mixed_answers)
    summary4 = make_pipeline(cfg, chat=fourth, n_reason=3).run()
    assert summary4["snf"]["resumed"] == N_USERS and summary4["arv"]["resumed"] == 0
    assert summary4["rcs"]["model_reused"] is True


def test_cli_llm_none_end_to_end(cfg, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(P, "get_encoder", lambda config, cache=None: BagOfWordsEncoder(cache))
    args = ["--dataset=llmtiny", "--backbone=GRU4Rec", "--llm", "none", "--no_snf"] + [
        f"--{k}={v}" for k, v in cfg.items() if k not in ("show_progress",)]
    assert llmser_main(args) == 0
    out = capsys.readouterr().out
    assert "ccg" in out and "arv" in out and "write" in out
    rows, meta = aug_rows(cfg["aug_file"])
    assert len(rows) == N_USERS and meta["llm"] == "none" and meta["backbone"] == "GRU4Rec"
    assert meta["settings"]["use_snf"] is False
    assert meta["counts"]["snf"] == {"ccg_top": N_USERS}
    assert meta["counts"]["arv"] == {"rcs_top1": N_USERS}
    assert llmser_main(["--dataset=llmtiny", "--n_pseudo=0", f"--data_path={cfg['data_path']}"]) == 2
    assert "n_pseudo" in capsys.readouterr().err


def test_no_arv_gives_full_reliability(cfg):
    pipe = make_pipeline(cfg, llmser_llm="none", use_arv=False)
    pipe.run()
    rows, _ = aug_rows(pipe.aug_path)
    assert {w for _, w in rows.values()} == {1.0}


# ------------------------------------------------------------------------------------ model
def test_channel_weights_formula():
    omega = [0.8, 0.5, 0.2]
    lengths = [2, 3, 10]  # T = 3: the first two are tail users, the last a head user
    assert np.allclose(channel_weights(omega, lengths, 0.5, 3), [0.8, 0.5, 0.1])
    assert np.allclose(channel_weights(omega, lengths, 0.5, 3, use_weight=False), omega)
    assert np.allclose(channel_weights(omega, lengths, 0.0, 0), [0.0, 0.0, 0.0])


def test_prepend_items_hand_examples():
    seq = torch.tensor([[5, 6, 0, 0], [5, 6, 7, 0], [5, 6, 7, 8], [5, 0, 0, 0]])
    seq_len = torch.tensor([2, 3, 4, 1])
    targets = torch.tensor([[6, 7, 0, 0], [6, 7, 8, 0], [6, 7, 8, 9], [6, 0, 0, 0]])
    pseudo = torch.tensor([[1, 2, 3], [1, 2, 0], [1, 2, 3], [0, 0, 0]])
    plen = torch.tensor([2, 2, 3, 0])
    new_seq, new_len, new_targets = prepend_items(seq, seq_len, pseudo, plen, targets)
    assert new_seq.tolist() == [[1, 2, 5, 6], [2, 5, 6, 7], [5, 6, 7, 8], [5, 0, 0, 0]]
    assert new_len.tolist() == [4, 4, 4, 1]
    # pseudo items predict the next pseudo item, the last one the first real item
    assert new_targets.tolist() == [[2, 5, 6, 7], [5, 6, 7, 8], [6, 7, 8, 9], [6, 0, 0, 0]]
    _, _, none = prepend_items(seq, seq_len, pseudo, plen)
    assert none is None


def write_aug_file(path, users_items, omega, inter_sha=None):
    with open(path, "w") as f:
        f.write("user_id:token\tpseudo_items:token_seq\treliability:float\n")
        for u, items in users_items.items():
            f.write(f"{u}\t{' '.join(items)}\t{omega.get(u, 0.5)}\n")
    side = sidecar_path(path)
    if inter_sha is None:
        if side.exists():
            side.unlink()
    else:
        side.write_text(json.dumps({"inter_sha256": inter_sha}))


def build_model(cfg, model="LLMSeRSASRec", **overrides):
    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    config, dataset, train_data, _, _ = prepare(model, "llmtiny", config_dict={**cfg, **overrides})
    return config, get_model(model)(config, train_data._dataset), train_data


def test_dual_channel_loss_matches_hand_computation(cfg, tmp_path):
    raw = write_distinct_dataset(Path(cfg["data_path"]))
    users = list(raw)
    pseudo = {u: ["i1", "i16"] if i % 3 else [] for i, u in enumerate(users)}
    omega = {u: round(0.1 + 0.8 * (i % 5) / 4, 3) for i, u in enumerate(users)}
    write_aug_file(cfg["aug_file"], pseudo, omega)
    config, model, train_data = build_model(cfg, tail_threshold=5, beta=0.4, hidden_dropout_prob=0.0,
                                            attn_dropout_prob=0.0)
    model.eval()  # no dropout: both passes are deterministic
    n = model.n_items

    def fixed_negatives(t, item_seq=None):
        neg = t % (n - 1) + 1
        return torch.where(neg == t, neg % (n - 1) + 1, neg)

    model.sample_negatives = fixed_negatives
    batch = next(iter(train_data))
    losses = model.calculate_loss(batch)
    assert set(losses) == {"loss_orig", "loss_aug"}

    uid = batch["user_id"]
    tokens = [train_data._dataset.field2id_token["user_id"][u] for u in uid.tolist()]
    lengths = torch.tensor([len(raw[t]) - 2 for t in tokens])
    om = torch.tensor([omega[t] if pseudo[t] else 0.0 for t in tokens])
    alpha = torch.where(lengths > 5, 0.4 * om, om)
    assert torch.allclose(model.aug_weight[uid], alpha.float(), atol=1e-6)

    def channel(seq, seq_len, targets, weight):
        H = model.encode(model.embed_items(seq), seq, seq_len)
        table = model.output_item_embedding()
        neg = model.sample_negatives(targets)
        mask = targets > 0
        per = torch.nn.functional.softplus(-(H * table[targets]).sum(-1)) + torch.nn.functional.softplus(
            (H * table[neg]).sum(-1))
        return (per * weight.unsqueeze(1) * mask).sum() / mask.sum()

    seq, seq_len, targets = batch["item_id_list"], batch["item_length"], batch["target_item_list"]
    expect_orig = channel(seq, seq_len, targets, 1 - alpha)
    aug = model.augment_interaction(batch)
    expect_aug = channel(aug["item_id_list"], aug["item_length"], aug["target_item_list"], alpha)
    assert torch.allclose(losses["loss_orig"], expect_orig, atol=1e-5)
    assert torch.allclose(losses["loss_aug"], expect_aug, atol=1e-5)
    # the augmented inputs start with the pseudo items where the input is not full
    for r, t in enumerate(tokens):
        n_in = int(seq_len[r])
        if pseudo[t] and n_in + 2 <= 8:
            ids = [train_data._dataset.field2token_id["item_id"][i] for i in pseudo[t]]
            assert aug["item_id_list"][r, :2].tolist() == ids
            assert aug["target_item_list"][r, :2].tolist() == [ids[1], int(seq[r, 0])]
        elif n_in == 8:
            assert torch.equal(aug["item_id_list"][r], seq[r])


def test_models_train_one_epoch(cfg):
    write_aug_file(cfg["aug_file"], {u: ["i2", "i3"] for u in write_distinct_dataset(Path(cfg["data_path"]))}, {})
    from recbole_sada.quick_start import run_recbole_sada
    from recbole_sada.utils import plugin_models

    names = [f"LLMSeR{b}" for b in ("SASRec", "GRU4Rec", "BERT4Rec", "FMLPRec", "NextItNet")]
    assert set(names) <= set(plugin_models())  # the declared grid builds LLMSeR over every backbone
    for name, mode in [(n, "sequence") for n in names] + [("LLMSeRSASRec", "prefix")]:
        result = run_recbole_sada(name, "llmtiny", config_dict={**cfg, "train_mode": mode}, saved=False)
        assert 0.0 <= result["test_result"]["hit@10"] <= 1.0
        assert result["trainer"].loss_names == ["loss_orig", "loss_aug"]


def test_missing_or_mismatched_aug_is_one_line_error(cfg, tmp_path):
    raw = write_distinct_dataset(Path(cfg["data_path"]))
    missing = dict(cfg, aug_file=str(tmp_path / "nothing.aug"))
    with pytest.raises(InputError) as err:
        build_model(missing)
    msg = str(err.value)
    assert "\n" not in msg and "nothing.aug" in msg
    assert "python -m recbole_sada.llmser --dataset=llmtiny --backbone=SASRec" in msg

    write_aug_file(cfg["aug_file"], {u: ["i2"] for u in raw}, {}, inter_sha="0" * 64)
    with pytest.raises(InputError, match=r"another version of .*llmtiny\.inter.*python -m recbole_sada\.llmser"):
        build_model(cfg, "LLMSeRGRU4Rec")

    write_aug_file(cfg["aug_file"], {u: ["i2", "i999"] for u in raw}, {})
    with pytest.raises(InputError, match=r"item 'i999' .*not in dataset"):
        build_model(cfg)

    write_aug_file(cfg["aug_file"], {u: ["i2"] for u in list(raw)[:-1]}, {})
    with pytest.raises(InputError, match=r"no row for 1 of the 40 users"):
        build_model(cfg)


def test_aug_made_by_pipeline_is_accepted_and_augment_eval(cfg):
    make_pipeline(cfg, llmser_llm="none").run()
    config, model, train_data = build_model(cfg, augment_eval=True)
    assert int(model.pseudo_len.max()) == 3
    batch = next(iter(train_data))
    model.eval()
    scores = model.full_sort_predict(batch)
    assert scores.shape == (batch["user_id"].size(0), model.n_items)


def test_stage_keys_cover_the_llm_server_and_sampling(cfg, tmp_path):
    def keys(**extra):
        chat = ScriptedChat(SemanticCache(tmp_path / "c"), mixed_answers)
        pipe = make_pipeline(cfg, chat=chat, **extra)
        pipe.data = P.PipelineData(pipe.config)
        return pipe.keys()

    base = keys(api_base_url="http://127.0.0.1:8000/v1")
    other = keys(api_base_url="http://127.0.0.1:9000/v1")
    warm = keys(api_base_url="http://127.0.0.1:8000/v1", llm_temperature=0.7)
    assert base["pool"] == other["pool"] and base["snf"] != other["snf"] and base["arv"] != other["arv"]
    assert base["snf"] != warm["snf"]


def test_arv_order_shuffled_separates_position_bias_from_the_rcs(cfg):
    """An LLM that always answers "1" repeats the RCS top-1 under ``arv_order: rank``; shuffled, it
    picks the candidate shown first, whose RCS rank varies, the stage key changes, and the same
    seed asks the same prompts again."""
    def first(messages, i):
        return "1, 2, 3" if "exactly" in messages[-1]["content"] else "1"

    def arv_records(**extra):
        pipe = make_pipeline(cfg, chat=ScriptedChat(SemanticCache(cfg["cache_dir"]), first), **extra)
        pipe.run()
        key = pipe.keys()["arv"]
        path = pipe.work_dir / f"arv-{key}.jsonl"
        return key, {r["user"]: r for r in map(json.loads, path.read_text().splitlines())}

    key_rank, rank = arv_records()
    key_shuf, shuf = arv_records(arv_order="shuffled")
    assert key_rank != key_shuf
    assert {r["llm_rank"] for r in rank.values() if "llm_rank" in r} == {1}
    ranks = [r["llm_rank"] for r in shuf.values() if "llm_rank" in r]
    assert len(ranks) == N_USERS and len(set(ranks)) > 1 and max(ranks) <= cfg["n_reason"]
    # the permutation is a function of (seed, user): fixed across calls, different across users
    assert P.arv.shown_order([1, 2, 3, 4], "u1", "shuffled", 7) == P.arv.shown_order([1, 2, 3, 4], "u1", "shuffled", 7)
    assert sorted(P.arv.shown_order([1, 2, 3, 4], "u1", "shuffled", 7)) == [1, 2, 3, 4]
    assert P.arv.shown_order([1, 2, 3, 4], "u1", "rank", 7) == [1, 2, 3, 4]
    orders = {tuple(P.arv.shown_order(list(range(10)), f"u{u}", "shuffled", 7)) for u in range(20)}
    assert len(orders) > 1
    with pytest.raises(InputError, match="arv_order"):
        make_pipeline(cfg, arv_order="random")


def test_user_with_one_training_item_gets_pseudo_items_and_trains(cfg, tmp_path):
    """A user with three interactions (one train, valid, test) - the shortest user RecBole keeps:
    the pipeline still gives pseudo items and a reliability (ARV masks the only training item, so
    S_mask is the pseudo items alone) and the dual-channel model trains on it."""
    root = tmp_path / "short"
    write_distinct_dataset(root)
    with open(root / "llmtiny" / "llmtiny.inter", "a") as f:
        f.write("ushort\ti3\t1\nushort\ti4\t2\nushort\ti5\t3\n")
    local = {**cfg, "data_path": str(root), "checkpoint_dir": str(root / "saved"), "aug_file": str(root / "llmtiny.aug")}
    pipe = make_pipeline(local, llmser_llm="none")
    pipe.run()
    rows, _ = aug_rows(pipe.aug_path)
    items, omega = rows["ushort"]
    assert len(items) == 3 and "i3" not in items and 0.0 <= omega <= 1.0
    from recbole_sada.quick_start import run_recbole_sada

    result = run_recbole_sada("LLMSeRSASRec", "llmtiny", config_dict=local, saved=False)
    assert 0.0 <= result["test_result"]["hit@10"] <= 1.0


def test_ccg_rcs_train_through_the_plugin_trainer(cfg, monkeypatch):
    """fit_backbone runs PluginTrainer.fit (one stage, no validation, no checkpoint) and trains."""
    from recbole_sada.llmser import backbone as B
    from recbole_sada.trainer import PluginTrainer

    calls = []
    real_fit = PluginTrainer.fit

    def spy(self, train_data, valid_data=None, **kw):
        calls.append((self.epochs, self.stage1_epochs, valid_data, kw.get("saved")))
        return real_fit(self, train_data, valid_data, **kw)

    monkeypatch.setattr(PluginTrainer, "fit", spy)
    pipe = make_pipeline(cfg, llmser_llm="none")
    pipe.data = P.PipelineData(pipe.config)
    model = pipe.new_backbone()
    before = [p.detach().clone() for p in model.parameters()]
    loss = B.fit_backbone(model, [s[::-1] for s in pipe.data.seqs], 2, pipe.config, "CCG", False,
                          dataset=pipe.data.train_dataset)
    assert calls == [(2, 0, None, False)]
    assert loss is not None and np.isfinite(loss) and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # the batches: one sample per sequence of >= 2 items, every sample in one epoch
    batches = B.SequenceBatches(model, pipe.data.seqs, 8, 16, 0)
    seen = torch.cat([b[model.ITEM_SEQ] for b in batches])
    assert seen.size(0) == sum(len(s) >= 2 for s in pipe.data.seqs) == batches.n
    assert len(batches) == -(-batches.n // 16)


def test_pseudo_items_are_dataset_data_read_once_per_dataset(cfg, monkeypatch):
    """The model reads its pseudo items from the dataset (once per dataset object); a shallow
    copy of the dataset (RecBole's build) never reuses another object's cache."""
    import copy

    from recbole_sada.llmser import augfile

    raw = write_distinct_dataset(Path(cfg["data_path"]))
    write_aug_file(cfg["aug_file"], {u: ["i2", "i3"] for u in raw}, {u: 0.5 for u in raw})
    config, model, train_data = build_model(cfg)
    dataset = train_data._dataset
    reads = []
    real = augfile.load_pseudo_items
    monkeypatch.setattr(augfile, "load_pseudo_items", lambda *a: reads.append(a) or real(*a))
    first = dataset.pseudo_items("SASRec")
    assert dataset.pseudo_items("SASRec") is first and not reads  # read when the model was built: cached
    pseudo, pseudo_len, omega, train_len = first
    assert torch.equal(model.pseudo_items, torch.as_tensor(pseudo)) and torch.equal(model.pseudo_len, torch.as_tensor(pseudo_len))
    other = copy.copy(dataset)
    assert other.pseudo_items("SASRec") is not first
