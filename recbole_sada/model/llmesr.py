"""LLM-ESR (Liu et al., "LLM-ESR: Large Language Models Enhancement for Long-tailed Sequential
Recommendation", NeurIPS 2024) as a baseline of the plugin, over any causal plugin backbone.

Written once as :class:`LLMESRMixin`; ``LLMESR<Backbone>`` classes come from the grid
(:mod:`recbole_sada.model.grid`).  The semantic features are the plugin's
(``python -m recbole_sada.preprocess``: ``<dataset>.itememb`` / ``<dataset>.useremb``, built from
the training interactions only), the same ones SADA reads, so LLM-ESR and SADA compare on the same
text, split and protocol.

**Dual-view modelling** (Sec. 3.2 of the paper).  Two item tables of width ``D``
(``embedding_size``):

* semantic view: the frozen semantic table ``S`` (``freeze_semantic: True``, as the paper's runs)
  through a trainable two-layer adapter ``A(s) = W2 (W1 s)`` (``d -> d / 2 -> D``, linear, as the
  paper's code);
* collaborative view: an ID table initialised from a PCA of ``S`` to ``D`` dimensions
  (``id_init: pca``; ``random`` = the backbone's own initialisation), then trained.

With ``use_cross_att: True`` each view is first re-expressed by multi-head cross-attention over the
other (queries from the other view, keys and values from this one, as the paper's code; no
residual).  Here the cross-attention is *causal* and padding-masked: position ``t`` attends to
positions ``<= t`` of the other view, so training on the next item at every position
(``train_mode: sequence``) cannot read the future; padded positions come out as zeros.  Both views
then pass the *same* backbone encoder, and a user is the concatenation ``[h_id ; h_sem]`` (``2D``);
items are scored by the concatenation ``[e_id ; A(s)]``.

**Retrieval-augmented self-distillation** (Sec. 3.3).  At init, each user's ``sim_user_num`` most
similar users by cosine of the semantic user embeddings (the user's own text excluded; only users
with training items and a non-zero embedding are candidates).  Per training batch, the teacher of
a user is the mean of the dual-view representations of those users' *training* sequences (the
last ``MAX_ITEM_LIST_LENGTH`` items of each, encoded by the current model without gradient), and

    loss = rec_loss + distill_weight * MSE(student, teacher)   (user_sim_func: kd, the paper's runs)

``distill_weight`` is the paper's alpha, named apart from BASRec's ``alpha`` (its Beta-mixup
parameter) so that a preset shared by the Beauty tables cannot set one for the other.

The student is the representation at the last real position of the training input.  No valid or
test item is ever read: the neighbours' sequences come from the train split and the user
embeddings from training text.  ``use_distill: False`` is the "w/o self-distillation" ablation.

Causality, where the paper's public code differs (read at commit 356d34f of liuqidong07/LLM-ESR):
its cross-attention masks padding only, and in its SASRec backbone the causal mask of the
self-attention is commented out, while it trains next-item targets at every position
(``SASRec_seq``).  Position ``t`` there sees item ``t + 1``, the item it is trained to predict,
through both attentions; only the last position is trained as it is tested.  The plugin keeps both
attentions causal (a model must not read its training targets), so its numbers need not match
that code's.

Not built: the paper's optional contrastive item regulariser (``item_reg``, off in its Beauty
runs) and the BERT4Rec variant (the mixin trains next-item targets; BERT4Rec is cloze-trained, so
``LLMESRBERT4Rec`` is refused by the grid with that reason).  Differences from the paper's setting
that a reader must know: the semantic table here is all-MiniLM-L6-v2 (384-d) unless another encoder
was configured, not the paper's LLM embeddings (1536-d); the cross-attention sits before the
backbone's position embedding (the plugin's backbones add positions inside ``encode``), the
paper's code after it.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_sada.data.dataset import semantic_features, training_sequences
from recbole_sada.errors import InputError
from recbole_sada.model.backbones.grouping import gather_last
from recbole_sada.model.semantic_adapter import SemanticAdapterMixin

USER_SIM_FUNCS = ("kd",)
TEACHERS = ("batch", "epoch")
ID_INITS = ("pca", "random")


def pca_table(matrix, dim, fit_mask=None):
    """Rows of ``matrix`` (n, d) projected on ``dim`` leading principal components.

    The components (and the mean) are fit on the rows of ``fit_mask`` only (the model passes the
    items seen in training, so items that occur only in valid/test shape nothing) and applied to
    every row.  Row 0 (padding) and all-zero rows (items without text) are never fit on and come
    out as zeros.  When ``dim`` exceeds the rank the extra columns are zeros.
    """
    X = np.asarray(matrix, dtype=np.float64)
    out = np.zeros((X.shape[0], dim), dtype=np.float32)
    real = np.abs(X).sum(1) > 0
    real[0] = False
    fit = real if fit_mask is None else real & np.asarray(fit_mask, dtype=bool)
    if fit.sum() < 2:
        return out
    mean = X[fit].mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(X[fit] - mean, full_matrices=False)
    k = min(dim, vt.shape[0])
    out[real, :k] = ((X[real] - mean) @ vt[:k].T).astype(np.float32)
    return out


def similar_users(user_semantic, candidates, k, chunk=2048):
    """(n_users, k) ids of each user's ``k`` most similar candidate users by cosine, -1 where
    fewer exist.  A user is never its own neighbour; rows of non-candidates are -1 too.

    Args:
        user_semantic: (n_users, d) float tensor.
        candidates: (n_users,) bool tensor, the users that may be retrieved.
    """
    n = user_semantic.size(0)
    out = torch.full((n, k), -1, dtype=torch.long)
    if k == 0 or int(candidates.sum()) < 2:
        return out
    U = F.normalize(user_semantic.float(), dim=1)
    cand = torch.nonzero(candidates).squeeze(1)
    C = U[cand]
    kk = min(k, len(cand) - 1)
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        sim = U[rows] @ C.t()
        sim[rows.unsqueeze(1) == cand.unsqueeze(0)] = float("-inf")  # not oneself
        top = sim.topk(kk, dim=1).indices
        out[rows, :kk] = cand[top]
    out[~candidates] = -1
    return out


class CausalCrossAttention(nn.Module):
    """Multi-head attention of one view's positions (queries) over another's (keys, values),
    position ``t`` seeing positions ``<= t`` that are not padding; padded queries give zeros."""

    def __init__(self, hidden, n_heads):
        super().__init__()
        if hidden % n_heads:
            raise InputError(f"cross_att_heads ({n_heads}) must divide embedding_size ({hidden})")
        self.n_heads, self.head = n_heads, hidden // n_heads
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.k = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, query, key_value, item_seq):
        B, L, D = query.shape
        split = lambda x: x.view(B, L, self.n_heads, self.head).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(query)), split(self.k(key_value)), split(self.v(key_value))
        real = item_seq > 0
        allowed = torch.tril(torch.ones(L, L, dtype=torch.bool, device=query.device)).unsqueeze(0) & real.unsqueeze(1)
        allowed = allowed | ~real.unsqueeze(2)  # padded query rows: anything (zeroed below), no NaN
        att = (q @ k.transpose(-1, -2)) / self.head ** 0.5
        att = att.masked_fill(~allowed.unsqueeze(1), float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, L, D)
        return self.out(y) * real.unsqueeze(-1)


class LLMESRMixin(SemanticAdapterMixin):
    """Dual-view backbone with retrieval-augmented self-distillation (see module docstring)."""

    properties_name = "LLMESR"
    # trained on next-item targets at every position: causal backbones only
    needs_causal = True
    causal_reason = "its two views and the distilled user representation are"
    _abstract_plugin = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.setup_llmesr(config, dataset)

    def setup_llmesr(self, config, dataset):
        self.USER_ID = config["USER_ID_FIELD"]
        self.distill_weight = float(config["distill_weight"])
        if not self.distill_weight >= 0:
            raise InputError(f"distill_weight must be >= 0, got {self.distill_weight} (--distill_weight=0.1)")
        self.use_distill = bool(config["use_distill"])
        self.user_sim_func = config["user_sim_func"]
        if self.user_sim_func not in USER_SIM_FUNCS:
            raise InputError(f"user_sim_func must be one of {USER_SIM_FUNCS}, got {self.user_sim_func!r} (--user_sim_func=kd)")
        self.sim_user_num = int(config["sim_user_num"])
        if self.sim_user_num < 1:
            raise InputError(f"sim_user_num must be >= 1, got {self.sim_user_num} (--sim_user_num=10)")
        self.distill_teacher = config["distill_teacher"]
        if self.distill_teacher not in TEACHERS:
            raise InputError(f"distill_teacher must be one of {TEACHERS}, got {self.distill_teacher!r} (--distill_teacher=batch)")
        self._teacher_cache = None
        id_init = config["id_init"]
        if id_init not in ID_INITS:
            raise InputError(f"id_init must be one of {ID_INITS}, got {id_init!r} (--id_init=pca)")
        feats = semantic_features(dataset)  # built before the dataset by prepare(); read from the dataset
        hidden = self.item_embedding.embedding_dim
        sem = feats.item_semantic.float()
        self.setup_semantic_adapter(feats, hidden, freeze=bool(config["freeze_semantic"]))
        self.use_cross_att = bool(config["use_cross_att"])
        if self.use_cross_att:
            heads = int(config["cross_att_heads"])
            self.sem2id = CausalCrossAttention(hidden, heads)  # re-expresses the ID view
            self.id2sem = CausalCrossAttention(hidden, heads)  # re-expresses the semantic view
        # neighbours and their training sequences (train split only)
        L = self.max_seq_length
        uids, seqs = training_sequences(dataset)
        if id_init == "pca":  # components fit on the items seen in training only
            seen = np.zeros(sem.size(0), dtype=bool)
            seen[np.concatenate(seqs)] = True
            with torch.no_grad():
                self.item_embedding.weight.copy_(torch.as_tensor(pca_table(sem.numpy(), hidden, seen)))
        n_users = feats.user_semantic.size(0)
        table = torch.zeros(n_users, L, dtype=torch.long)
        lengths = torch.zeros(n_users, dtype=torch.long)
        for u, s in zip(uids.tolist(), seqs):
            s = s[-L:]
            table[u, : len(s)] = torch.as_tensor(s)
            lengths[u] = len(s)
        candidates = (lengths > 0) & (feats.user_semantic.abs().sum(1) > 0)
        self.register_buffer("neighbour_seq", table, persistent=False)
        self.register_buffer("neighbour_len", lengths, persistent=False)
        self.register_buffer("neighbours", similar_users(feats.user_semantic, candidates, self.sim_user_num), persistent=False)

    # ------------------------------------------------------------------ views
    def encode_views(self, item_seq, item_seq_len):
        """(B, L, 2D): ``[h_id ; h_sem]`` at every position.

        Cross-attention and encoder run together over the batch's length groups (``grouped_encoding``,
        exact: the cross-attention is causal and padding-masked, like the backbones it may group),
        so the cross-attention pays for real items only, as the encoder does."""
        views = torch.cat([self.item_embedding(item_seq), self.semantic_vectors(item_seq)], dim=-1)
        return self.encode_grouped(views, item_seq, item_seq_len, encode=self.encode_dual)

    def encode_dual(self, views, item_seq, item_seq_len):
        """(B, L, 2D) ``[id ; sem]`` embeddings -> (B, L, 2D) ``[h_id ; h_sem]``: the cross-attention,
        then both views through the shared encoder in one call of 2B rows."""
        id_emb, sem_emb = views.chunk(2, dim=-1)
        if self.use_cross_att:
            id_emb, sem_emb = self.sem2id(sem_emb, id_emb, item_seq), self.id2sem(id_emb, sem_emb, item_seq)
        B = views.size(0)
        H = self.encode(torch.cat([id_emb, sem_emb], 0), item_seq.repeat(2, 1), item_seq_len.repeat(2))
        return torch.cat([H[:B], H[B:]], dim=-1)

    def forward(self, item_seq, item_seq_len):
        return gather_last(self.encode_views(item_seq, item_seq_len), item_seq_len)

    def output_item_embedding(self):
        """(n_items, 2D) ``[e_id ; A(s)]``; at evaluation built once and reused until training resumes."""
        return self.eval_cached(lambda: self.view_masked(torch.cat([self.item_embedding.weight, self.adapted_table()], dim=-1)))

    # ------------------------------------------------------------------ one view alone (diagnostic)
    score_view = None  # None = both views (training and the method); "id" / "semantic": see set_score_view

    def set_score_view(self, view):
        """Score items with one view only (``"id"`` or ``"semantic"``; ``None`` = both): the other
        half of the ``[e_id ; A(s)]`` table is zeroed, so a score is ``e_id . h_id`` or ``A(s) .
        h_sem``.  A test-time diagnostic of a trained model (``benchmarks/eval_checkpoint.py --view``):
        which view ranks the items.  Not a config key: training always scores with both."""
        if view not in (None, "id", "semantic"):
            raise InputError(f"score view must be 'id', 'semantic' or None, got {view!r}")
        self.score_view = view
        self._eval_table = None

    def view_masked(self, table):
        if self.score_view is None:
            return table
        D = self.item_embedding.embedding_dim
        keep = torch.zeros(table.size(-1), dtype=table.dtype, device=table.device)
        keep[:D] = float(self.score_view == "id")
        keep[D:] = float(self.score_view == "semantic")
        return table * keep

    def view_isotropy(self):
        """``{"id": c, "semantic": c, "semantic_input": c}``: the mean cosine between two item rows
        of each view's table, and of the frozen table ``S`` before the adapter (all pairs of the real
        items, self-pairs included: the squared norm of the mean unit row).  Near 0 for a
        spread-out table; near 1 when every item points the same way, so that a view's scores
        differ little between items."""
        with torch.no_grad():
            out = {}
            for name, table in (("id", self.item_embedding.weight), ("semantic", self.adapted_table()),
                                ("semantic_input", self.semantic_table.weight)):
                rows = table[1:]
                rows = rows[rows.norm(dim=1) > 0]
                out[name] = float(F.normalize(rows, dim=1).mean(0).pow(2).sum()) if len(rows) else float("nan")
            return out

    def item_vectors(self, ids):
        return self.view_masked(torch.cat([self.item_embedding(ids), self.semantic_vectors(ids)], dim=-1))

    # ------------------------------------------------------------------ training
    def user_representations(self, users, batch_size=1024):
        """(len(users), 2D) representations of ``users``' training sequences, without gradient."""
        with torch.no_grad():
            return torch.cat([self.forward(self.neighbour_seq[chunk], self.neighbour_len[chunk])
                              for chunk in users.split(batch_size)]) if len(users) else \
                torch.zeros(0, 2 * self.item_embedding.embedding_dim, device=users.device)

    def on_epoch_start(self, epoch_idx):
        """``distill_teacher: epoch``: every retrievable user's representation, computed once per
        epoch by the model as it stands (eval mode: no dropout), read by :meth:`teacher`."""
        if not (self.use_distill and self.distill_teacher == "epoch"):
            return
        was_training = self.training
        self.eval()
        users = torch.unique(self.neighbours[self.neighbours >= 0])
        cache = torch.zeros(self.neighbour_seq.size(0), 2 * self.item_embedding.embedding_dim,
                            device=self.neighbour_seq.device)
        cache[users] = self.user_representations(users)
        self._teacher_cache = cache
        self.train(was_training)

    def teacher(self, user_ids):
        """(B, 2D) mean representation of each user's neighbours, and (B,) whether it has any.

        ``distill_teacher: batch`` (the paper's code): the neighbours are encoded by the current
        model on every batch (training mode, no gradient; about ``sim_user_num`` times the
        encoder work of the batch itself).  ``epoch``: read from the cache that
        :meth:`on_epoch_start` fills (stale by at most one epoch; one encoder pass over the
        users per epoch)."""
        nb = self.neighbours[user_ids]  # (B, k)
        valid = nb >= 0
        has = valid.any(1)
        if not bool(has.any()):
            return None, has
        if self.distill_teacher == "epoch":
            if self._teacher_cache is None:
                self.on_epoch_start(0)
            reps = self._teacher_cache[nb[valid]]
        else:
            unique, inverse = torch.unique(nb[valid], return_inverse=True)
            reps = self.user_representations(unique)[inverse]
        full = torch.zeros(*nb.shape, reps.size(-1), device=reps.device, dtype=reps.dtype)
        full[valid] = reps
        mean = full.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        return mean, has

    def calculate_loss(self, interaction):
        item_seq, item_seq_len, targets, mask = self.training_batch(interaction)
        H = self.encode_views(item_seq, item_seq_len)
        negatives = None if self.loss_type == "CE" else self.sample_negatives(targets, item_seq)
        rec = self.rec_loss(self.select_outputs(H, item_seq_len, targets), targets, mask, negatives=negatives)
        losses = {"loss_rec": rec + self.regularization()}
        if self.use_distill:
            mean, has = self.teacher(interaction[self.USER_ID])
            if mean is None:  # no row of the batch has neighbours: a zero term keeps the loss names
                losses["loss_distill"] = H.sum() * 0.0
            else:
                student = gather_last(H, item_seq_len)[has]
                losses["loss_distill"] = self.distill_weight * F.mse_loss(student, mean[has])
        return losses
