"""NextItNet (Yuan et al., WSDM 2019) on RecBole's implementation, with the plugin's hooks.

Difference from RecBole 1.2.1: RecBole reads the output at the last *padded* position
(``[:, -1]``); with right padding that is a padding slot for short sequences.  Here the output is
read at the last real item (``item_seq_len - 1``), as for every other backbone; the dilated
convolutions are causal, so position ``t`` sees items ``<= t`` only.
"""
from recbole.model.sequential_recommender.nextitnet import NextItNet as RecBoleNextItNet

from recbole_sada.model.backbones.base import SeqBackboneMixin


class NextItNet(SeqBackboneMixin, RecBoleNextItNet):
    """Dilated causal CNN sequential recommender."""

    properties_name = "NextItNet"

    def __init__(self, config, dataset):
        self._init_backbone(RecBoleNextItNet, config, dataset)

    def encode(self, item_emb, item_seq, item_seq_len):
        return self.final_layer(self.residual_blocks(item_emb))

    def regularization(self):
        return self.reg_loss_rb()
