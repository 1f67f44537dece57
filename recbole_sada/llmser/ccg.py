"""Stage 1, CCG (collaborative candidate generator, Eq. 2 of LLMSeR): the backbone trained on the
reversed training sequences ranks the items that could come right before each user's first one;
the top ``n_candidates`` form the pool R_u (``use_ccg: False``: the top-N by semantic similarity
to the user's earliest items).  Output: ``pool-<key>.npy`` in the work folder."""
import time

import numpy as np

from recbole_sada.fileio import atomic_path
from recbole_sada.llmser.backbone import top_items
from recbole_sada.llmser.common import semantic_top, stage_key


def keys(pipe, base):
    """``{"ccg": key of the trained CCG, "pool": key of the pools}``; ``base`` = data key,
    backbone name and its hyperparameters."""
    s, d = pipe.settings, pipe.data
    ccg = stage_key("ccg", base, s.ccg_epochs) if s.use_ccg else stage_key("ccg-semantic", d.data_key, d.text_key, pipe.encoder_id())
    return {"ccg": ccg, "pool": stage_key(ccg, s.n_candidates, s.prompt_history)}


def run(pipe, keys, emb):
    """Candidate pools R_u (list of item-id lists, best first) for every user row."""
    s, d = pipe.settings, pipe.data
    start = time.time()
    path = pipe.work_dir / f"pool-{keys['pool']}.npy"
    if path.is_file():
        pools = np.load(path)
        pipe.record_stage("ccg", start, resumed=True)
        return [[int(i) for i in row if i > 0] for row in pools]
    excluded = [d.excluded(r) for r in range(len(d.uids))]
    if s.use_ccg:
        reversed_seqs = [seq[::-1].copy() for seq in d.seqs]
        model, loaded = pipe.trained_backbone("ccg", keys["ccg"], reversed_seqs, s.ccg_epochs)
        pools = top_items(model, reversed_seqs, excluded, s.n_candidates, pipe.config, never=d.never)
        how = "reverse-trained backbone"
    else:
        loaded = False
        pools = np.zeros((len(d.uids), s.n_candidates), dtype=np.int64)
        for r, seq in enumerate(d.seqs):
            top = semantic_top(emb, seq[: s.prompt_history], excluded[r], s.n_candidates, never=d.never)
            pools[r, : len(top)] = top
        how = "semantic top-N (use_ccg: False)"
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, pools)
    sizes = (pools > 0).sum(1)
    pipe.record_stage("ccg", start, pool=how, model_reused=loaded, mean_pool_size=round(float(sizes.mean()), 2)
                       if len(sizes) else 0)
    return [[int(i) for i in row if i > 0] for row in pools]
