"""BERT4Rec (Sun et al., CIKM 2019) on RecBole's implementation, with the plugin's hooks.

RecBole's architecture is kept as is: item embedding with one extra row for the mask token (id
``n_items``), learned position embedding, LayerNorm + dropout, a bidirectional transformer over the
non-padding positions (``get_attention_mask(..., bidirectional=True)``), and the
``output_ffn -> GELU -> output_ln`` head; items are scored against ``item_embedding.weight[:n_items]``
plus RecBole's per-item ``output_bias``.

Differences from RecBole 1.2.1 (and why):

* **Cloze masking inside the model** (RecBole masks in the dataloader's ``mask_itemseq``
  transform, which only knows its own batch layout).  ``calculate_loss`` works in both train
  modes: each row's full training sequence is ``item_seq`` with its next item (the last valid
  target of :meth:`training_batch`) appended at ``item_seq_len`` (the row is shifted left by one
  when it is full).  With probability ``ft_ratio`` a row masks only that appended item (the
  inference setting; RecBole draws this once per *batch*, here once per row); otherwise every real
  position is masked with probability ``mask_ratio``, and a row left without a mask gets its last
  item masked.  Padding is never masked.  The loss is :meth:`rec_loss` (BCE / BPR / CE) over the
  masked positions, whose targets are the original items.  RecBole's transform never trains on the
  next item of a sample; here it is always part of the training sequence.
* **Inference** appends the mask token at ``item_seq_len`` and shifts left only when the row is
  full (RecBole always drops the first item), so training and inference place items at the same
  positions.  The output is read at the mask slot.
* Scores are padding-invariant: positions ``>= item_seq_len`` are treated as padding whatever
  they hold.

``encode`` is bidirectional by design (position ``t`` sees the whole sequence), so this backbone
defines its own ``calculate_loss``/``forward``; augmentation mixins that train through
``encode`` + ``select_outputs`` on causal next-item targets do not apply to it.  The output bias
is used wherever items are scored by id (``rec_loss`` with an id table, ``predict``,
``full_sort_predict``); losses on mixed representations (``item_table``/embedding targets) have no
bias.
"""
import torch
from recbole.model.sequential_recommender.bert4rec import BERT4Rec as RecBoleBERT4Rec

from recbole_sada.model.backbones.base import SeqBackboneMixin
from recbole_sada.model.backbones.sasrec import use_fused_gelu


class BERT4Rec(SeqBackboneMixin, RecBoleBERT4Rec):
    """Bidirectional transformer trained by cloze masking (see module docstring)."""

    properties_name = "BERT4Rec"
    causal = False  # bidirectional, cloze training

    def __init__(self, config, dataset):
        self._init_backbone(RecBoleBERT4Rec, config, dataset)
        self.mask_ratio = float(config["mask_ratio"])
        self.ft_ratio = float(config["ft_ratio"] or 0.0)
        use_fused_gelu(self.trm_encoder, config["hidden_act"])

    # ------------------------------------------------------------------ sequence building
    def append_item(self, item_seq, item_seq_len, item):
        """Put ``item`` (a tensor (B,) or an id) at position ``item_seq_len``; full rows are shifted
        left by one first.  Positions past the new length are zeroed.  Returns ``(seq, seq_len)``."""
        B, L = item_seq.shape
        positions = torch.arange(L, device=item_seq.device).unsqueeze(0)
        seq = item_seq.masked_fill(positions >= item_seq_len.unsqueeze(1), 0)
        full = item_seq_len >= L
        seq = torch.where(full.unsqueeze(1), seq.roll(-1, dims=1), seq)
        slot = torch.where(full, torch.full_like(item_seq_len, L - 1), item_seq_len)
        seq[torch.arange(B, device=seq.device), slot] = item
        return seq, slot + 1

    @staticmethod
    def last_target(targets, mask):
        """(B,) the last valid target of each row (``targets`` (B, T) under ``mask``)."""
        positions = torch.arange(targets.size(1), device=targets.device).expand_as(targets)
        last = torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values.clamp(min=0)
        return targets.gather(1, last.unsqueeze(1)).squeeze(1)

    def mask_sequence(self, seq, seq_len):
        """Cloze masking.  Returns ``(masked_seq, masked)``: ``masked`` (B, L) marks the masked
        real positions (at least one per row), ``masked_seq`` has the mask token there."""
        B, L = seq.shape
        positions = torch.arange(L, device=seq.device).unsqueeze(0)
        real = (seq != 0) & (positions < seq_len.unsqueeze(1))
        masked = (torch.rand(B, L, device=seq.device) < self.mask_ratio) & real
        last_only = torch.rand(B, device=seq.device) < self.ft_ratio
        masked &= ~last_only.unsqueeze(1)
        need_last = last_only | ~masked.any(dim=1)
        rows = torch.arange(B, device=seq.device)
        masked[rows, seq_len - 1] |= need_last & real[rows, seq_len - 1]
        return seq.masked_fill(masked, self.mask_token), masked

    # ------------------------------------------------------------------ hooks
    def encode(self, item_emb, item_seq, item_seq_len):
        L = item_seq.size(1)
        positions = torch.arange(L, device=item_seq.device)
        seq = item_seq.masked_fill(positions.unsqueeze(0) >= item_seq_len.unsqueeze(1), 0)
        x = item_emb + self.position_embedding(positions).unsqueeze(0)
        x = self.dropout(self.LayerNorm(x))
        attention_mask = self.get_attention_mask(seq, bidirectional=True)
        out = self.trm_encoder(x, attention_mask, output_all_encoded_layers=True)[-1]
        return self.output_ln(self.output_gelu(self.output_ffn(out)))

    def output_item_embedding(self):
        return self.item_embedding.weight[: self.n_items]  # without the mask token

    def forward(self, item_seq, item_seq_len):
        seq, seq_len = self.append_item(item_seq, item_seq_len, self.mask_token)
        return self.encode_grouped(self.embed_items(seq), seq, seq_len, last_only=True)

    # ------------------------------------------------------------------ loss
    def rec_loss(self, H, targets, mask, weight=None, negatives=None, item_table=None, target_weight=None):
        """The base loss with RecBole's output bias: scored by id against the item table, the
        bias is folded in as an extra embedding column (``[h, 1] . [e_i, b_i] = h . e_i + b_i``)."""
        by_id = item_table is None and targets.dim() == 2 and (negatives is None or negatives.dim() == 2)
        if by_id:
            H = torch.cat([H, H.new_ones(H.shape[:-1] + (1,))], dim=-1)
            item_table = torch.cat([self.output_item_embedding(), self.output_bias.unsqueeze(1)], dim=1)
        return super().rec_loss(H, targets, mask, weight, negatives, item_table, target_weight)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len, targets, mask = self.training_batch(interaction)
        seq, seq_len = self.append_item(item_seq, item_seq_len, self.last_target(targets, mask))
        masked_seq, masked = self.mask_sequence(seq, seq_len)
        H = self.encode_grouped(self.embed_items(masked_seq), masked_seq, seq_len)
        return self.rec_loss(H, seq, masked) + self.regularization()

    # ------------------------------------------------------------------ inference
    def predict(self, interaction):
        item = interaction[self.ITEM_ID]
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return (seq_output * self.output_item_embedding()[item]).sum(dim=-1) + self.output_bias[item]

    def full_sort_scores(self, interaction):
        seq_output = self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return seq_output @ self.output_item_embedding().t() + self.output_bias
