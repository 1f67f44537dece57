"""SASRec (Kang and McAuley, ICDM 2018) on RecBole's implementation, with the plugin's hooks."""
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

from recbole_sada.errors import InputError
from recbole_sada.model.backbones.base import SeqBackboneMixin


def use_fused_gelu(trm_encoder, hidden_act):
    """Swap RecBole's Python erf-GELU for torch's fused kernel (the same function)."""
    if hidden_act == "gelu":
        for layer in trm_encoder.layer:
            layer.feed_forward.intermediate_act_fn = F.gelu


class SASRec(SeqBackboneMixin, RecBoleSASRec):
    """Self-attentive sequential recommendation; causal self-attention over item + position."""

    properties_name = "SASRec"

    def __init__(self, config, dataset):
        self._init_backbone(RecBoleSASRec, config, dataset)
        use_fused_gelu(self.trm_encoder, config["hidden_act"])
        self.position_from = config["position_from"] or "start"
        if self.position_from not in ("start", "end"):
            raise InputError(f"position_from must be 'start' or 'end', got {self.position_from!r} (--position_from=start)")

    def encode(self, item_emb, item_seq, item_seq_len):
        """``position_from: start`` counts positions from the first item (RecBole, right padding);
        ``end`` from the last one, so the last item is always at ``MAX_ITEM_LIST_LENGTH - 1``: the
        positions the SASRec / BASRec code sees with left padding, on right-padded tensors (the
        ids depend on the row's length only, so length-grouped encoding stays exact)."""
        position_ids = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        if self.position_from == "end":
            shift = (self.max_seq_length - item_seq_len).unsqueeze(1)
            position_ids = (position_ids + shift).clamp(0, self.max_seq_length - 1)
        x = item_emb + self.position_embedding(position_ids)
        x = self.dropout(self.LayerNorm(x))
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(x, attention_mask, output_all_encoded_layers=True)[-1]
