"""Stage 2, SNF (semantic noise filter, Eq. 3 of LLMSeR): the chat LLM reads the user's earliest
items and the numbered pool R_u and names ``n_pseudo`` of them; bad answers get one repair turn,
the rest is filled by semantic similarity (``llm: none`` and unsampled users: semantic ranking;
``use_snf: False``: the CCG's top-M).  Output: ``snf-<key>.jsonl``, one record per user."""
import time
from collections import Counter

import numpy as np

from recbole_sada.llmser import prompts
from recbole_sada.llmser.common import JsonlStage, LLMBatcher, rank_by_similarity, stage_key


def key(pipe, pool_key):
    s, d = pipe.settings, pipe.data
    return stage_key("snf", pool_key, s.n_pseudo, s.use_snf, pipe.llm_key() if s.use_snf else "-",
                     pipe.encoder_id(), d.text_key, prompts.SNF_VERSION, prompts.REPAIR_VERSION, s.max_users, s.llm_users,
                     s.llm_item_noun, prompts.snf_max_new_tokens(s.n_pseudo))


def run(pipe, keys, pools, emb, sampled):
    """Pseudo-prior items per user row, oldest first (item ids)."""
    from tqdm.auto import tqdm

    s, d = pipe.settings, pipe.data
    start, before = time.time(), pipe.llm_stats()
    store = JsonlStage(pipe.work_dir / f"snf-{keys['snf']}.jsonl")
    token_to_id = {str(t): i for i, t in enumerate(d.item_token)}
    m = s.n_pseudo

    def question(r):
        texts = [d.texts[i] for i in pools[r]]
        shown = d.seqs[r][: s.prompt_history]
        messages = prompts.snf_messages([d.texts[i] for i in shown[::-1]], texts, m, s.llm_item_noun)
        return messages, list(zip(pools[r], texts))

    asking = s.use_snf and pipe.chat_llm is not None
    order = [r for r in range(len(d.uids)) if asking and r in sampled and pools[r] and d.token_of_user[r] not in store]
    batcher = LLMBatcher(pipe.chat_llm, order, question, m, prompts.snf_max_new_tokens(m)) if order else None
    bar = tqdm(range(len(d.uids)), desc="SNF (pseudo items)", unit="user", disable=not pipe.show_progress)
    try:
        for r in bar:
            user = d.token_of_user[r]
            if user in store:
                continue
            pool = pools[r]
            shown = d.seqs[r][: s.prompt_history]  # earliest items, next to the pseudo slot
            record = {"user": user}
            if not pool:
                chosen, how = [], "empty_pool"
            elif not s.use_snf:
                chosen, how = pool[:m], "ccg_top"
            elif r in sampled and pipe.chat_llm is not None:
                ids, how, first = batcher.get(r)
                record["first_status"] = first
                record["llm_ranks"] = [pool.index(i) + 1 for i in ids]  # where the LLM's picks sit in R_u
                chosen = list(ids)
                if len(chosen) < min(m, len(pool)):
                    rest = [i for i in rank_by_similarity(emb, shown, pool) if i not in chosen]
                    chosen += rest[: m - len(chosen)]
                    record["filled"] = m - len(ids)
                how = "llm_" + how
            else:
                chosen = rank_by_similarity(emb, shown, pool)[:m]
                how = "semantic" + ("" if s.llm == "none" else "_unsampled")
            rank = {item: p for p, item in enumerate(pool)}
            ordered = sorted(chosen, key=lambda i: rank[i])[::-1]  # best-ranked right before v_1
            record.update(how=how, pseudo=[str(d.item_token[i]) for i in ordered])
            store.add(record)
    finally:
        store.close()
    pseudo = [[token_to_id[t] for t in store.records[d.token_of_user[r]]["pseudo"]] for r in range(len(d.uids))]
    counts = Counter(rec["how"] for rec in store.records.values())
    firsts = Counter(rec["first_status"] for rec in store.records.values() if "first_status" in rec)
    ranks = [r for rec in store.records.values() for r in rec.get("llm_ranks", [])]
    extra = {"llm_pick_mean_rank": round(float(np.mean(ranks)), 2)} if ranks else {}
    pipe.record_stage("snf", start, before, users=len(d.uids), resumed=store.resumed, outcomes=dict(counts),
                       first_answer=dict(firsts), llm_users=len(sampled) if s.use_snf else 0, **extra)
    return pseudo
