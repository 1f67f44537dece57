"""GRU4Rec (Hidasi et al., ICLR 2016) on RecBole's implementation, with the plugin's hooks."""
from recbole.model.sequential_recommender.gru4rec import GRU4Rec as RecBoleGRU4Rec

from recbole_sada.model.backbones.base import SeqBackboneMixin


class GRU4Rec(SeqBackboneMixin, RecBoleGRU4Rec):
    """Recurrent sequential recommender; the GRU state at each position is its output."""

    properties_name = "GRU4Rec"

    def __init__(self, config, dataset):
        self._init_backbone(RecBoleGRU4Rec, config, dataset)

    def encode(self, item_emb, item_seq, item_seq_len):
        gru_output, _ = self.gru_layers(self.emb_dropout(item_emb))
        return self.dense(gru_output)
