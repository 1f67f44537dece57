"""SADA (Wei, "Semantic-Aware Data Augmentation for Sequential Recommendation"): BASRec made
semantic-aware with LLM embeddings.  The proposal gives no formulas; the design below is the
natural extension of BASRec, each choice with its reason.

1. **Collaborative-semantic dual-signal fusion.**  ``e_i = e_i^ID + g_i P(s_i)``: ``s_i`` the
   item's text embedding (``python -m recbole_sada.preprocess``), ``P`` a learned linear
   projection to the hidden size, ``g_i`` in [0, 1] larger for long-tail items, from the item's
   *training* interaction count ``c_i``:

   * ``fusion_gate: popularity`` (default): ``g_i = scale / (1 + (c_i / pivot) ** power)``, a fixed
     decreasing function (``fusion_gate_scale``, ``fusion_gate_pivot``, ``fusion_gate_power``):
     an item seen ``pivot`` times gets half the semantic share of an unseen one, head items ~0.
   * ``learned``: ``sigmoid(w . [log(1 + c_i), e_i^ID, P(s_i)] + b)``, a one-layer gate.
   * ``uniform``: ``g_i = scale`` for every item (ablation: fusion without the long-tail weight).

   ``fusion_output: fused`` (default) scores with the fused table too, so a tail item is both
   represented and *retrieved* through its semantics (with ``id`` only the input side changes and
   tail items keep their weak ID vectors as targets); the benchmark compares both.
   Padding (item 0) always has ``g = 0`` and a zero vector.  ``P`` starts at zero
   (``fusion_init_std: 0``): the model starts as exactly its backbone (or the trained backbone it
   fine-tunes from a checkpoint) and the semantic term grows only as far as the loss asks for it;
   a random ``P`` would instead add a random vector to every tail item at step 0, overwriting
   what a trained backbone learnt for them.  The gradient of ``P`` is non-zero from the first
   step (``dL/dP = sum_i g_i dL/de_i s_i^T``).
2. **User-sequence clustering.**  The cross-sequence partner of each sequence is drawn from users
   of the same K-means cluster of LLM user embeddings in the batch; if none, from the nearest
   cluster present (centroid distance); else uniformly.  Counts of the three cases are logged per
   epoch.  Clusters come from training interactions only.
3. **Adaptive (semantic) mixing strength.**  Where two items are mixed the mix-in share
   ``1 - lam`` is multiplied by their relevance ``r = clamp(cos(s_i, s_j), 0, 1)``
   (``relevance_mode: relu``; ``cosine01`` = ``(cos + 1) / 2`` is milder): in the single-sequence
   mix the item at each position and its reordered / substituted replacement, in the item-wise
   cross mix the two target items that meet.  ALW uses the effective share.  M-Substitute draws
   from collaborative and semantic neighbours blended with ``w = substitute_semantic_weight``:
   by rank (``substitute_blend: rank``, reciprocal-rank fusion), because the raw scores are on
   different scales (ItemCF-IUF co-occurrence has a median of ~0.1 on Beauty, sentence cosines
   sit far higher, so a raw blend, ``substitute_blend: raw``, is the semantic top-k for any
   ``w > 0``).
   Items without text have relevance 1 (plain BASRec mixing).

Switches: ``use_fusion``, ``fusion_gate``, ``use_cluster_pairing``, ``use_adaptive_mix`` and
``substitute_semantic_weight: 0`` each return that part to BASRec; with all four off the model is
BASRec exactly (same parameters, same random stream, same numbers for the same seed).

What the Beauty ablation measured (``results/beauty.md``, section "SADA ablation on Beauty ...,
3 seeds": 40 stage-2 epochs from the same SASRec, official BASRec protocol, seeds 2020-2022).
The popularity-gated fusion carries SADA's gain over BASRec: without it NDCG@10 drops 3.1%
(p = 0.032) to BASRec's level, with 8.8% less on tail items, and a learned or uniform gate is no
better.  Cluster pairing, adaptive mixing and semantic substitution are neutral on the test set.
Without adaptive mixing, validation is higher in every seed (+3%, p = 0.048), but the test is level
and tail items are 5% lower.  So the defaults keep the proposal's design, and
``use_adaptive_mix: False`` is the choice that selection on validation would make.
"""
import numpy as np
import torch
import torch.nn as nn

from recbole_sada.data.dataset import semantic_features
from recbole_sada.errors import InputError
from recbole_sada.model import augment as A
from recbole_sada.model.basrec import BASRecMixin
from recbole_sada.model.item_similarity import BLEND_MODES, BlendedSimilarity, EmbeddingCosineSimilarity

FUSION_GATES = ("popularity", "learned", "uniform")


def popularity_gate(counts, scale, pivot, power):
    """``g = scale / (1 + (c / pivot) ** power)``: 1 for unseen items, -> 0 for head items."""
    counts = counts.to(torch.float32)
    gate = scale / (1.0 + (counts / float(pivot)) ** float(power))
    gate[0] = 0.0
    return gate


def cluster_partners(clusters, nearest, generator=None):
    """Partner index per row: same cluster (another row), else nearest present cluster, else random.

    Args:
        clusters: (B,) cluster id per row, -1 = unknown.
        nearest: (K, K-1) other clusters of each cluster, nearest first.
    Returns:
        (perm (B,), case (B,)) with case 0 = same cluster, 1 = adjacent cluster, 2 = random.
    """
    B = clusters.numel()
    device = clusters.device
    eye = torch.eye(B, dtype=torch.bool, device=device)
    known = clusters >= 0
    same = (clusters.unsqueeze(0) == clusters.unsqueeze(1)) & ~eye & known.unsqueeze(1)
    noise = torch.rand(B, B, device=device, generator=generator)

    perm = _pick(noise, same)
    case = torch.full((B,), 2, dtype=torch.long, device=device)
    case[same.any(1)] = 0
    # adjacent: the nearest other cluster that has a row in this batch
    K = nearest.size(0)
    present = torch.zeros(K + 1, dtype=torch.bool, device=device)
    present[clusters[known]] = True
    need = (case == 2) & known
    if need.any() and K > 1:
        order = nearest[clusters[need]]  # (n, K-1)
        hit = present[order]
        first = torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(order[:, 0], -1))
        target = torch.where(first >= 0, order.gather(1, first.clamp(min=0).unsqueeze(1)).squeeze(1), -1)
        rows = need.nonzero().squeeze(1)
        adj = (clusters.unsqueeze(0) == target.unsqueeze(1)) & (target >= 0).unsqueeze(1)
        has = adj.any(1)
        perm[rows[has]] = _pick(noise[rows[has]], adj[has])
        case[rows[has]] = 1
    rest = case == 2
    if rest.any():
        perm[rest] = _pick(noise, ~eye)[rest] if B > 1 else 0
    return perm, case


class StepRows:
    """Vectors of the items one training step reads, each computed once by ``compute(ids)``.

    ``get(ids)`` returns the rows of ``ids`` (any shape), computing only the ids not seen yet in
    this step (sorted unique ids + ``searchsorted``: no ``n_items``-sized work, so the cost of a
    step does not grow with the catalogue)."""

    def __init__(self, compute):
        self.compute = compute
        self.ids = None
        self.rows = None

    def get(self, ids):
        flat = ids.reshape(-1)
        if self.ids is not None:
            pos = torch.searchsorted(self.ids, flat).clamp(max=self.ids.numel() - 1)
            hit = self.ids[pos] == flat
            if bool(hit.all()):
                return self.rows[pos].view(*ids.shape, -1)
            new = torch.unique(flat[~hit])
        else:
            new = torch.unique(flat)
        new_rows = self.compute(new)
        if self.ids is None:
            self.ids, self.rows = new, new_rows
        else:
            all_ids = torch.cat([self.ids, new])
            order = torch.argsort(all_ids)
            self.ids, self.rows = all_ids[order], torch.cat([self.rows, new_rows])[order]
        return self.rows[torch.searchsorted(self.ids, flat)].view(*ids.shape, -1)


def _pick(noise, candidates):
    """Index of a uniformly random True column per row (noise breaks the tie)."""
    return torch.where(candidates, noise, torch.full_like(noise, -1.0)).argmax(1)


class SADAMixin(BASRecMixin):
    """Semantic-aware BASRec (see module docstring)."""

    properties_name = "SADA"
    needs_semantic = True  # prepare() builds the semantic feature files before the dataset
    _abstract_plugin = True

    def setup_augmentation(self, config, dataset):
        self.use_fusion = bool(config["use_fusion"])
        self.fusion_gate = config["fusion_gate"]
        if self.fusion_gate not in FUSION_GATES:
            raise InputError(f"fusion_gate must be one of {FUSION_GATES}, got '{self.fusion_gate}' (--fusion_gate=popularity)")
        self.fusion_output = config["fusion_output"]
        if self.fusion_output not in ("fused", "id"):
            raise InputError(f"fusion_output must be 'fused' or 'id', got '{self.fusion_output}' (--fusion_output=fused)")
        self.use_cluster_pairing = bool(config["use_cluster_pairing"])
        self.use_adaptive_mix = bool(config["use_adaptive_mix"])
        self.relevance_mode = config["relevance_mode"]
        self.substitute_semantic_weight = float(config["substitute_semantic_weight"])
        self.substitute_blend = config["substitute_blend"] or "rank"
        if self.substitute_blend not in BLEND_MODES:
            raise InputError(f"substitute_blend must be one of {BLEND_MODES}, got {self.substitute_blend!r} (--substitute_blend=rank)")
        feats = semantic_features(dataset)  # built before the dataset by prepare(); read from the dataset
        self.register_buffer("item_semantic", feats.item_semantic.float(), persistent=False)
        self.register_buffer("user_cluster", feats.user_cluster.long(), persistent=False)
        self.register_buffer("cluster_nearest", feats.cluster_nearest.long(), persistent=False)
        super().setup_augmentation(config, dataset)  # training sequences, substitute table
        flat = np.concatenate(self._train_seqs) if self._train_seqs else np.zeros(0, dtype=np.int64)
        counts = torch.bincount(torch.as_tensor(flat, dtype=torch.long), minlength=self.n_items)[: self.n_items]
        self.register_buffer("item_train_count", counts, persistent=False)
        hidden = self.item_embedding.embedding_dim
        if self.use_fusion:
            self.semantic_proj = nn.Linear(feats.dim, hidden)
            init_std = float(config["fusion_init_std"])
            if init_std > 0:
                nn.init.normal_(self.semantic_proj.weight, std=init_std)
            else:  # zero: the model starts as its backbone / BASRec and fusion grows from the gradient
                nn.init.zeros_(self.semantic_proj.weight)
            nn.init.zeros_(self.semantic_proj.bias)
            if self.fusion_gate == "learned":
                self.gate_layer = nn.Linear(2 * hidden + 1, 1)
            else:
                scale = float(config["fusion_gate_scale"])
                if self.fusion_gate == "popularity":
                    gate = popularity_gate(counts, scale, config["fusion_gate_pivot"], config["fusion_gate_power"])
                else:
                    gate = torch.full((self.n_items,), scale)
                    gate[0] = 0.0
                self.register_buffer("fixed_gate", gate, persistent=False)
        self.pairing_counts = torch.zeros(3, dtype=torch.long)
        self._step_rows = None
        self._table_cache = None

    # ------------------------------------------------------------------ fusion
    def item_gate(self, ids, id_emb, sem_emb):
        if self.fusion_gate == "learned":
            logc = torch.log1p(self.item_train_count[ids].float()).unsqueeze(-1)
            g = torch.sigmoid(self.gate_layer(torch.cat([logc, id_emb, sem_emb], -1))).squeeze(-1)
            return g * (ids > 0)
        return self.fixed_gate[ids]

    def fuse(self, ids, id_emb):
        if not self.use_fusion:
            return id_emb
        sem = self.semantic_proj(self.item_semantic[ids])
        return id_emb + self.item_gate(ids, id_emb, sem).unsqueeze(-1) * sem * (ids > 0).unsqueeze(-1)

    def fused_rows(self, ids):
        """Fused vectors of ``ids`` (any shape); within a training step each item is fused once."""
        if self._step_rows is not None:
            return self._step_rows.get(ids)
        return self.fuse(ids, self.item_embedding(ids))

    def embed_items(self, item_seq):
        return self.fused_rows(item_seq)

    def item_vectors(self, ids):
        if not self.use_fusion or self.fusion_output == "id":
            return self.item_embedding(ids)
        return self.fused_rows(ids)

    def output_item_embedding(self):
        """The whole scoring table.  Fused once per training step (CE) and once per evaluation
        (the cache is keyed on the parameters' versions, so any update or reload rebuilds it)."""
        table = super().output_item_embedding()
        if not self.use_fusion or self.fusion_output == "id":
            return table
        key = tuple((id(p), p._version) for p in self._fusion_parameters())
        cache = self._table_cache
        if cache is not None and cache[0] == key and cache[1] == torch.is_grad_enabled():
            return cache[2]
        ids = torch.arange(table.size(0), device=table.device)
        full = self.fuse(ids, table)
        if self._step_rows is not None or not torch.is_grad_enabled():
            self._table_cache = (key, torch.is_grad_enabled(), full)
        return full

    def _fusion_parameters(self):
        yield self.item_embedding.weight
        yield from self.semantic_proj.parameters()
        if self.fusion_gate == "learned":
            yield from self.gate_layer.parameters()

    def calculate_loss(self, interaction):
        """One training step with each touched item fused once (BCE/BPR: only the rows the step
        reads, the inputs, targets and their substitution candidates first, then what the step
        adds; CE: the whole table once), instead of the whole table in every loss term."""
        if not self.use_fusion:
            return super().calculate_loss(interaction)
        self._step_rows = StepRows(lambda ids: self.fuse(ids, self.item_embedding(ids)))
        try:
            if self.loss_type != "CE":
                item_seq, _, targets, _ = self.training_batch(interaction)
                first = [item_seq.reshape(-1), targets.reshape(-1)]
                if self.use_single and "substitute" in self.single_ops and self.substitute_table.size(0) > 1:
                    first.append(self.substitute_table[item_seq].reshape(-1))
                self._step_rows.get(torch.cat(first))
            return super().calculate_loss(interaction)
        finally:
            self._step_rows = None
            self._table_cache = None

    # ------------------------------------------------------------------ semantic similarity
    def build_substitute_table(self, dataset):
        collab = self.collaborative_similarity()
        if self.substitute_semantic_weight <= 0:
            return collab.topk(self.substitute_topk)
        semantic = EmbeddingCosineSimilarity(self.item_semantic)
        return BlendedSimilarity(collab, semantic, self.substitute_semantic_weight,
                                 mode=self.substitute_blend).topk(self.substitute_topk)

    def relevance(self, a, b):
        """Semantic relevance of the items ``a`` and ``b`` (broadcastable id tensors), computed at the
        pairs of two real items only: a padding id has the zero text vector, whose relevance is 1
        by definition (:func:`semantic_relevance`), so the other pairs are 1 without gathering
        ``d``-wide rows for them (most of a Beauty batch is padding)."""
        a, b = torch.broadcast_tensors(a, b)
        out = torch.ones(a.shape, device=a.device)
        real = (a > 0) & (b > 0)
        if bool(real.any()):
            out[real] = A.semantic_relevance(self.item_semantic[a[real]], self.item_semantic[b[real]],
                                             mode=self.relevance_mode)
        return out

    def single_relevance(self, item_seq, aug_seq):
        return self.relevance(item_seq, aug_seq) if self.use_adaptive_mix else None

    def cross_relevance(self, targets, partner_targets):
        return self.relevance(targets, partner_targets) if self.use_adaptive_mix else None

    # ------------------------------------------------------------------ clustering
    def cross_partners(self, interaction, batch_size, device):
        if not self.use_cluster_pairing:
            return super().cross_partners(interaction, batch_size, device)
        clusters = self.user_cluster[interaction[self.USER_ID]]
        perm, case = cluster_partners(clusters, self.cluster_nearest)
        self.pairing_counts += torch.bincount(case.cpu(), minlength=3)
        return perm

    def pop_epoch_stats(self):
        """BASRec's augmentation similarity plus how cross-sequence partners were found."""
        stats = super().pop_epoch_stats()
        if self.use_cluster_pairing:
            same, adjacent, rand = (int(x) for x in self.pairing_counts)
            self.pairing_counts.zero_()
            stats.update({"pair_same_cluster": same, "pair_adjacent_cluster": adjacent, "pair_random": rand})
        return stats
