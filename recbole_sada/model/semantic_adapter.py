"""The adapted semantic item table shared by LLM-ESR's semantic view and LLMEmb's RAT: the
semantic table ``S`` (the plugin's ``.itememb``, read from the dataset) as an embedding, and a
trainable two-layer linear adapter ``A(s) = W2 (W1 s)`` (``d -> d / 2 -> D``, as both papers'
code), with the adapter run once per distinct id and the full adapted table cached at evaluation.

The two layers have no activation between them, so the adapter is applied as the one linear map it
is, ``A(s) = (W2 W1) s + (W2 b1 + b2)``: the parameters (and what they can learn) are the two
layers', the values and gradients the same up to floating-point rounding, and a ``d``-wide row
costs ``d * D`` multiply-adds instead of ``d * d / 2 + d / 2 * D`` (3.5x fewer at d 384, D 64;
on Beauty the adapter was most of LLM-ESR's step time).  ``adapter(...)`` still computes the
two-layer form."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class SemanticAdapterMixin:
    """``semantic_table`` + ``adapter``; :meth:`semantic_vectors` and :meth:`eval_cached`."""

    needs_semantic = True  # prepare() builds the semantic feature files before the dataset

    def setup_semantic_adapter(self, feats, hidden, freeze=True):
        """Build ``semantic_table`` (frozen unless ``freeze`` is False) and ``adapter`` to width ``hidden``."""
        self.semantic_table = nn.Embedding.from_pretrained(feats.item_semantic.float(), freeze=freeze, padding_idx=0)
        half = max(feats.dim // 2, 1)
        self.adapter = nn.Sequential(nn.Linear(feats.dim, half), nn.Linear(half, hidden))

    def adapter_map(self):
        """``(W, b)`` with ``A(s) = W s + b``: the two linear layers of ``adapter`` composed."""
        first, second = self.adapter[0], self.adapter[1]
        return second.weight @ first.weight, F.linear(first.bias, second.weight, second.bias)

    def semantic_vectors(self, ids):
        """``A(S[ids])`` for ``ids`` of any shape, the adapter run once per distinct id (a batch
        repeats items and padding; the values and gradients are those of the full form)."""
        unique, inverse = torch.unique(ids, return_inverse=True)
        return F.linear(self.semantic_table(unique), *self.adapter_map())[inverse]

    def adapted_table(self):
        """(n_items, D) ``A(S)`` of every item."""
        return F.linear(self.semantic_table.weight, *self.adapter_map())

    def train(self, mode=True):
        self._eval_table = None  # the evaluation-time item table is rebuilt after any training
        return super().train(mode)

    def eval_cached(self, build):
        """``build()`` while training; at evaluation built once and reused until training resumes."""
        cached = getattr(self, "_eval_table", None)
        if cached is not None and not self.training:
            return cached
        table = build()
        if not self.training:
            self._eval_table = table = table.detach()
        return table

