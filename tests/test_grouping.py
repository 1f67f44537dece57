"""Length-grouped encoding (recbole_sada.model.backbones.grouping) is exact.

For every backbone, on a batch with lengths 1..L, encoding in length groups gives the padded
computation's outputs at every real position (eval mode, max abs difference < 1e-5) and the same
gradients; also for augmented (mixed) inputs and for a whole BASRec step.  The grouping rule is
the optimal cut under its cost model.
"""
import itertools

import pytest
import torch
from recbole.utils import init_seed

from recbole_sada.config import build_config
from recbole_sada.data import create_dataset, data_preparation
from recbole_sada.model.backbones.grouping import gather_last, grouped_encode, plan_groups
from recbole_sada.utils import get_model

L = 10
SMALL = {
    "hidden_size": 16, "embedding_size": 16, "inner_size": 32, "n_layers": 2, "n_heads": 2,
    "num_layers": 1, "MAX_ITEM_LIST_LENGTH": L, "epochs": 1, "train_batch_size": 64,
    "eval_batch_size": 64, "show_progress": False, "device": "cpu", "use_gpu": False,
    "seed": 7, "state": "ERROR", "train_mode": "sequence",
}
BACKBONES = [("SASRec", {}), ("GRU4Rec", {}), ("NextItNet", {}), ("FMLPRec", {}), ("BERT4Rec", {})]
_CACHE = {}


def build(root, model, **extra):
    key = (model, tuple(sorted(extra.items())))
    if key not in _CACHE:
        config = build_config(model, "tiny", config_dict=dict(SMALL, data_path=str(root), **extra))
        init_seed(config["seed"], True)
        train, _, _ = data_preparation(config, create_dataset(config))
        init_seed(config["seed"], True)
        _CACHE[key] = (get_model(model)(config, train._dataset), train)
    return _CACHE[key]


def varied_batch(n_items, B=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, L + 1, (B,), generator=g)
    lens[:3] = torch.tensor([1, L, 2])
    seq = torch.randint(1, n_items, (B, L), generator=g)
    seq[torch.arange(L).unsqueeze(0) >= lens.unsqueeze(1)] = 0
    return seq, lens


def real(seq, lens):
    return torch.arange(seq.size(1)).unsqueeze(0) < lens.unsqueeze(1)


# ------------------------------------------------------------------ the rule
def test_plan_covers_every_row_once_and_fits_each_row():
    lens = torch.tensor([5, 1, 9, 9, 3, 1, 7, 2, 10, 4])
    for overhead in (0, 3, 20, 1e9, float("inf")):
        order, groups = plan_groups(lens, overhead)
        assert sorted(order.tolist()) == list(range(len(lens)))
        assert groups[0][0] == 0 and groups[-1][1] == len(lens)
        assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
        for start, end, length in groups:
            assert lens[order[start:end]].max().item() == length
    assert len(plan_groups(lens, 0)[1]) == len(set(lens.tolist()))  # free groups: one per length
    assert len(plan_groups(lens, float("inf"))[1]) == 1


def test_plan_is_optimal_under_its_cost_model():
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        lens = torch.randint(1, 9, (12,), generator=g)
        overhead = float(trial % 5) * 4
        _, groups = plan_groups(lens, overhead)
        cost = sum((e - s) * n + overhead for s, e, n in groups)
        values = sorted(set(lens.tolist()))
        srt = sorted(lens.tolist())
        best = float("inf")
        for k in range(len(values)):  # brute force over cut sets between distinct lengths
            for cuts in itertools.combinations(values[:-1], k):
                bounds = list(cuts) + [values[-1]]
                total, lo = 0.0, 0
                for b in bounds:
                    n = sum(1 for x in srt if lo < x <= b)
                    total += n * b + overhead
                    lo = b
                best = min(best, total)
        assert cost == pytest.approx(best)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize("model,extra", BACKBONES)
def test_grouped_outputs_equal_padded_at_real_positions(tiny_root, model, extra):
    net, _ = build(tiny_root, model, **extra)
    net.eval()
    assert net.grouping_exact
    seq, lens = varied_batch(net.n_items)
    with torch.no_grad():
        E = net.embed_items(seq)
        ref = net.encode(E, seq, lens)
        out = grouped_encode(net.encode, E, seq, lens, overhead=0)
        last = grouped_encode(net.encode, E, seq, lens, overhead=0, last_only=True)
    m = real(seq, lens)
    assert out.shape == ref.shape
    assert (out[m] - ref[m]).abs().max() < 1e-5
    assert (last - gather_last(ref, lens)).abs().max() < 1e-5
    # augmented input: a mix of two embedding sequences sharing the original's padding
    seq2 = torch.where(m, torch.randint(1, net.n_items, seq.shape), seq)
    with torch.no_grad():
        E_mix = 0.3 * E + 0.7 * net.embed_items(seq2)
        ref = net.encode(E_mix, seq, lens)
        out = grouped_encode(net.encode, E_mix, seq, lens, overhead=0)
    assert (out[m] - ref[m]).abs().max() < 1e-5


@pytest.mark.parametrize("model,extra", BACKBONES)
def test_grouped_gradients_equal_padded(tiny_root, model, extra):
    net, _ = build(tiny_root, model, **extra)
    net.eval()
    seq, lens = varied_batch(net.n_items, seed=2)
    m = real(seq, lens).unsqueeze(-1).float()
    probe = torch.randn(seq.size(0), L, net.item_embedding.embedding_dim, generator=torch.Generator().manual_seed(3))

    def grads(fn):
        net.zero_grad()
        H = fn(net.embed_items(seq), seq, lens)
        (H * probe * m).sum().div(m.sum()).backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    ref = grads(net.encode)
    out = grads(lambda E, s, n: grouped_encode(net.encode, E, s, n, overhead=0))
    assert ref.keys() == out.keys() and ref
    for name in ref:  # float rounding only: relative to the gradient's scale
        assert (ref[name] - out[name]).abs().max() <= 1e-5 * max(1.0, ref[name].abs().max().item()), name


@pytest.mark.parametrize("model", ["SASRec", "BASRecSASRec", "BASRecGRU4Rec", "BERT4Rec"])
def test_training_step_same_loss_and_gradients_grouped_or_padded(tiny_root, model):
    """A whole step (BASRec: every augmented view and mix) is the same with grouping on or off
    (eval mode: no dropout; the same random draws, since grouping draws none)."""
    net, train = build(tiny_root, model, stage1_epochs=0)
    net.eval()
    batch = next(iter(train))
    results = []
    for grouped in (False, True):
        net.grouped_encoding, net.group_overhead = grouped, 0.0
        net.zero_grad()
        torch.manual_seed(11)
        out = net.calculate_loss(batch)
        loss = sum(out.values()) if isinstance(out, dict) else out
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    net.grouped_encoding = True
    (l0, g0), (l1, g1) = results
    assert l0 == pytest.approx(l1, abs=1e-5)
    for name in g0:
        assert (g0[name] - g1[name]).abs().max() <= 1e-5 * max(1.0, g0[name].abs().max().item()), name


def test_fmlprec_circular_filter_is_not_grouped(tiny_root):
    net, _ = build(tiny_root, "FMLPRec", filter_causal=False)
    net.eval()
    assert not net.grouping_exact
    seq, lens = varied_batch(net.n_items)
    with torch.no_grad():
        E = net.embed_items(seq)
        assert torch.equal(net.encode_grouped(E, seq, lens), net.encode(E, seq, lens))


def test_grouping_off_by_config(tiny_root):
    net, _ = build(tiny_root, "SASRec", grouped_encoding=False)
    assert net.grouped_encoding is False
    net2, _ = build(tiny_root, "SASRec")
    assert net2.grouped_encoding is True and net2.group_overhead > 0


def test_ml100k_metrics_identical_grouped_or_padded(tmp_path):
    """RecBole's evaluator on ml-100k (full ranking, valid split): the same metrics to the last
    digit with grouping on and off, after one epoch of training."""
    from recbole_sada.quick_start import prepare
    from recbole_sada.trainer import PluginTrainer

    cfg = {"epochs": 1, "hidden_size": 16, "inner_size": 32, "n_layers": 1, "n_heads": 1, "train_mode": "sequence",
           "show_progress": False, "state": "ERROR", "checkpoint_dir": str(tmp_path), "group_overhead": 0}
    config, _, train, valid, _ = prepare("SASRec", "ml-100k", config_dict=cfg)
    init_seed(config["seed"], True)
    net = get_model("SASRec")(config, train._dataset)
    trainer = PluginTrainer(config, net)
    trainer._train_epoch(train, 0)
    results = {}
    for grouped in (True, False):
        net.grouped_encoding = grouped
        results[grouped] = trainer._valid_epoch(valid)[1]
    assert results[True] == results[False]
