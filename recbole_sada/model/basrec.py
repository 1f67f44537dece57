"""BASRec (Dang et al., AAAI 2025): balanced data augmentation for sequential recommendation.

Written once as :class:`BASRecMixin` over any plugin backbone (it only uses the backbone hooks of
:mod:`recbole_sada.model.backbones.base`); ``BASRec<Backbone>`` are one-line classes.

Stage 2 loss (Eq. 16), each term the mean over the samples it generates:

* ``loss_main`` (Eq. 13): the backbone loss on the original sequences.
* ``loss_ssa`` (Eq. 4-9, 14): for each operator (M-Reorder, M-Substitute) the item-embedding
  sequence of the augmented copy is mixed with the original, ``E_in = lam E + (1 - lam) E'``,
  ``lam ~ Beta(alpha, alpha)`` per sequence, encoded, and scored against the original targets,
  each sequence weighted by ALW (Eq. 9).  ``n_single_views`` such view sets per step.
* ``loss_csa`` (Eq. 10-12, 15): encoder outputs of the original sequences are mixed across the
  batch (item-wise weights ``B x T``, feature-wise ``B x D``, both ~ Beta(alpha, alpha)), the
  positive and negative item embeddings with the same weights; ``n_item_mixes`` item-wise and
  ``n_feature_mixes`` feature-wise mixes per step (mix ``i`` of both kinds share one partner draw).
* ``aug_reduce``: each of the two terms is the ``mean`` over its views / mixes, or their ``sum``.

Paper vs the official code (github.com/KingGugu/BASRec, the runs behind Table 2), both reachable
by config; ``properties/preset/basrec_official.yaml`` sets the code's values:

=======================  ===================================  =====================================
                         paper (and this module's defaults)    official code (Beauty README command)
=======================  ===================================  =====================================
single-sequence views    one per operator (``single_mode:       ``n_pairs`` 2 x 2 views, a random
                         all``), ``n_single_views: 1``         operator each: ``single_mode: sample``,
                                                               ``n_single_views: 4``
cross mixes              1 item-wise + 1 feature-wise          ``n_whole_level`` 3 + 3
terms                    ``aug_reduce: mean``                  every term summed, weight 1 (``sum``)
ALW                      Eq. 9 per sequence (``minmax``;       each view's mean loss x the batch sum
                         ``log_minmax`` is the default here)   of the min-max weights (``batch_sum``)
operator counts          ``ceil(rate * len)``                   ``int(rate * len)``; M-Reorder never
                                                               moves the last item, M-Substitute
                                                               ``max(int(rate * len), 1)`` top-1
                                                               (``aug_rounding: official``,
                                                               ``substitute_topk: 1``)
=======================  ===================================  =====================================

The official cross mix also mixes with the partner's padding slots where the partner is shorter;
here the original is kept there (below).

Choices where the paper is silent (and why):

* M-Substitute draws from the top ``substitute_topk`` items of an ItemCF-IUF co-occurrence table
  built from the training split only (CoSeRec, which the paper cites); the table is pluggable
  (:meth:`BASRecMixin.build_substitute_table`).
* In ``sequence`` mode cross-sequence mixing aligns sequences at their *last* item (the BASRec and
  S3-Rec code left-pads, so position ``t`` from the end meets position ``t`` from the end); where
  the partner has no target at a position, the original is kept.
* With ``loss_type: CE`` the mixed positive is a mixed label: ``lam_t CE(h, i) + (1 - lam_t) CE(h,
  j)`` with ``lam_t`` the mean weight at that position (exact for item-wise mixing); both terms
  come from one full-catalogue logits matrix per mix (:meth:`BASRecMixin.mixed_label_ce`).
* Negatives (BCE/BPR) are sampled once per step and shared by all three losses.
* ALW (Eq. 9) min-max normalises ``1 / (rate * lam)`` over the batch.  With Beta(alpha, alpha),
  alpha < 1, a single tiny ``lam`` sets the maximum and nearly every other weight becomes ~0
  (median ~1e-5 at alpha = 0.4), which switches ``loss_ssa`` off in practice.  The default
  ``alw_norm: log_minmax`` normalises ``log(1 / (rate * lam))`` instead (same order, weights
  spread over [0, 1]); ``alw_norm: minmax`` is Eq. 9 literally.

No learnable parameters are added: the model has exactly the backbone's parameters.
Inference never augments (``calculate_loss`` only runs in training).
"""
import numpy as np
import torch
import torch.nn.functional as F

from recbole_sada.data.dataset import training_sequences
from recbole_sada.evaluation.relevance import augmentation_similarity
from recbole_sada.errors import InputError
from recbole_sada.model import augment as A
from recbole_sada.model.item_similarity import CooccurrenceSimilarity


class BASRecMixin:
    """Single- and cross-sequence augmentation over a plugin backbone (see module docstring)."""

    properties_name = "BASRec"
    # single-sequence views and cross mixes are trained on next-item targets: causal backbones only
    needs_causal = True
    _abstract_plugin = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.setup_augmentation(config, dataset)

    def setup_augmentation(self, config, dataset):
        """Read the method's config and build what the augmentation needs (after the backbone)."""
        self.alpha = float(config["alpha"])
        self.rate_min, self.rate_max = float(config["rate_min"]), float(config["rate_max"])
        if not 0.0 <= self.rate_min <= self.rate_max <= 1.0:
            raise InputError(
                f"need 0 <= rate_min <= rate_max <= 1, got rate_min={self.rate_min}, rate_max={self.rate_max}"
                " (set --rate_min / --rate_max)"
            )
        self.n_single_views = int(config["n_single_views"])
        self.n_item_mixes, self.n_feature_mixes = int(config["n_item_mixes"]), int(config["n_feature_mixes"])
        self.aug_reduce = config["aug_reduce"]
        self.single_batched = bool(config["single_batched"])
        if self.aug_reduce not in ("mean", "sum"):
            raise InputError(f"aug_reduce must be 'mean' or 'sum', got {self.aug_reduce!r} (--aug_reduce=mean)")
        self.aug_rounding = config["aug_rounding"]
        if self.aug_rounding not in A.ROUNDINGS:
            raise InputError(f"aug_rounding must be one of {A.ROUNDINGS}, got {self.aug_rounding!r} (--aug_rounding=ceil)")
        if min(self.n_single_views, self.n_item_mixes, self.n_feature_mixes) < 0:
            raise InputError("n_single_views, n_item_mixes and n_feature_mixes must be >= 0")
        self.use_single = bool(config["use_single"])
        self.use_alw = bool(config["use_alw"])
        self.alw_norm = config["alw_norm"]
        if self.alw_norm not in ("minmax", "log_minmax", "batch_sum"):
            raise InputError(f"alw_norm must be minmax, log_minmax or batch_sum, got {self.alw_norm!r} (--alw_norm=log_minmax)")
        self.use_cross = bool(config["use_cross"])
        self.nonlinear = bool(config["nonlinear"])
        self.single_ops = list(config["single_ops"])
        self.single_mode = config["single_mode"]
        if self.single_mode not in ("all", "sample"):
            raise InputError(f"single_mode must be 'all' or 'sample', got {self.single_mode!r} (--single_mode=all)")
        unknown_ops = [op for op in self.single_ops if op not in ("reorder", "substitute")]
        if unknown_ops:
            raise InputError(f"single_ops: unknown operator(s) {unknown_ops}; use [reorder, substitute] or a subset")
        self.substitute_topk = int(config["substitute_topk"])
        self._similarity = {}
        # training sequences of the train split only (valid/test items never enter)
        self._train_uids, self._train_seqs = training_sequences(dataset)
        table = self.build_substitute_table(dataset) if "substitute" in self.single_ops else None
        self.register_buffer("substitute_table", table if table is not None else torch.zeros(1, 1, dtype=torch.long),
                             persistent=False)

    # ------------------------------------------------------------------ pluggable pieces
    def collaborative_similarity(self):
        return CooccurrenceSimilarity(self._train_seqs, self.n_items)

    def build_substitute_table(self, dataset):
        """``(n_items, substitute_topk)`` ids of correlated items (row 0 and gaps are 0)."""
        return self.collaborative_similarity().topk(self.substitute_topk)

    def single_relevance(self, item_seq, aug_seq):
        """Per-position relevance (B, L) in [0, 1] scaling the single-sequence mix (BASRec: none)."""
        return None

    def cross_partners(self, interaction, batch_size, device):
        """Partner index (B,) of each sequence for cross-sequence mixing (BASRec: a shuffle)."""
        return A.shuffle_partners(batch_size, device)

    def cross_relevance(self, targets, partner_targets):
        """Per-target relevance (B, T) scaling the item-wise cross mix (BASRec: none)."""
        return None

    # ------------------------------------------------------------------ augmentation
    def augment_sequence(self, op, item_seq, item_seq_len, rate):
        if op == "reorder":
            return A.m_reorder(item_seq, item_seq_len, rate, rounding=self.aug_rounding)
        if op == "substitute":
            return A.m_substitute(item_seq, item_seq_len, rate, self.substitute_table, rounding=self.aug_rounding)
        raise ValueError(f"unknown single-sequence operator '{op}' (use reorder, substitute)")

    # ------------------------------------------------------------------ augmentation similarity
    def _record_similarity(self, name, H, H_aug, mask):
        """Accumulate the mean cosine between original and augmented outputs (BASRec Table 6)."""
        value = augmentation_similarity(H.detach(), H_aug.detach(), mask)
        if torch.isfinite(value):
            total, count = self._similarity.get(name, (0.0, 0))
            self._similarity[name] = (total + float(value), count + 1)

    def pop_epoch_stats(self):
        """Per-epoch mean cosine similarity of original vs augmented outputs, per module."""
        stats = {f"sim_{name}": total / max(count, 1) for name, (total, count) in self._similarity.items()}
        self._similarity = {}
        return stats

    def single_augmented_views(self, item_seq, item_seq_len):
        """Yield ``(name, rate, augmented sequence)``, ``n_single_views`` times a view set: one view
        per operator (``single_mode: all``, the paper: one encoder pass each), or one view where each
        sequence gets one operator drawn uniformly (``single_mode: sample``: one encoder pass, every
        operator still trained on ~1/len(single_ops) of the batch; the official code's views)."""
        for _ in range(self.n_single_views):
            yield from self._one_view_set(item_seq, item_seq_len)

    def _one_view_set(self, item_seq, item_seq_len):
        B = item_seq.size(0)
        if self.single_mode == "all" or len(self.single_ops) == 1:
            for op in self.single_ops:  # a generator: the caller's draws interleave as in a plain loop
                rate = A.sample_rate(B, self.rate_min, self.rate_max, item_seq.device)
                yield op, rate, self.augment_sequence(op, item_seq, item_seq_len, rate)
            return
        views = []
        for op in self.single_ops:
            rate = A.sample_rate(B, self.rate_min, self.rate_max, item_seq.device)
            views.append((rate, self.augment_sequence(op, item_seq, item_seq_len, rate)))
        choice = torch.randint(len(views), (B,), device=item_seq.device)
        rows = torch.arange(B, device=item_seq.device)
        rate = torch.stack([v[0] for v in views], 1)[rows, choice]
        aug = torch.stack([v[1] for v in views], 1)[rows, choice]
        yield "single", rate, aug

    def single_sequence_loss(self, E, item_seq, item_seq_len, targets, mask, negatives, H=None):
        """``loss_ssa``.  With ``single_batched`` every view of the step goes through the encoder in
        one call (views stacked along the batch: larger matmuls, a fraction of the kernel launches;
        the same function, but the dropout masks and augmentation draws come in a different order,
        so a seed gives other numbers than the one-pass-per-view loop)."""
        B = item_seq.size(0)
        seq_mask = item_seq > 0
        views = []
        for op, rate, aug_seq in self.single_augmented_views(item_seq, item_seq_len):
            lam = A.sample_lambda(B, self.alpha, item_seq.device)
            relevance = self.single_relevance(item_seq, aug_seq)
            E_in, share = A.mix_representations(E, self.embed_items(aug_seq), lam, relevance, seq_mask)
            if not self.single_batched:
                views.append((op, rate, share, self.encode_grouped(E_in, item_seq, item_seq_len)))
            else:
                views.append((op, rate, share, E_in))
        if self.single_batched and views:
            n = len(views)
            H_all = self.encode_grouped(torch.cat([v[3] for v in views]), item_seq.repeat(n, 1), item_seq_len.repeat(n))
            views = [(op, rate, share, H_v) for (op, rate, share, _), H_v in zip(views, H_all.chunk(n))]
        losses = []
        for op, rate, share, H_in in views:
            weight = None
            if self.use_alw:
                weight = A.alw_weights(rate, A.effective_lambda(share, item_seq_len), norm=self.alw_norm).to(E.dtype)
            H_in = self.select_outputs(H_in, item_seq_len, targets)
            if H is not None:
                self._record_similarity(op, H, H_in, mask)
            losses.append(self.rec_loss(H_in, targets, mask, weight=weight, negatives=negatives))
        return self.reduce_terms(losses)

    def reduce_terms(self, losses):
        """``aug_reduce``: the mean of the augmentation terms (default) or their sum (official code)."""
        return sum(losses) if self.aug_reduce == "sum" else sum(losses) / len(losses)

    def partner_positions(self, mask, perm):
        """For each (row, position) the partner's position aligned at the last item, and validity."""
        lengths = mask.sum(1)
        T = mask.size(1)
        t = torch.arange(T, device=mask.device).unsqueeze(0)
        idx = t + (lengths[perm] - lengths).unsqueeze(1)
        valid = mask & (idx >= 0) & (idx < lengths[perm].unsqueeze(1))
        return idx.clamp(0, T - 1), valid

    def cross_sequence_loss(self, interaction, H, targets, mask, negatives):
        """``loss_csa``.  The weights are drawn for the whole (B, T) grid as the equations read,
        but the mixing itself runs on the real targets only (a flat (N, D) list of the positions
        under ``mask``): the same numbers, without the padding (8.7x the real items on Beauty)."""
        B, T, D = H.shape
        rows, cols = mask.nonzero(as_tuple=True)
        N = rows.numel()
        H_r = H[rows, cols]
        ones = torch.ones(1, N, dtype=torch.bool, device=H.device)
        tgt_r = targets[rows, cols]
        if self.loss_type != "CE":  # one lookup per step; every mix indexes these grids
            pos_grid, neg_grid = self.item_vectors(targets), self.item_vectors(negatives)
            pos_r, neg_r = pos_grid[rows, cols], neg_grid[rows, cols]
        losses = []
        for i in range(max(self.n_item_mixes, self.n_feature_mixes)):
            if self.nonlinear:
                modes = [m for m, n in (("item", self.n_item_mixes), ("feature", self.n_feature_mixes)) if i < n]
            else:  # w/o NL: one linear mix per slot
                modes = ["linear"]
            perm = self.cross_partners(interaction, B, H.device)
            idx, valid = self.partner_positions(mask, perm)
            tgt_p = targets[perm].gather(1, idx)
            relevance = self.cross_relevance(targets, tgt_p)
            p_rows, p_cols, v = perm[rows], idx[rows, cols], valid[rows, cols].unsqueeze(-1)
            H_p = H[p_rows, p_cols]
            for mode in modes:
                lam = A.mixup_weights(mode, B, T, D, self.alpha, H.device, relevance=relevance if mode == "item" else None)
                lam = torch.where(v, lam.expand(B, T, D)[rows, cols], torch.ones_like(H_r))
                H_mix = A.mix_pair(lam, H_r, H_p)
                self._record_similarity(f"cross_{mode}", H_r.unsqueeze(0), H_mix.unsqueeze(0), ones)
                if self.loss_type == "CE":
                    loss = self.mixed_label_ce(H_mix, tgt_r, tgt_p[rows, cols], v.view(N), lam.mean(-1))
                else:
                    pos_p, neg_p = pos_grid[p_rows, p_cols], neg_grid[p_rows, p_cols]
                    pos_mix = A.mix_pair(lam, pos_r, pos_p)  # the same weights as the outputs
                    neg_mix = A.mix_pair(lam, neg_r, neg_p)
                    loss = self.rec_loss(H_mix.unsqueeze(0), pos_mix.unsqueeze(0), ones, negatives=neg_mix.unsqueeze(0))
                losses.append(loss)
        return self.reduce_terms(losses)

    def mixed_label_ce(self, H, tgt_a, tgt_b, valid_b, lam):
        """CE of mixed outputs ``H`` (N, D) against the mixed labels ``lam a + (1 - lam) b``:
        ``sum_n lam_n CE(h_n, a_n) + sum_{n: valid_b} (1 - lam_n) CE(h_n, b_n)``, divided by N (a
        row whose partner has no target keeps its own label only).  One logits matrix and one
        log-softmax over the catalogue serve both labels, so a mix costs one CE term, not two
        (``results/cost.md``, section "Beauty: CE vs BCE step cost ...")."""
        N = H.size(0)
        log_p = F.log_softmax(H @ self.output_item_embedding().t(), dim=-1)
        w_b = torch.where(valid_b, 1 - lam, torch.zeros_like(lam))
        picked = log_p.gather(1, torch.stack([tgt_a, tgt_b], 1))
        return -(lam * picked[:, 0] + w_b * picked[:, 1]).sum() / max(N, 1)

    # ------------------------------------------------------------------ loss
    def calculate_loss(self, interaction):
        item_seq, item_seq_len, targets, mask = self.training_batch(interaction)
        E = self.embed_items(item_seq)
        H_all = self.encode_grouped(E, item_seq, item_seq_len)
        H = self.select_outputs(H_all, item_seq_len, targets)
        negatives = None if self.loss_type == "CE" else self.sample_negatives(targets, item_seq)
        loss_main = self.rec_loss(H, targets, mask, negatives=negatives) + self.regularization()
        if self.train_stage == 1:
            return {"loss_main": loss_main}
        losses = {"loss_main": loss_main}
        if self.use_single and self.single_ops and self.n_single_views > 0:
            losses["loss_ssa"] = self.single_sequence_loss(E, item_seq, item_seq_len, targets, mask, negatives, H)
        if self.use_cross and max(self.n_item_mixes, self.n_feature_mixes) > 0:
            losses["loss_csa"] = self.cross_sequence_loss(interaction, H, targets, mask, negatives)
        return losses
