"""BASRec mixin over the backbones: losses, switches, stages, no extra parameters, inference."""
import pytest
import torch

from recbole_sada.data.dataset import training_sequences
from recbole_sada.model.item_similarity import CooccurrenceSimilarity
from recbole_sada.quick_start import prepare, run_recbole_sada
from recbole_sada.utils import get_model

BACKBONES = ["SASRec", "GRU4Rec", "FMLPRec", "NextItNet"]


def _model(name, small_cfg, **kw):
    config, _, train, _, _ = prepare(name, "tiny", config_dict={**small_cfg, "stage1_epochs": 0, **kw})
    torch.manual_seed(0)
    return get_model(name)(config, train._dataset), train


@pytest.mark.parametrize("backbone", BACKBONES)
def test_no_extra_parameters_and_same_inference(backbone, small_cfg):
    base, train = _model(backbone, small_cfg)
    aug, _ = _model("BASRec" + backbone, small_cfg)
    assert sum(p.numel() for p in aug.parameters()) == sum(p.numel() for p in base.parameters())
    aug.load_state_dict(base.state_dict())
    base.eval(), aug.eval()
    batch = next(iter(train))
    with torch.no_grad():
        assert torch.allclose(base.full_sort_predict(batch), aug.full_sort_predict(batch))


@pytest.mark.parametrize("mode", ["prefix", "sequence"])
@pytest.mark.parametrize("loss_type", ["BCE", "CE"])
def test_stage_losses_and_switches(mode, loss_type, small_cfg):
    model, train = _model("BASRecSASRec", small_cfg, train_mode=mode, loss_type=loss_type)
    batch = next(iter(train))
    model.train()
    model.train_stage = 1
    assert list(model.calculate_loss(batch)) == ["loss_main"]
    model.train_stage = 2
    losses = model.calculate_loss(batch)
    assert list(losses) == ["loss_main", "loss_ssa", "loss_csa"]
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for switch, gone in [("use_single", "loss_ssa"), ("use_cross", "loss_csa")]:
        m, _ = _model("BASRecSASRec", small_cfg, train_mode=mode, loss_type=loss_type, **{switch: False})
        m.train_stage = 2
        assert gone not in m.calculate_loss(batch)


def test_mixed_label_ce_equals_the_two_term_form(small_cfg):
    """One logits matrix for both labels gives the loss of one CE call per label."""
    model, _ = _model("BASRecSASRec", small_cfg, loss_type="CE")
    g = torch.Generator().manual_seed(0)
    N, D = 7, model.output_item_embedding().size(1)
    n_items = model.output_item_embedding().size(0)
    H = torch.randn(N, D, generator=g, requires_grad=True)
    tgt_a = torch.randint(1, n_items, (N,), generator=g)
    tgt_b = torch.randint(1, n_items, (N,), generator=g)
    valid = torch.tensor([True, False, True, True, False, True, True])
    lam = torch.where(valid, torch.rand(N, generator=g), torch.ones(N))
    got = model.mixed_label_ce(H, tgt_a, tgt_b, valid, lam)
    ones = torch.ones(1, N, dtype=torch.bool)
    want = model.rec_loss(H.unsqueeze(0), tgt_a.unsqueeze(0), ones, target_weight=lam.unsqueeze(0)) + model.rec_loss(
        H.unsqueeze(0), tgt_b.masked_fill(~valid, 0).unsqueeze(0), valid.view(1, N),
        target_weight=(1 - lam).unsqueeze(0)) * valid.sum() / N
    assert torch.allclose(got, want, atol=1e-6)
    g1, = torch.autograd.grad(got, H)
    g2, = torch.autograd.grad(want, H)
    assert torch.allclose(g1, g2, atol=1e-6)
    # no valid partner: only the own label, weighted by lam
    none = torch.zeros(N, dtype=torch.bool)
    only_a = model.mixed_label_ce(H, tgt_a, tgt_b, none, lam)
    assert torch.allclose(only_a, model.rec_loss(H.unsqueeze(0), tgt_a.unsqueeze(0), ones,
                                                 target_weight=lam.unsqueeze(0)), atol=1e-6)


def test_linear_ablation_and_alw_off_still_train(small_cfg):
    model, train = _model("BASRecSASRec", small_cfg, nonlinear=False, use_alw=False)
    model.train_stage = 2
    losses = model.calculate_loss(next(iter(train)))
    assert set(losses) == {"loss_main", "loss_ssa", "loss_csa"}


def test_substitute_table_from_training_split_only(small_cfg):
    model, train = _model("BASRecSASRec", small_cfg)
    _, seqs = training_sequences(train._dataset)
    expected = CooccurrenceSimilarity(seqs, model.n_items).topk(model.substitute_topk)
    assert torch.equal(model.substitute_table, expected)
    assert (model.substitute_table[0] == 0).all()


def test_cross_partner_positions_align_last_items(small_cfg):
    model, _ = _model("BASRecSASRec", small_cfg)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    perm = torch.tensor([1, 0])
    idx, valid = model.partner_positions(mask, perm)
    # row 0 (3 items) meets row 1 (2 items) aligned at the end: positions 1,2 <- 0,1
    assert valid.tolist() == [[False, True, True, False], [True, True, False, False]]
    assert idx[0, 1:3].tolist() == [0, 1] and idx[1, :2].tolist() == [1, 2]


@pytest.mark.parametrize("backbone", BACKBONES)
def test_two_stage_run_logs_named_losses(backbone, small_cfg):
    result = run_recbole_sada("BASRec" + backbone, "tiny", config_dict={**small_cfg, "epochs": 2, "stage1_epochs": 1})
    trainer = result["trainer"]
    assert trainer.loss_names == ["loss_main", "loss_ssa", "loss_csa"]
    assert result["test_result"]["ndcg@10"] >= 0
    # augmentation similarity (BASRec Table 6) is logged per epoch, one value per module
    assert set(trainer.epoch_stats) == {"sim_reorder", "sim_substitute", "sim_cross_item", "sim_cross_feature"}
    assert all(-1.0 <= v <= 1.0 for v in trainer.epoch_stats.values())


def test_basrec_runs_in_prefix_mode(small_cfg):
    result = run_recbole_sada("BASRecGRU4Rec", "tiny", config_dict={**small_cfg, "epochs": 2, "stage1_epochs": 1, "train_mode": "prefix"})
    assert result["trainer"].loss_names == ["loss_main", "loss_ssa", "loss_csa"]


def test_same_seed_same_result(small_cfg):
    cfg = {**small_cfg, "epochs": 2, "stage1_epochs": 1}
    a = run_recbole_sada("BASRecSASRec", "tiny", config_dict=cfg)["test_result"]
    b = run_recbole_sada("BASRecSASRec", "tiny", config_dict=cfg)["test_result"]
    assert a == b


def test_single_mode_sample_one_encoder_pass_one_operator_per_sequence(small_cfg):
    model, train = _model("BASRecSASRec", small_cfg, single_mode="sample")
    batch = next(iter(train))
    item_seq, item_seq_len = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    torch.manual_seed(3)
    views = list(model.single_augmented_views(item_seq, item_seq_len))
    assert len(views) == 1 and views[0][0] == "single"
    _, rate, aug = views[0]
    assert rate.shape == (item_seq.size(0),)
    assert ((rate >= model.rate_min) & (rate <= model.rate_max)).all()
    assert torch.equal(aug == 0, item_seq == 0)  # padding untouched
    calls = []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    model.train_stage = 2
    model.calculate_loss(batch)
    assert len(calls) == 2  # the original pass + one single-augmentation pass (all: 3)
    calls.clear()
    full, _ = _model("BASRecSASRec", small_cfg)
    full.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    full.train_stage = 2
    full.calculate_loss(batch)
    assert len(calls) == 3


def test_single_mode_all_matches_one_view_per_operator(small_cfg):
    model, train = _model("BASRecSASRec", small_cfg)
    batch = next(iter(train))
    views = list(model.single_augmented_views(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]))
    assert [v[0] for v in views] == ["reorder", "substitute"]
    from recbole_sada.errors import InputError

    with pytest.raises(InputError, match="single_mode"):  # one-line CLI error (exit 2)
        _model("BASRecSASRec", small_cfg, single_mode="both")
    with pytest.raises(InputError, match="single_ops"):
        _model("BASRecSASRec", small_cfg, single_ops=["reorder", "shuffle"])
