"""The official BASRec code's computation as config: loss composition, ALW batch_sum, rounding,
history-masked ranking, negatives outside the history, positions from the end, validation start,
and the preset that sets them all."""
from pathlib import Path

import pytest
import torch
from recbole.utils import init_seed

from recbole_sada.config import build_config
from recbole_sada.data import create_dataset, data_preparation
from recbole_sada.model import augment as A
from recbole_sada.quick_start import run_recbole_sada
from recbole_sada.utils import get_model

ROOT = Path(__file__).resolve().parents[1]
PRESET = str(ROOT / "properties" / "preset" / "basrec_official.yaml")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def build(small_cfg, model, files=None, **extra):
    config = build_config(model, "tiny", config_file_list=files, config_dict={**small_cfg, "stage1_epochs": 0, **extra})
    init_seed(config["seed"], True)
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], True)
    return get_model(model)(config, train._dataset), train


# ------------------------------------------------------------------ rounding
def test_official_rounding_counts():
    lens = torch.tensor([1, 2, 5, 10, 10])
    rate = torch.tensor([0.7, 0.3, 0.5, 0.29, 0.71])
    assert A.num_augmented(rate, lens, 0, "official").tolist() == [0, 0, 2, 2, 7]
    assert A.num_augmented(rate, lens, 0, "ceil").tolist() == [1, 1, 3, 3, 8]
    with pytest.raises(ValueError):
        A.num_augmented(rate, lens, 0, "round")


def test_official_reorder_never_moves_the_last_item_and_shuffles_int_rate_len():
    B, L = 200, 12
    lens = torch.randint(1, L + 1, (B,), generator=gen(0))
    seq = torch.arange(1, L + 1).repeat(B, 1) * (torch.arange(L) < lens.unsqueeze(1))
    rate = torch.full((B,), 0.7)
    out = A.m_reorder(seq, lens, rate, gen(1), rounding="official")
    rows = torch.arange(B)
    assert torch.equal(out[rows, lens - 1], seq[rows, lens - 1])  # the last item stays
    moved = (out != seq).sum(1)
    assert torch.all(moved <= (0.7 * lens).floor().long())
    assert torch.equal(out == 0, seq == 0)  # padding untouched
    assert torch.equal(out.sort(1).values, seq.sort(1).values)  # a permutation of each row
    assert torch.equal(A.m_reorder(seq[:1, :1], torch.tensor([1]), 0.9, gen(2), rounding="official"), seq[:1, :1])


def test_official_substitute_replaces_at_least_one_item_with_top1():
    seq = torch.tensor([[1, 2, 3, 0], [4, 0, 0, 0]])
    lens = torch.tensor([3, 1])
    table = torch.tensor([[0], [5], [6], [7], [8], [1], [2], [3], [4]])  # top-1 neighbour
    out = A.m_substitute(seq, lens, 0.2, table, gen(0), rounding="official")  # int(0.2 * 3) = 0 -> 1
    assert ((out != seq).sum(1) == 1).all()
    changed = out != seq
    assert torch.equal(out[changed], table[seq[changed], 0])


# ------------------------------------------------------------------ ALW batch_sum
def test_alw_batch_sum_is_the_batch_sum_of_minmax_weights():
    rate = torch.tensor([0.2, 0.5, 0.7, 0.3])
    lam = torch.tensor([0.9, 0.1, 0.5, 0.05])
    w = A.alw_weights(rate, lam, norm="minmax")
    w1 = 1 / (rate * lam)
    assert torch.allclose(w, (w1 - w1.min()) / (w1.max() - w1.min()))
    assert torch.allclose(A.alw_weights(rate, lam, norm="batch_sum"), torch.full((4,), float(w.sum())))


def test_batch_sum_loss_equals_the_official_broadcast(small_cfg):
    """rec_loss with batch_sum weights = the official code's (B*L,) x (B, 1) broadcast, by hand."""
    net, _ = build(small_cfg, "BASRecSASRec")
    B, T, D = 3, 4, net.item_embedding.embedding_dim
    g = gen(3)
    H = torch.randn(B, T, D, generator=g)
    targets = torch.randint(1, net.n_items, (B, T), generator=g)
    targets[0, 3] = 0
    negatives = torch.randint(1, net.n_items, (B, T), generator=g)
    mask = targets > 0
    w = torch.tensor([0.0, 0.3, 1.0])
    ours = net.rec_loss(H, targets, mask, weight=torch.full((B,), float(w.sum())), negatives=negatives)
    table = net.item_embedding.weight
    pos = (H * table[targets]).sum(-1).view(-1)
    neg = (H * table[negatives]).sum(-1).view(-1)
    istarget = mask.view(-1).float()
    per = (-torch.log(torch.sigmoid(pos) + 1e-24) - torch.log(1 - torch.sigmoid(neg) + 1e-24)) * istarget
    official = torch.sum(per * w.unsqueeze(-1)) / istarget.sum()  # (B*L,) * (B, 1) -> (B, B*L)
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)


# ------------------------------------------------------------------ loss composition
def test_loss_composition_counts_views_and_mixes(small_cfg, monkeypatch):
    net, train = build(small_cfg, "BASRecSASRec", single_mode="sample", n_single_views=4, n_item_mixes=3,
                       n_feature_mixes=2)
    batch = next(iter(train))
    calls = {"encode": 0, "item": 0, "feature": 0}
    encode = net.encode

    def counting_encode(*a):
        calls["encode"] += 1
        return encode(*a)

    mixup = A.mixup_weights

    def counting_mixup(mode, *a, **k):
        calls[mode] += 1
        return mixup(mode, *a, **k)

    net.grouped_encoding = False
    net.encode = counting_encode
    monkeypatch.setattr(A, "mixup_weights", counting_mixup)
    net.train()
    net.calculate_loss(batch)
    assert calls == {"encode": 1 + 4, "item": 3, "feature": 2}


def test_sum_is_n_times_mean(small_cfg):
    batch = None
    out = {}
    for reduce in ("mean", "sum"):
        net, train = build(small_cfg, "BASRecSASRec", n_single_views=2, n_item_mixes=2, n_feature_mixes=2,
                           aug_reduce=reduce)
        net.eval()
        batch = batch or next(iter(train))
        torch.manual_seed(0)
        out[reduce] = net.calculate_loss(batch)
    assert out["sum"]["loss_main"].item() == pytest.approx(out["mean"]["loss_main"].item())
    assert out["sum"]["loss_ssa"].item() == pytest.approx(4 * out["mean"]["loss_ssa"].item(), rel=1e-5)
    assert out["sum"]["loss_csa"].item() == pytest.approx(4 * out["mean"]["loss_csa"].item(), rel=1e-5)


@pytest.mark.parametrize("key,value", [("aug_reduce", "max"), ("alw_norm", "sum"), ("aug_rounding", "floor"),
                                       ("n_item_mixes", -1), ("neg_exclude", "all"), ("position_from", "middle"),
                                       ("group_overhead", -5), ("group_overhead", "many")])
def test_bad_values_are_input_errors(small_cfg, key, value):
    from recbole_sada.errors import InputError

    with pytest.raises(InputError, match=key):
        build(small_cfg, "BASRecSASRec", **{key: value})


# ------------------------------------------------------------------ protocol pieces
def test_history_masked_ranking_changes_the_rank(small_cfg):
    net, _ = build(small_cfg, "SASRec", eval_mask_history=True)
    net.eval()
    seq = torch.tensor([[3, 5, 0, 0]])
    inter = {net.ITEM_SEQ: seq, net.ITEM_SEQ_LEN: torch.tensor([2])}
    with torch.no_grad():
        net.item_embedding.weight[5] = 10 * net.forward(seq, torch.tensor([2]))[0]  # item 5 would rank first
        raw = net.full_sort_scores(inter)
        masked = net.full_sort_predict(inter)
    assert raw[0, 1:].argmax().item() + 1 == 5
    assert masked[0, 3] == float("-inf") and masked[0, 5] == float("-inf")
    keep = torch.ones(net.n_items, dtype=torch.bool)
    keep[[0, 3, 5]] = False
    assert torch.equal(masked[0, keep], raw[0, keep])
    assert masked[0, 1:].argmax().item() + 1 != 5
    net.eval_mask_history = False  # off: RecBole's scores, untouched
    with torch.no_grad():
        assert torch.equal(net.full_sort_predict(inter), raw)


def test_negatives_outside_the_history(small_cfg):
    net, _ = build(small_cfg, "SASRec", neg_exclude="history")
    n = net.n_items
    g = gen(4)
    item_seq = torch.randint(1, n, (64, 8), generator=g)
    targets = torch.randint(1, n, (64, 8), generator=g)
    torch.manual_seed(1)
    neg = net.sample_negatives(targets, item_seq)
    history = torch.cat([item_seq, targets], 1)
    assert not (neg.unsqueeze(-1) == history.unsqueeze(1)).any()
    assert ((neg >= 1) & (neg < n)).all()


def test_positions_from_the_end(small_cfg):
    net, _ = build(small_cfg, "SASRec", position_from="end")
    seen = []
    emb = net.position_embedding

    class Spy(torch.nn.Module):
        def forward(self, ids):
            seen.append(ids.clone())
            return emb(ids)

    net.position_embedding = Spy()
    L = net.max_seq_length
    seq = torch.zeros(2, L, dtype=torch.long)
    seq[0, :3] = torch.tensor([1, 2, 3])
    seq[1, :] = 4
    lens = torch.tensor([3, L])
    net.eval()
    with torch.no_grad():
        net.encode(net.embed_items(seq), seq, lens)
    ids = seen[0]
    assert ids[0, :3].tolist() == [L - 3, L - 2, L - 1]  # the last item at position L - 1
    assert ids[1].tolist() == list(range(L))


def test_validation_starts_at_valid_start_epoch(small_cfg):
    epochs = []
    run_recbole_sada("SASRec", "tiny", config_dict={**small_cfg, "epochs": 4, "valid_start_epoch": 2},
                     callback_fn=lambda e, s: epochs.append(e))
    assert epochs == [2, 3]


def test_official_preset_trains(small_cfg):
    config = build_config("BASRecSASRec", "tiny", config_file_list=[PRESET], config_dict=small_cfg)
    assert (config["n_single_views"], config["n_item_mixes"], config["aug_reduce"], config["alw_norm"]) == (
        4, 3, "sum", "batch_sum")
    assert config["valid_metric"] == "NDCG@20" and config["eval_mask_history"] is True
    result = run_recbole_sada("BASRecSASRec", "tiny", config_file_list=[PRESET],
                              config_dict={**small_cfg, "epochs": 1, "valid_start_epoch": 0})
    assert set(result["trainer"].loss_names) == {"loss_main", "loss_ssa", "loss_csa"}


def test_single_batched_is_the_same_function(small_cfg):
    """All views in one encoder call = one call per view (eval mode: the same draws, no dropout)."""
    out = {}
    batch = None
    for batched in (False, True):
        net, train = build(small_cfg, "BASRecSASRec", single_mode="sample", n_single_views=3, single_batched=batched)
        net.eval()
        batch = batch or next(iter(train))
        net.zero_grad()
        torch.manual_seed(0)
        losses = net.calculate_loss(batch)
        sum(losses.values()).backward()
        out[batched] = (losses["loss_ssa"].item(), net.item_embedding.weight.grad.clone())
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-5)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-6, rtol=1e-4)


def test_cross_mix_on_real_positions_equals_the_dense_computation(small_cfg, monkeypatch):
    """loss_csa computed on the flat list of real targets = the (B, T, D) computation of Eq. 10-12
    (same draws), written out densely here."""
    net, train = build(small_cfg, "BASRecSASRec", n_item_mixes=2, n_feature_mixes=1)
    net.eval()
    batch = next(iter(train))
    item_seq, item_seq_len, targets, mask = net.training_batch(batch)
    H = net.select_outputs(net.encode(net.embed_items(item_seq), item_seq, item_seq_len), item_seq_len, targets)
    negatives = net.sample_negatives(targets, item_seq)
    torch.manual_seed(9)
    ours = net.cross_sequence_loss(batch, H, targets, mask, negatives)

    torch.manual_seed(9)
    B, T, D = H.shape
    table = net.item_embedding.weight
    terms = []
    for i in range(2):
        perm = net.cross_partners(batch, B, H.device)
        idx, valid = net.partner_positions(mask, perm)
        gather = lambda X: X[perm].gather(1, idx.unsqueeze(-1).expand(-1, -1, X.size(-1)))  # noqa: E731
        for mode in (["item", "feature"] if i == 0 else ["item"]):
            lam = A.mixup_weights(mode, B, T, D, net.alpha)
            lam = torch.where(valid.unsqueeze(-1), lam.expand(B, T, D), torch.ones_like(H))
            h = lam * H + (1 - lam) * gather(H)
            pos = lam * table[targets] + (1 - lam) * gather(table[targets])
            neg = lam * table[negatives] + (1 - lam) * gather(table[negatives])
            per = torch.nn.functional.softplus(-(h * pos).sum(-1)) + torch.nn.functional.softplus((h * neg).sum(-1))
            terms.append(per[mask].mean())
    assert ours.item() == pytest.approx((sum(terms) / len(terms)).item(), rel=1e-5)


@pytest.mark.parametrize("value", [-1, "abc", 2.5])
def test_bad_valid_start_epoch_is_an_input_error(small_cfg, value):
    from recbole_sada.errors import InputError
    from recbole_sada.trainer import PluginTrainer

    net, _ = build(small_cfg, "SASRec")
    config = build_config("SASRec", "tiny", config_dict={**small_cfg, "valid_start_epoch": value})
    with pytest.raises(InputError, match="valid_start_epoch"):
        PluginTrainer(config, net)
