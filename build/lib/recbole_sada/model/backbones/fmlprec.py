"""FMLP-Rec (Zhou et al., WWW 2022, "Filter-enhanced MLP is all you need for sequential
recommendation"), written from the paper with the plugin's hooks.  RecBole 1.2.1 has no FMLP-Rec.

Architecture (paper, Sec. 3-4):

* embedding layer: item embedding (``padding_idx`` 0) + learned position embedding, LayerNorm,
  dropout;
* ``n_layers`` filter-enhanced blocks, each

  - a learnable filter layer: ``X~ = irfft(rfft(X, dim=seq, norm='ortho') * W, n=L, norm='ortho')``
    with ``W in C^{(L//2+1) x D}`` (one complex weight per frequency and channel), then
    ``LayerNorm(X + Dropout(X~))``;
  - a point-wise feed-forward network ``LayerNorm(X + Dropout(W2 act(W1 X + b1) + b2))``
    (RecBole's :class:`~recbole.model.layers.FeedForward`, the same function);

* the output at the last item is the user representation, scored by dot product with the item
  embedding table.

Choices where the model meets RecBole's data layout (and why):

* **Padding is zeroed before every filter layer.**  A filter in the frequency domain is a circular
  convolution over the whole padded sequence, so anything a padding slot holds (its position
  embedding, the LayerNorm/FFN output of a zero vector, an arbitrary id) would leak into the real
  positions.  Zeroing the slots that are not real items (``item_seq == 0`` or position
  ``>= item_seq_len``) before each filter makes the scores independent of the padding.
* **Sequences are left-aligned internally.**  RecBole right-pads; the authors' code left-pads, so
  the most recent item always sits at position ``L - 1`` and gets the same position embedding.
  ``encode`` rolls each row so that its real part ends at ``L - 1``, runs the embedding layer and
  the blocks there, and rolls the output back, so position ``t`` of the output belongs to item
  ``t`` of ``item_seq`` as for every other backbone.  The output at ``item_seq_len - 1`` equals
  the authors' model on the left-padded sequence (tested).  (The circular convolution itself is
  shift-equivariant; only the position embeddings depend on the alignment.)
* **Causality.**  With the padding zeroed, the output at the last real item sees only that item
  and earlier ones (a circular convolution at the last non-zero position wraps into zeros only),
  so ``prefix`` training and all evaluation are leak-free.  The filter is *not* causal at earlier
  positions: position ``t < item_seq_len - 1`` also sees the items after ``t``.  In
  ``train_mode: sequence`` (a loss at every position) the targets of inner positions are thus
  visible to the model through later inputs.  The authors' released code
  (github.com/Woeee/FMLP-Rec, ``datasets.py``/``trainers.py``) trains every prefix with a loss
  at the last position only, i.e. our ``prefix`` mode.  For ``train_mode: sequence`` the filter
  is made causal (``filter_causal: auto``, the default, does this in sequence mode only): a
  learned kernel ``h in R^{L x D}`` over lags ``0..L-1``, applied as a *linear* (not circular)
  convolution through FFTs of size ``2L`` (``y = irfft(rfft(x, 2L) * rfft(h, 2L))[:L]``), so
  position ``t`` sees items ``<= t`` only and no target leaks.  It is still a global,
  frequency-domain filter (the FFT form of a full-length causal kernel); ``filter_causal: false``
  forces the paper's circular filter (leaky in sequence mode, with a warning).
"""
from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import FeedForward
from torch import nn

from recbole_sada.model.backbones.base import SeqBackboneMixin


class FilterLayer(nn.Module):
    """Learnable global filter over the sequence axis, then residual + LayerNorm."""

    def __init__(self, max_seq_length, hidden_size, dropout_prob, layer_norm_eps, init_range, causal=False):
        super().__init__()
        self.max_seq_length = max_seq_length
        self.causal = causal
        if causal:
            # real kernel over lags 0..L-1, applied as a linear convolution (FFT size 2L)
            self.kernel = nn.Parameter(torch.randn(max_seq_length, hidden_size) * init_range)
        else:
            # complex W (L//2+1, D) stored as its real and imaginary parts
            self.complex_weight = nn.Parameter(torch.randn(max_seq_length // 2 + 1, hidden_size, 2) * init_range)
        self.dropout = nn.Dropout(dropout_prob)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def filter(self, x):
        """``irfft(rfft(x) * W)`` along the sequence axis (computed in float32).

        The causal filter also takes sequences shorter than ``max_seq_length`` (the first ``L``
        lags of the kernel: a linear convolution of a left-aligned sequence only reads lags up to
        its length), which length-grouped encoding uses; the circular one needs the full length."""
        L = x.size(1)
        if self.causal and L <= self.max_seq_length:
            n = 2 * L
            spec = torch.fft.rfft(x.float(), n=n, dim=1) * torch.fft.rfft(self.kernel[:L].float(), n=n, dim=0)
            return torch.fft.irfft(spec, n=n, dim=1)[:, :L].to(x.dtype)
        if L != self.max_seq_length:
            raise ValueError(f"FMLPRec filters sequences of length {self.max_seq_length}, got {L}")
        spec = torch.fft.rfft(x.float(), dim=1, norm="ortho")
        spec = spec * torch.view_as_complex(self.complex_weight.float())
        return torch.fft.irfft(spec, n=L, dim=1, norm="ortho").to(x.dtype)

    def forward(self, x):
        return self.LayerNorm(x + self.dropout(self.filter(x)))


class FilterBlock(nn.Module):
    """Filter layer followed by the point-wise feed-forward network."""

    def __init__(self, max_seq_length, hidden_size, inner_size, dropout_prob, hidden_act, layer_norm_eps, init_range,
                 causal=False):
        super().__init__()
        self.filter_layer = FilterLayer(max_seq_length, hidden_size, dropout_prob, layer_norm_eps, init_range, causal)
        self.feed_forward = FeedForward(hidden_size, inner_size, dropout_prob, hidden_act, layer_norm_eps)
        if hidden_act == "gelu":  # RecBole's Python erf-GELU -> torch's fused kernel (same function)
            self.feed_forward.intermediate_act_fn = F.gelu

    def forward(self, x):
        return self.feed_forward(self.filter_layer(x))


class FMLPRec(SeqBackboneMixin, SequentialRecommender):
    """Filter-enhanced MLP sequential recommender (see module docstring)."""

    properties_name = "FMLPRec"

    def __init__(self, config, dataset):
        self._init_backbone(SequentialRecommender, config, dataset)
        self.n_layers = config["n_layers"]
        self.hidden_size = config["hidden_size"]
        self.inner_size = config["inner_size"]
        self.hidden_dropout_prob = config["hidden_dropout_prob"]
        self.hidden_act = config["hidden_act"]
        self.layer_norm_eps = config["layer_norm_eps"]
        self.initializer_range = config["initializer_range"]
        causal = config["filter_causal"]
        self.filter_causal = (self.train_mode == "sequence") if causal in (None, "auto") else bool(causal)

        self.item_embedding = nn.Embedding(self.n_items, self.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_seq_length, self.hidden_size)
        self.LayerNorm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        self.dropout = nn.Dropout(self.hidden_dropout_prob)
        self.blocks = nn.ModuleList(
            FilterBlock(
                self.max_seq_length,
                self.hidden_size,
                self.inner_size,
                self.hidden_dropout_prob,
                self.hidden_act,
                self.layer_norm_eps,
                self.initializer_range,
                self.filter_causal,
            )
            for _ in range(self.n_layers)
        )
        self.apply(self._init_weights)
        if self.train_mode == "sequence" and not self.filter_causal:
            getLogger().warning(
                "FMLPRec: the frequency filter is not causal, so in train_mode=sequence inner positions "
                "see later items (their targets); train_mode=prefix (the authors' setting) is leak-free."
            )

    def _init_weights(self, module):
        """As RecBole's SASRec: normal(0, initializer_range) weights, LayerNorm ones/zeros.
        The complex filters keep their own ``randn * initializer_range`` initialisation."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    # ------------------------------------------------------------------ layout helpers
    @staticmethod
    def real_positions(item_seq, item_seq_len):
        """(B, L) bool: the real items (non-zero id, position < item_seq_len)."""
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        return (item_seq != 0) & (positions < item_seq_len.unsqueeze(1))

    @staticmethod
    def left_align_index(item_seq_len, L):
        """(B, L) gather index: row ``b`` rolled right by ``L - len_b`` (real part ends at L-1)."""
        shift = (L - item_seq_len.clamp(0, L)).unsqueeze(1)
        positions = torch.arange(L, device=item_seq_len.device).unsqueeze(0)
        return (positions - shift) % L, (positions + shift) % L

    @property
    def grouping_exact(self):
        """Length-grouped encoding is exact with the causal filter only: the circular filter is a
        convolution modulo the padded length, so trimming the padding changes its output."""
        return self.filter_causal

    def filter_stack(self, item_emb, valid):
        """The model on an already aligned batch: embedding layer + blocks, padding zeroed
        (``valid`` (B, L) marks the real items) before every filter layer.  A batch trimmed to
        ``L < max_seq_length`` holds the last ``L`` positions of the left-aligned window."""
        L = item_emb.size(1)
        positions = torch.arange(self.max_seq_length - L, self.max_seq_length, device=item_emb.device)
        x = self.dropout(self.LayerNorm(item_emb + self.position_embedding(positions).unsqueeze(0)))
        keep = valid.unsqueeze(-1).to(x.dtype)
        for block in self.blocks:
            x = block(x * keep)
        return x

    # ------------------------------------------------------------------ hook
    def encode(self, item_emb, item_seq, item_seq_len):
        B, L, D = item_emb.shape
        to_left, to_right = self.left_align_index(item_seq_len, L)
        valid = self.real_positions(item_seq, item_seq_len).gather(1, to_left)
        x = item_emb.gather(1, to_left.unsqueeze(-1).expand(-1, -1, D))
        x = self.filter_stack(x, valid)
        return x.gather(1, to_right.unsqueeze(-1).expand(-1, -1, D))
