"""LLMEmb's recommendation adaptation stage (LLMEmbRAT<Backbone>): the alignment losses, the
adapted frozen item table, the alignment target read from a trained backbone, end to end."""
import pytest
import torch

from recbole_sada.errors import InputError
from recbole_sada.model.llmemb import infonce_alignment_loss, soft_alignment_loss
from recbole_sada.quick_start import prepare, run_recbole_sada
from recbole_sada.utils import get_model


@pytest.fixture
def emb_cfg(small_cfg, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "sada_cache"
    return {**small_cfg, "epochs": 1, "n_clusters": 3, "cache_dir": str(cache)}


@pytest.fixture
def sasrec_checkpoint(emb_cfg):
    result = run_recbole_sada("SASRec", "tiny", config_dict=emb_cfg)
    return result["model_file"]


@pytest.mark.parametrize("fn", [soft_alignment_loss, infonce_alignment_loss])
def test_alignment_losses_reward_matched_rows_and_ignore_row_order(fn):
    torch.manual_seed(0)
    Y = torch.randn(16, 8)
    X = torch.randn(16, 8)
    if fn is infonce_alignment_loss:
        assert torch.allclose(fn(X, Y, 2.0), fn(Y, X, 2.0), atol=1e-6)
    # invariant to a joint permutation of the matched rows
    perm = torch.randperm(16)
    assert torch.allclose(fn(X[perm], Y[perm], 2.0), fn(X, Y, 2.0), atol=1e-5)
    matched = fn(Y * 1.0, Y, 0.5)
    shuffled = fn(Y[torch.randperm(16)], Y, 0.5)
    assert float(matched) < float(shuffled)
    # gradients reach both sides
    Xg = X.clone().requires_grad_(True)
    fn(Xg, Y, 2.0).backward()
    assert Xg.grad is not None and Xg.grad.abs().sum() > 0


def _model(cfg, model="LLMEmbRATSASRec", **extra):
    config, data, train_data, _, _ = prepare(model, "tiny", None, {**cfg, **extra}, ())
    return get_model(model)(config, train_data._dataset), train_data


def test_item_table_is_the_adapted_frozen_semantic_table_and_target_comes_from_the_checkpoint(emb_cfg, sasrec_checkpoint):
    model, train_data = _model(emb_cfg, pretrained_path=sasrec_checkpoint)
    table = model.output_item_embedding()
    assert table.shape == model.item_embedding.weight.shape
    assert torch.allclose(table, model.adapter(model.semantic_table.weight), atol=1e-6)  # composed map: rounding only
    model.load_alignment_target(sasrec_checkpoint)
    state = torch.load(sasrec_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(model.alignment_target, state["item_embedding.weight"])
    model.train()
    losses = model.calculate_loss(next(iter(train_data)))
    assert set(losses) == {"loss_rec", "loss_align"} and float(losses["loss_align"]) > 0
    sum(losses.values()).backward()
    assert model.semantic_table.weight.grad is None and model.item_embedding.weight.grad is None  # frozen
    assert model.adapter[0].weight.grad is not None
    assert "alignment_target" not in model.state_dict()  # not written into this model's checkpoints


def test_alignment_needs_a_checkpoint_and_zero_weight_does_not(emb_cfg):
    with pytest.raises(InputError, match="pretrained_path"):
        _model(emb_cfg)
    model, train_data = _model(emb_cfg, align_weight=0)
    assert set(model.calculate_loss(next(iter(train_data)))) == {"loss_rec"}


def test_trains_from_scratch_aligned_to_the_backbone_checkpoint(emb_cfg, sasrec_checkpoint, monkeypatch):
    from recbole_sada.trainer import PluginTrainer

    def no_weights(self, path, message):  # the backbone's weights must not be loaded
        raise AssertionError("pretrained weights loaded into LLMEmbRAT")

    monkeypatch.setattr(PluginTrainer, "_load_weights", no_weights)
    result = run_recbole_sada("LLMEmbRATSASRec", "tiny", config_dict={**emb_cfg, "pretrained_path": sasrec_checkpoint})
    trainer = result["trainer"]
    assert trainer.loss_names == ["loss_rec", "loss_align"]
    assert trainer.model.has_alignment_target
    state = torch.load(sasrec_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(trainer.model.alignment_target.cpu(), state["item_embedding.weight"])
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_gru4rec_and_the_refused_bidirectional_backbone(emb_cfg):
    from recbole_sada.model import grid

    result = run_recbole_sada("LLMEmbRATGRU4Rec", "tiny", config_dict={**emb_cfg, "align_weight": 0})
    assert result["trainer"].loss_names == ["loss_rec"]
    assert "LLMEmbRATBERT4Rec" in grid.UNSUPPORTED and "mask token" in grid.UNSUPPORTED["LLMEmbRATBERT4Rec"]
