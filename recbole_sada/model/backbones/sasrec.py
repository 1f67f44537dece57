"""SASRec (Kang and McAuley, ICDM 2018) on RecBole's implementation, with the plugin's hooks."""
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec as RecBoleSASRec

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

    def encode(self, item_emb, item_seq, item_seq_len):
        position_ids = torch.arange(item_seq.size(1), device=item_seq.device)
        x = item_emb + self.position_embedding(position_ids).unsqueeze(0)
        x = self.dropout(self.LayerNorm(x))
        attention_mask = self.get_attention_mask(item_seq)
        return self.trm_encoder(x, attention_mask, output_all_encoded_layers=True)[-1]
