"""Stages 3-4, RCS and ARV (adaptive reliability validation, Eq. 4-6 of LLMSeR): the last training
item is masked; the RCS (the backbone trained forward on the training sequences without their last
item) ranks the top ``n_reason`` items for pseudo items + remaining history; the chat LLM picks the
masked item among them (fallback: the RCS top-1); omega_u = cos(text(pick), text(masked)), clipped
to [0, 1].  ``arv_order: shuffled`` shows the candidates in a seeded per-user order instead of the
RCS order (a position-biased LLM then no longer repeats the RCS top-1); ``llm_rank`` in the
records is always the pick's rank in the RCS order.  Output: ``arv-<key>.jsonl``, one record per user."""
import time
import zlib
from collections import Counter, OrderedDict

import numpy as np

from recbole_sada.llmser import prompts
from recbole_sada.llmser.common import JsonlStage, LLMBatcher, semantic_top, stage_key
from recbole_sada.llmser.backbone import top_items


def keys(pipe, base, snf_key):
    """``{"rcs": key of the trained RCS, "arv": key of the reliabilities}``."""
    s = pipe.settings
    rcs = stage_key("rcs", base, s.rcs_epochs)
    # the default order adds nothing, so the keys (and caches) of earlier runs stay valid
    order = ("order", s.arv_order, pipe.config["seed"]) if s.arv_order != "rank" else ()
    arv = stage_key("arv", snf_key, rcs if s.use_rcs else "semantic", s.n_reason, s.use_arv, s.use_rcs, s.use_reason,
                    pipe.llm_key() if s.use_reason else "-", prompts.ARV_VERSION, prompts.REPAIR_VERSION,
                    prompts.ARV_MAX_NEW_TOKENS, *order)
    return {"rcs": rcs, "arv": arv}


def shown_order(pool, user, order, seed):
    """The ARV candidates in the order the LLM reads them: ``rank`` = the RCS order (the paper's
    prompt); ``shuffled`` = a permutation fixed by ``seed`` and the user token, so a rerun asks the
    same prompt (and hits the cache) while the RCS top-1 is no longer always candidate 1."""
    pool = list(pool)
    if order == "rank" or len(pool) < 2:
        return pool
    rng = np.random.default_rng([int(seed or 0) & 0xFFFFFFFF, zlib.crc32(str(user).encode())])
    return [pool[k] for k in rng.permutation(len(pool))]


def run(pipe, keys, pseudo, emb, sampled):
    """omega_u per user row."""
    from tqdm.auto import tqdm

    s, d = pipe.settings, pipe.data
    n = len(d.uids)
    if not s.use_arv:
        pipe.summary["rcs"] = OrderedDict(seconds=0.0, skipped="use_arv: False")
        pipe.summary["arv"] = OrderedDict(seconds=0.0, skipped="use_arv: False (omega = 1)")
        return [1.0] * n, {"mean_omega": 1.0}
    # ---- RCS: forward backbone on the training sequences without their last item
    start = time.time()
    masked_inputs = [list(pseudo[r]) + d.seqs[r][:-1].tolist() for r in range(n)]
    excluded = [set(masked_inputs[r]) | {0} for r in range(n)]
    store = JsonlStage(pipe.work_dir / f"arv-{keys['arv']}.jsonl")
    todo = [r for r in range(n) if d.token_of_user[r] not in store]
    if s.use_rcs:
        if todo:
            model, loaded = pipe.trained_backbone("rcs", keys["rcs"], [seq[:-1] for seq in d.seqs], s.rcs_epochs)
            pools = top_items(model, [masked_inputs[r] for r in todo], [excluded[r] for r in todo], s.n_reason,
                              pipe.config, never=d.never)
        else:
            loaded, pools = True, np.zeros((0, s.n_reason), dtype=np.int64)
        pipe.record_stage("rcs", start, model_reused=loaded)
    else:
        pools = np.zeros((len(todo), s.n_reason), dtype=np.int64)
        for j, r in enumerate(todo):
            shown = pseudo[r] + d.seqs[r][:-1][-s.prompt_history:].tolist()
            top = semantic_top(emb, shown, excluded[r], s.n_reason, never=d.never)
            pools[j, : len(top)] = top
        pipe.record_stage("rcs", start, skipped="use_rcs: False (semantic top-H)")
    # ---- ARV: LLM reasoning over F_u, scoring
    start, before = time.time(), pipe.llm_stats()
    use_llm = s.use_reason and pipe.chat_llm is not None
    pool_of = {r: [int(i) for i in pool if i > 0] for r, pool in zip(todo, pools)}

    def question(r):
        rest = d.seqs[r][:-1].tolist()
        skipped = max(0, len(rest) - s.prompt_history)
        if skipped:
            head, recent = pseudo[r], rest[-s.prompt_history:]
        else:
            head, recent = pseudo[r] + rest, []
        shown_pool = shown_order(pool_of[r], d.token_of_user[r], s.arv_order, pipe.config["seed"])
        texts = [d.texts[i] for i in shown_pool]
        messages = prompts.arv_messages([d.texts[i] for i in head], [d.texts[i] for i in recent], texts,
                                        s.llm_item_noun, skipped)
        return messages, list(zip(shown_pool, texts))

    order = [r for r in todo if use_llm and r in sampled and pool_of[r]]
    batcher = LLMBatcher(pipe.chat_llm, order, question, 1, prompts.ARV_MAX_NEW_TOKENS) if order else None
    bar = tqdm(list(zip(todo, pools)), desc="ARV (reliability)", unit="user", disable=not pipe.show_progress)
    try:
        for r, pool in bar:
            user = d.token_of_user[r]
            pool = [int(i) for i in pool if i > 0]
            masked = int(d.seqs[r][-1])
            record = {"user": user}
            if not pool:
                record.update(how="empty_pool", pick=None, omega=0.0)
                store.add(record)
                continue
            how = "rcs_top1" if s.use_rcs else "semantic_top1"
            pick = pool[0]
            if use_llm and r in sampled:
                ids, outcome, first = batcher.get(r)
                record["first_status"] = first
                if ids:
                    pick = ids[0]
                    record["llm_rank"] = pool.index(pick) + 1  # 1 = the LLM agrees with the RCS top-1
                how = "llm_" + (outcome if ids else "fallback")
            omega = 1.0 if pick == masked else float(np.clip(emb[pick] @ emb[masked], 0.0, 1.0))
            record.update(how=how, pick=str(d.item_token[pick]), hit=pick == masked, omega=round(omega, 6))
            store.add(record)
    finally:
        store.close()
    omega = [float(store.records[d.token_of_user[r]]["omega"]) for r in range(n)]
    counts = Counter(rec["how"] for rec in store.records.values())
    firsts = Counter(rec["first_status"] for rec in store.records.values() if "first_status" in rec)
    hits = [bool(rec.get("hit")) for rec in store.records.values()]
    info = {"mean_omega": round(float(np.mean(omega)), 4) if omega else None,
            "masked_item_hit_rate": round(float(np.mean(hits)), 4) if hits else None}
    llm_ranks = [rec["llm_rank"] for rec in store.records.values() if "llm_rank" in rec]
    if llm_ranks:
        info["llm_pick_is_top1"] = round(float(np.mean(np.asarray(llm_ranks) == 1)), 4)
    pipe.record_stage("arv", start, before, users=n, resumed=store.resumed, outcomes=dict(counts),
                       first_answer=dict(firsts), **info)
    return omega, info
