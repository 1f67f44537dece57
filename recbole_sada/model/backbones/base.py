"""What every plugin backbone shares: both training modes, the loss, and the hooks the
augmentation mixins (BASRec, SADA, LLMSeR) build on.

A backbone is ``class X(SeqBackboneMixin, RecBoleX)`` plus one method, ``encode``.  The hooks:

* ``embed_items(item_seq) -> (B, L, D)``: item embeddings of a sequence (SADA fuses semantics here).
* ``encode(item_emb, item_seq, item_seq_len) -> (B, L, D)``: the encoder output at every position,
  position ``t`` seeing items ``<= t`` (the padding mask comes from ``item_seq``, so an augmented
  embedding sequence with the same padding can be encoded).  Callers go through
  ``encode_grouped``, which runs ``encode`` on length groups of the batch
  (:mod:`recbole_sada.model.backbones.grouping`, ``grouped_encoding``) where the backbone is exact
  under trimming (``grouping_exact``; a backbone whose output at real positions depends on the
  padded length sets it False).
* ``output_item_embedding() -> (n_items, D)``: the item table used for scoring.
* ``training_batch(interaction) -> (item_seq, item_seq_len, targets, mask)``: in ``prefix`` mode
  the targets are the next items (B, 1); in ``sequence`` mode the targets at every position (B, L).
* ``rec_loss(H, targets, mask, weight=None)``: BCE with one sampled negative per target (SASRec,
  BASRec), BPR, or CE (full softmax), averaged over the valid targets, optionally per-sample
  weighted.

Every loss is computed with the same function in both modes, so a model written against these
hooks supports ``prefix`` and ``sequence`` training.
"""
import torch
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_sada.data.dataset import TARGET_SEQ_FIELD
from recbole_sada.errors import InputError
from recbole_sada.model.backbones.grouping import gather_last, grouped_encode


def id_map_fingerprint(dataset):
    """Short SHA-256 of a dataset's user and item id maps (token of every remapped id)."""
    import hashlib

    digest = hashlib.sha256()
    for field in (dataset.uid_field, dataset.iid_field):
        digest.update(field.encode() + b"\0")
        digest.update("\0".join(map(str, dataset.field2id_token[field])).encode())
        digest.update(b"\1")
    return digest.hexdigest()[:16]


class SeqBackboneMixin:
    """Mixin placed before a RecBole ``SequentialRecommender`` class (see module docstring)."""

    # Negatives are sampled inside the model (BCE/BPR), so RecBole's sampler is not needed.
    input_type = InputType.POINTWISE
    _abstract_plugin = True
    # position t sees items <= t only (trained on next-item targets); False for BERT4Rec
    causal = True

    def _init_backbone(self, recbole_class, config, dataset):
        """Run the RecBole class's ``__init__`` (which only knows BPR/CE), then set our loss."""
        loss_type = config["loss_type"] or "BCE"
        if loss_type == "BCE":
            config["loss_type"] = "CE"  # RecBole's __init__ rejects BCE; its loss_fct is unused
        try:
            recbole_class.__init__(self, config, dataset)
        finally:
            config["loss_type"] = loss_type
        self.loss_type = loss_type
        self.train_mode = config["train_mode"] or "prefix"
        self.train_stage = 2
        self.grouped_encoding = config["grouped_encoding"] is not False
        self.neg_exclude = config["neg_exclude"] or "target"
        if self.neg_exclude not in ("target", "history"):
            raise InputError(f"neg_exclude must be 'target' or 'history', got {self.neg_exclude!r} (--neg_exclude=target)")
        self.eval_mask_history = bool(config["eval_mask_history"])
        self.dataset_fingerprint = id_map_fingerprint(dataset)
        self.dataset_label = getattr(dataset, "dataset_name", "?")
        overhead = config["group_overhead"]
        try:
            self.group_overhead = float("inf") if overhead is None else float(overhead)
        except (TypeError, ValueError):
            self.group_overhead = -1.0
        if not self.group_overhead >= 0:
            raise InputError(f"group_overhead must be a number >= 0 (tokens per extra group), got {overhead!r} (--group_overhead=256)")

    # ----------------------------------------------------------------- checkpoints
    def other_parameter(self):
        """RecBole's extra checkpoint entries plus the fingerprint of the dataset's id maps."""
        return {**(super().other_parameter() or {}), "dataset_fingerprint": self.dataset_fingerprint}

    def load_other_parameter(self, para):
        """Refuse a checkpoint made on data whose user/item id maps differ (another dataset, or
        the same one filtered differently): its rows would silently mean other items."""
        para = dict(para or {})
        saved = para.pop("dataset_fingerprint", None)
        if saved is not None and saved != self.dataset_fingerprint:
            raise InputError(
                f"the checkpoint was trained on other data: its user/item id maps differ from those of dataset "
                f"'{self.dataset_label}' here (another dataset or other filtering); use a checkpoint of this dataset")
        super().load_other_parameter(para or None)

    def regularization(self):
        """Extra loss terms of the backbone (e.g. NextItNet's L2 on its residual blocks)."""
        return 0.0

    # ----------------------------------------------------------------- hooks
    def embed_items(self, item_seq):
        return self.item_embedding(item_seq)

    def encode(self, item_emb, item_seq, item_seq_len):  # pragma: no cover - per backbone
        raise NotImplementedError

    # True where the outputs at real positions do not depend on the padded length (causal or
    # padding-masked encoders with right padding), so length-grouped encoding is exact.
    grouping_exact = True

    def encode_grouped(self, item_emb, item_seq, item_seq_len, last_only=False, encode=None):
        """``encode`` over length groups of the batch (exact; see ``grouping``), or padded when
        ``grouped_encoding`` is off or the backbone is not exact under trimming.  ``last_only``:
        the (B, D) outputs at the last real items.  ``encode``: another function of the same
        signature to group (default the backbone's), exact under trimming wherever the backbone is."""
        encode = encode or self.encode
        if getattr(self, "grouped_encoding", False) and self.grouping_exact:
            return grouped_encode(encode, item_emb, item_seq, item_seq_len, self.group_overhead, last_only)
        H = encode(item_emb, item_seq, item_seq_len)
        return gather_last(H, item_seq_len) if last_only else H

    def output_item_embedding(self):
        return self.item_embedding.weight

    def item_vectors(self, ids):
        """Output-side vectors of the items ``ids`` (any shape): rows of ``output_item_embedding``.
        A model whose table is computed (SADA's fusion) overrides this to build only these rows."""
        return self.output_item_embedding()[ids]

    def forward(self, item_seq, item_seq_len):
        return self.encode_grouped(self.embed_items(item_seq), item_seq, item_seq_len, last_only=True)

    # ----------------------------------------------------------------- training data
    def training_batch(self, interaction):
        """``(item_seq, item_seq_len, targets, mask)`` for either training mode."""
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = interaction[self.ITEM_SEQ_LEN]
        if self.train_mode == "sequence" and TARGET_SEQ_FIELD in interaction:
            targets = interaction[TARGET_SEQ_FIELD]
        else:
            targets = interaction[self.POS_ITEM_ID].unsqueeze(1)
        return item_seq, item_seq_len, targets, targets > 0

    def select_outputs(self, H, item_seq_len, targets):
        """Encoder outputs aligned with ``targets``: all positions (sequence mode) or the last."""
        if targets.size(1) == H.size(1) and targets.size(1) > 1:
            return H
        return self.gather_indexes(H, item_seq_len - 1).unsqueeze(1)

    def sample_negatives(self, targets, item_seq=None):
        """One uniform random negative item per target.

        ``neg_exclude: target`` (default): resampled once where it hits its target.
        ``neg_exclude: history``: outside the row's training items (its input sequence and its
        targets; resampled until none is left, at most 20 rounds).  Only training items are
        consulted: the official BASRec / S3-Rec code draws outside the user's *whole* item set,
        valid and test items included, which lets the labels shape training mildly.
        """
        neg = torch.randint(1, self.n_items, targets.shape, device=targets.device)
        if self.neg_exclude == "target":
            clash = neg == targets
            if clash.any():
                neg[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), device=targets.device)
            return neg
        history = targets if item_seq is None else torch.cat([item_seq, targets], dim=1)  # (B, H)
        for _ in range(20):
            clash = (neg.unsqueeze(-1) == history.unsqueeze(1)).any(-1)
            if not clash.any():
                break
            neg[clash] = torch.randint(1, self.n_items, (int(clash.sum()),), device=targets.device)
        return neg

    # ----------------------------------------------------------------- loss
    def rec_loss(self, H, targets, mask, weight=None, negatives=None, item_table=None, target_weight=None):
        """Recommendation loss of outputs ``H`` (B, T, D) for ``targets`` (B, T) under ``mask``.

        ``weight`` (B,) reweights samples (ALW, LLMSeR); ``target_weight`` (B, T) reweights
        single targets.  ``negatives``/``item_table`` let callers pass mixed representations:
        ``targets`` may also be embeddings (B, T, D) of (mixed) positives with ``negatives``
        embeddings (B, T, D) for BCE/BPR.  Returns the mean over valid targets.
        """
        if self.loss_type == "CE" and targets.dim() == 2:
            table = self.output_item_embedding() if item_table is None else item_table
            logits = H[mask] @ table.t()
            per = F.cross_entropy(logits, targets[mask], reduction="none")
        else:
            lookup = self.item_vectors if item_table is None else item_table.__getitem__
            pos_emb = lookup(targets) if targets.dim() == 2 else targets
            if negatives is None:
                negatives = self.sample_negatives(targets)
            neg_emb = lookup(negatives) if negatives.dim() == 2 else negatives
            pos_logit = (H * pos_emb).sum(-1)[mask]
            neg_logit = (H * neg_emb).sum(-1)[mask]
            if self.loss_type == "BPR":
                per = -F.logsigmoid(pos_logit - neg_logit)
            else:  # BCE
                per = F.softplus(-pos_logit) + F.softplus(neg_logit)
        w = torch.ones_like(per)
        if weight is not None:
            w = w * weight.unsqueeze(1).expand_as(mask)[mask]
        if target_weight is not None:
            w = w * target_weight[mask]
        return (per * w).sum() / mask.sum().clamp(min=1)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len, targets, mask = self.training_batch(interaction)
        H = self.encode_grouped(self.embed_items(item_seq), item_seq, item_seq_len)
        negatives = None if self.loss_type == "CE" else self.sample_negatives(targets, item_seq)
        loss = self.rec_loss(self.select_outputs(H, item_seq_len, targets), targets, mask, negatives=negatives)
        return loss + self.regularization()

    # ----------------------------------------------------------------- inference
    def predict(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        test_item_emb = self.item_vectors(interaction[self.ITEM_ID])
        return (seq_output * test_item_emb).sum(dim=-1)

    def full_sort_scores(self, interaction):
        """(B, n_items) scores of every item (a backbone with an output bias overrides this)."""
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.output_item_embedding().t()

    def full_sort_predict(self, interaction):
        """Full-ranking scores; with ``eval_mask_history`` the items of the user's input sequence
        get ``-inf`` (never ranked), as the S3-Rec / BASRec code does at valid and test time (it
        sets them to 0 and reads the whole history; here the input window of
        ``MAX_ITEM_LIST_LENGTH`` items is masked).  Off = RecBole's protocol."""
        scores = self.full_sort_scores(interaction)
        if self.eval_mask_history and not self.training:
            scores = scores.scatter(1, interaction[self.ITEM_SEQ], float("-inf"))
        return scores
