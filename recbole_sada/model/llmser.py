"""LLMSeR (Sun et al., "LLMSeR: Enhancing Sequential Recommendation via LLM-based Data
Augmentation"): dual-channel training (Sec. 3.4) on pseudo-prior items made by
``python -m recbole_sada.llmser`` (:mod:`recbole_sada.llmser`).

Written once as :class:`LLMSeRMixin` over any plugin backbone; ``LLMSeR<Backbone>`` are one-line
classes.  At init the model reads ``<dataset>.aug`` (``aug_file``): the pseudo-prior items of each
user (oldest first) and the reliability omega_u; the file must have been made from the same
interactions (its sidecar's fingerprints are checked), else a one-line error names the command
that makes it.

Training loss of a batch (Eq. 8-9)::

    alpha_u = beta * omega_u   if n_u > tail_threshold  (head users: weight decay)
              omega_u          otherwise                 (tail users)
    loss_orig = mean over targets of (1 - alpha_u) * l(S_u)
    loss_aug  = mean over targets of alpha_u * l(S~_u)

``n_u`` is the length of the user's training sequence (valid/test excluded).  ``l`` is the
backbone's own loss (BCE with one sampled negative by default, ``loss_type`` otherwise), each
channel averaged over its valid targets; both are returned as named losses and summed by the
trainer.  ``use_weight: False`` is the paper's "w/o WD" ablation (the weight decay module removed:
``alpha_u = omega_u`` for every user).  A user without pseudo items has ``alpha_u = 0``.

The augmented input S~_u is the training input with the user's pseudo items prepended, truncated
from the left to ``MAX_ITEM_LIST_LENGTH``.  The pseudo items belong before the user's *first*
training item, so they only enter inputs that start there: an input shorter than the maximum
length (a complete prefix in either train mode) gets them, a full-length input is left as it is
(the left truncation drops them again).  In ``train_mode: sequence`` the targets shift with the
input: each pseudo item predicts the next pseudo item and the last one predicts the first real
item (LLMSeR trains on S~_u as a sequence); the real positions keep their targets.  In ``prefix``
mode the target (the next item) is unchanged.

Each channel runs through the backbone's own ``calculate_loss`` (so BERT4Rec's cloze masking
applies to the augmented sequence as it does to the original), with the per-user weight applied
inside ``rec_loss``; a backbone's regularisation term is counted once.

Evaluation uses the original sequences; ``augment_eval: True`` prepends the pseudo items to the
evaluation inputs too (same rule as in training).  No learnable parameters are added.
"""
from contextlib import contextmanager

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_sada.data.dataset import TARGET_SEQ_FIELD, pseudo_items
from recbole_sada.errors import InputError


def channel_weights(omega, train_len, beta, tail_threshold, use_weight=True):
    """alpha_u of Eq. 8: ``beta * omega`` for users with more than ``tail_threshold`` training
    items, ``omega`` for the others; ``use_weight=False`` (w/o WD) gives ``omega`` for all."""
    omega = np.asarray(omega, dtype=np.float64)
    if not use_weight:
        return omega.copy()
    return np.where(np.asarray(train_len) > tail_threshold, beta * omega, omega)


def prepend_items(item_seq, item_seq_len, pseudo, pseudo_len, targets=None):
    """Prepend ``pseudo`` (B, M), left aligned with ``pseudo_len`` valid items, to the left-aligned
    ``item_seq`` (B, L) and keep the last ``L`` items.

    Returns ``(seq, seq_len, targets)``; with ``targets`` (B, L) (sequence mode: the target of each
    input position) the pseudo positions get the next pseudo item / the first real item as target
    and every position keeps its own target, else ``targets`` is None.
    """
    B, L = item_seq.shape
    M = pseudo.size(1)
    device = item_seq.device
    pseudo_len = pseudo_len.to(item_seq_len.dtype)
    total = pseudo_len + item_seq_len
    new_len = total.clamp(max=L)
    drop = (total - new_len).unsqueeze(1)
    j = torch.arange(L, device=device).unsqueeze(0)
    k = j + drop  # position in the concatenation [pseudo, item_seq]
    plen = pseudo_len.unsqueeze(1)
    src = torch.where(k < plen, k, M + k - plen).clamp(0, M + L - 1)
    valid = j < new_len.unsqueeze(1)
    seq = torch.cat([pseudo, item_seq], dim=1).gather(1, src).masked_fill(~valid, 0)
    new_targets = None
    if targets is not None:
        pos = torch.arange(M, device=device).unsqueeze(0)
        following = torch.cat([pseudo[:, 1:], torch.zeros_like(pseudo[:, :1])], dim=1)
        ptargets = torch.where(pos == plen - 1, item_seq[:, :1].expand(-1, M), following)
        ptargets = ptargets.masked_fill(pos >= plen, 0)
        new_targets = torch.cat([ptargets, targets], dim=1).gather(1, src).masked_fill(~valid, 0)
    return seq, new_len, new_targets


class LLMSeRMixin:
    """Dual-channel training on LLMSeR pseudo-prior items (see the module docstring)."""

    properties_name = "LLMSeR"
    _abstract_plugin = True
    backbone_name = None

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.USER_ID = config["USER_ID_FIELD"]
        self.beta = float(config["beta"])
        self.tail_threshold = int(config["tail_threshold"])
        self.use_weight = bool(config["use_weight"])
        self.augment_eval = bool(config["augment_eval"])
        if not 0.0 <= self.beta <= 1.0:
            raise InputError(f"config key beta must be in [0, 1], got {self.beta}")
        # read from the dataset (the .aug file, checked against its training sequences, once per dataset)
        pseudo, pseudo_len, omega, train_len = pseudo_items(dataset, self.backbone_name)
        alpha = channel_weights(omega, train_len, self.beta, self.tail_threshold, self.use_weight)
        alpha[pseudo_len == 0] = 0.0
        self.register_buffer("pseudo_items", torch.as_tensor(pseudo), persistent=False)
        self.register_buffer("pseudo_len", torch.as_tensor(pseudo_len), persistent=False)
        self.register_buffer("aug_weight", torch.as_tensor(alpha, dtype=torch.float32), persistent=False)
        self._channel_state = None

    # ------------------------------------------------------------------ augmentation
    def augment_interaction(self, interaction, with_targets=True):
        """A shallow copy of ``interaction`` whose input sequences carry the pseudo items."""
        uid = interaction[self.USER_ID]
        targets = None
        if with_targets and self.train_mode == "sequence" and TARGET_SEQ_FIELD in interaction:
            targets = interaction[TARGET_SEQ_FIELD]
        seq, seq_len, new_targets = prepend_items(
            interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], self.pseudo_items[uid], self.pseudo_len[uid], targets
        )
        fields = {k: interaction[k] for k in interaction.columns}
        fields[self.ITEM_SEQ], fields[self.ITEM_SEQ_LEN] = seq, seq_len
        if new_targets is not None:
            fields[TARGET_SEQ_FIELD] = new_targets
        return Interaction(fields)

    # ------------------------------------------------------------------ channels
    @contextmanager
    def _channel(self, weight, regularize):
        self._channel_state = (weight, regularize)
        try:
            yield
        finally:
            self._channel_state = None

    def rec_loss(self, H, targets, mask, weight=None, **kwargs):
        if self._channel_state is not None:
            w = self._channel_state[0]
            weight = w if weight is None else weight * w
        return super().rec_loss(H, targets, mask, weight=weight, **kwargs)

    def regularization(self):
        if self._channel_state is not None and not self._channel_state[1]:
            return 0.0
        return super().regularization()

    def calculate_loss(self, interaction):
        if self.train_stage == 1:
            return super().calculate_loss(interaction)
        alpha = self.aug_weight[interaction[self.USER_ID]]
        with self._channel(1.0 - alpha, regularize=True):
            loss_orig = super().calculate_loss(interaction)
        with self._channel(alpha, regularize=False):
            loss_aug = super().calculate_loss(self.augment_interaction(interaction))
        return {"loss_orig": loss_orig, "loss_aug": loss_aug}

    # ------------------------------------------------------------------ inference
    def predict(self, interaction):
        if self.augment_eval:
            interaction = self.augment_interaction(interaction, with_targets=False)
        return super().predict(interaction)

    def full_sort_predict(self, interaction):
        if self.augment_eval:
            interaction = self.augment_interaction(interaction, with_targets=False)
        return super().full_sort_predict(interaction)
