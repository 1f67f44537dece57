"""Unit tests of the plugin backbones on a tiny synthetic dataset (CPU, a few seconds).

FMLPRec: shapes, padding invariance, the filter mixes positions, the left-aligned layout equals the
authors' left-padded model, loss/backward in both train modes.  BERT4Rec: masking, the mask slot,
loss in both modes, padding invariance.  SASRec, GRU4Rec, NextItNet: padding invariance and
causality.
"""
import math

import pytest
import torch
from recbole.utils import init_seed

from recbole_sada.config import build_config
from recbole_sada.data import create_dataset, data_preparation
from recbole_sada.data.dataset import TARGET_SEQ_FIELD
from recbole_sada.model.backbones.bert4rec import BERT4Rec
from recbole_sada.model.backbones.fmlprec import FMLPRec
from recbole_sada.utils import get_model

DATASET = "tiny"
MAX_LEN = 8
SMALL = {
    "hidden_size": 16,
    "embedding_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "num_layers": 1,
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "epochs": 1,
    "train_batch_size": 64,
    "eval_batch_size": 64,
    "show_progress": False,
    "device": "cpu",
    "use_gpu": False,
    "reproducibility": True,
    "seed": 7,
    "state": "ERROR",
}


@pytest.fixture(scope="module")
def data_root(tiny_root):
    """The shared tiny atomic dataset of conftest.py (60 users, 40 items, 5..13 interactions)."""
    return tiny_root


_CACHE = {}


def build(data_root, model, train_mode="prefix", **extra):
    """(model, train_data) for ``model`` on the toy data; the model is in eval mode."""
    key = (model, train_mode, tuple(sorted(extra.items())))
    if key not in _CACHE:
        config_dict = dict(SMALL, data_path=str(data_root), train_mode=train_mode, **extra)
        config = build_config(model, DATASET, config_dict=config_dict)
        init_seed(config["seed"], True)
        dataset = create_dataset(config)
        train_data, _, _ = data_preparation(config, dataset)
        init_seed(config["seed"], True)
        net = get_model(model)(config, train_data._dataset)
        _CACHE[key] = (net, train_data)
    net, train_data = _CACHE[key]
    return net.eval(), train_data


def first_batch(train_data):
    return next(iter(train_data))


def random_batch(n_items, B=6, L=MAX_LEN, seed=0):
    """Right-padded ids with lengths 1..L (row 0 length 1, row 1 full)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, L + 1, (B,), generator=g)
    lens[0], lens[1] = 1, L
    seq = torch.randint(1, n_items, (B, L), generator=g)
    seq[torch.arange(L).unsqueeze(0) >= lens.unsqueeze(1)] = 0
    return seq, lens


def fill_padding(seq, lens, n_items, seed=1):
    """Same sequences with arbitrary item ids in the padding slots."""
    g = torch.Generator().manual_seed(seed)
    junk = torch.randint(1, n_items, seq.shape, generator=g)
    pad = torch.arange(seq.size(1)).unsqueeze(0) >= lens.unsqueeze(1)
    return torch.where(pad, junk, seq)


def scores(net, seq, lens):
    with torch.no_grad():
        return net.full_sort_predict({net.ITEM_SEQ: seq, net.ITEM_SEQ_LEN: lens})


def encoded(net, seq, lens):
    with torch.no_grad():
        return net.encode(net.embed_items(seq), seq, lens)


def loss_and_grad(net, interaction):
    net.train()
    net.zero_grad()
    loss = net.calculate_loss(interaction)
    loss.backward()
    net.eval()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    return loss.item(), grads


# ------------------------------------------------------------------ every backbone
@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "NextItNet", "FMLPRec", "BERT4Rec"])
def test_scores_are_padding_invariant(data_root, model):
    net, _ = build(data_root, model)
    seq, lens = random_batch(net.n_items)
    ref = scores(net, seq, lens)
    assert ref.shape == (seq.size(0), net.n_items)
    assert torch.allclose(ref, scores(net, fill_padding(seq, lens, net.n_items), lens), atol=1e-5)


@pytest.mark.parametrize(
    "model,extra",
    [("SASRec", {}), ("GRU4Rec", {}), ("NextItNet", {}), ("FMLPRec", {"filter_causal": True})],
)
def test_causal_backbones_do_not_see_later_items(data_root, model, extra):
    net, _ = build(data_root, model, **extra)
    seq, lens = random_batch(net.n_items, B=4, L=MAX_LEN, seed=3)
    seq[:, :] = torch.randint(1, net.n_items, seq.shape, generator=torch.Generator().manual_seed(4))
    lens[:] = MAX_LEN
    H = encoded(net, seq, lens)
    assert H.shape == (4, MAX_LEN, net.item_embedding.embedding_dim)
    for t in range(MAX_LEN - 1):
        changed = seq.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] % (net.n_items - 1)) + 1
        H2 = encoded(net, changed, lens)
        assert torch.allclose(H[:, : t + 1], H2[:, : t + 1], atol=1e-5), f"position {t} sees the future"
        assert not torch.allclose(H[:, t + 1 :], H2[:, t + 1 :], atol=1e-5)


# ------------------------------------------------------------------ FMLPRec
def test_fmlprec_encode_shape_and_filter_parameters(data_root):
    net, _ = build(data_root, "FMLPRec")
    seq, lens = random_batch(net.n_items)
    H = encoded(net, seq, lens)
    assert H.shape == (seq.size(0), MAX_LEN, 16)
    assert torch.isfinite(H).all()
    (block,) = net.blocks
    assert block.filter_layer.complex_weight.shape == (MAX_LEN // 2 + 1, 16, 2)


def test_fmlprec_filter_is_a_learned_global_mix(data_root):
    net, _ = build(data_root, "FMLPRec")
    layer = net.blocks[0].filter_layer
    x = torch.randn(3, MAX_LEN, 16)
    # the initialised filter is not the identity ...
    assert not torch.allclose(layer.filter(x), x, atol=1e-3)
    # ... while W = 1 + 0j is (rfft/irfft round trip with norm='ortho')
    saved = layer.complex_weight.data.clone()
    try:
        layer.complex_weight.data.zero_()
        layer.complex_weight.data[..., 0] = 1.0
        assert torch.allclose(layer.filter(x), x, atol=1e-5)
    finally:
        layer.complex_weight.data.copy_(saved)
    # the last output depends on the oldest item (the filter mixes positions)
    seq, lens = random_batch(net.n_items, seed=5)
    lens[:] = 5
    seq[:, 5:] = 0
    changed = seq.clone()
    changed[:, 0] = (changed[:, 0] % (net.n_items - 1)) + 1
    last = lambda s: encoded(net, s, lens)[:, 4]  # noqa: E731
    assert not torch.allclose(last(seq), last(changed), atol=1e-5)


def test_fmlprec_output_changes_with_the_filter(data_root):
    net, _ = build(data_root, "FMLPRec")
    seq, lens = random_batch(net.n_items, seed=6)
    ref = encoded(net, seq, lens)
    layer = net.blocks[0].filter_layer
    saved = layer.complex_weight.data.clone()
    try:
        layer.complex_weight.data.mul_(3.0)
        assert not torch.allclose(ref, encoded(net, seq, lens), atol=1e-4)
    finally:
        layer.complex_weight.data.copy_(saved)


def test_fmlprec_right_padded_equals_authors_left_padded_layout(data_root):
    """encode on RecBole's right padding == the model on left-padded input, read at L-1."""
    net, _ = build(data_root, "FMLPRec")
    seq, lens = random_batch(net.n_items, seed=8)
    H = encoded(net, seq, lens)
    left = torch.zeros_like(seq)
    for b, n in enumerate(lens.tolist()):
        left[b, MAX_LEN - n :] = seq[b, :n]
    with torch.no_grad():
        H_left = net.filter_stack(net.embed_items(left), left != 0)
    last = H[torch.arange(seq.size(0)), lens - 1]
    assert torch.allclose(last, H_left[:, -1], atol=1e-5)
    # every real position, not only the last, maps to its left-padded slot
    for b, n in enumerate(lens.tolist()):
        assert torch.allclose(H[b, :n], H_left[b, MAX_LEN - n :], atol=1e-5)


def test_fmlprec_last_position_is_causal_inner_positions_are_not(data_root):
    """Documented limitation of the paper's circular filter (prefix mode): inner positions see
    later items; sequence mode therefore uses the causal filter by default."""
    net, _ = build(data_root, "FMLPRec")
    assert not net.filter_causal
    assert build(data_root, "FMLPRec", train_mode="sequence")[0].filter_causal
    seq, lens = random_batch(net.n_items, B=4, seed=9)
    lens[:] = 6
    seq[:, 6:] = 0
    H = encoded(net, seq, lens)
    changed = seq.clone()
    changed[:, 5] = (changed[:, 5] % (net.n_items - 1)) + 1
    H2 = encoded(net, changed, lens)
    assert not torch.allclose(H[:, 2], H2[:, 2], atol=1e-5)  # position 2 sees item 5
    # dropping the last item == reading the shorter sequence: nothing after it matters
    short = fill_padding(seq, lens - 1, net.n_items)
    H3 = encoded(net, short, lens - 1)
    prefix = seq.clone()
    prefix[:, 5:] = 0
    H4 = encoded(net, prefix, lens - 1)
    assert torch.allclose(H3[:, 4], H4[:, 4], atol=1e-5)


@pytest.mark.parametrize("train_mode", ["prefix", "sequence"])
@pytest.mark.parametrize("loss_type", ["BCE", "CE"])
def test_fmlprec_loss_and_backward(data_root, train_mode, loss_type):
    net, train_data = build(data_root, "FMLPRec", train_mode, loss_type=loss_type)
    batch = first_batch(train_data)
    assert (TARGET_SEQ_FIELD in batch) == (train_mode == "sequence")
    loss, grads = loss_and_grad(net, batch)
    assert math.isfinite(loss) and loss > 0
    layer = net.blocks[0].filter_layer
    weight = layer.kernel if layer.causal else layer.complex_weight
    assert layer.causal == (train_mode == "sequence")
    assert weight.grad.abs().sum() > 0
    assert all(g is None or torch.isfinite(g).all() for g in grads)


# ------------------------------------------------------------------ BERT4Rec
def test_bert4rec_config_has_no_transform(data_root):
    net, train_data = build(data_root, "BERT4Rec")
    assert train_data.config["transform"] is None
    assert net.mask_token == net.n_items
    assert net.output_item_embedding().shape == (net.n_items, 16)
    assert net.embed_items(torch.tensor([[net.mask_token]])).shape == (1, 1, 16)


def test_bert4rec_append_item_shifts_only_full_rows(data_root):
    net, _ = build(data_root, "BERT4Rec")
    seq = torch.tensor([[3, 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]])
    lens = torch.tensor([2, 4, 1])
    junk = torch.tensor([[3, 4, 11, 12], [5, 6, 7, 8], [9, 13, 0, 14]])  # ids in padding ignored
    out, out_len = net.append_item(junk, lens, torch.tensor([21, 22, 23]))
    assert out.tolist() == [[3, 4, 21, 0], [6, 7, 8, 22], [9, 23, 0, 0]]
    assert out_len.tolist() == [3, 4, 2]
    out, _ = net.append_item(seq, lens, net.mask_token)
    assert (out == net.mask_token).sum(1).tolist() == [1, 1, 1]
    assert seq.tolist() == [[3, 4, 0, 0], [5, 6, 7, 8], [9, 0, 0, 0]]  # input untouched


@pytest.mark.parametrize("ft_ratio", [0.0, 0.5, 1.0])
def test_bert4rec_masking(data_root, ft_ratio):
    net, _ = build(data_root, "BERT4Rec")
    saved = net.ft_ratio
    net.ft_ratio = ft_ratio
    try:
        torch.manual_seed(0)
        seq, lens = random_batch(net.n_items, B=400, seed=10)
        masked_seq, masked = net.mask_sequence(seq, lens)
    finally:
        net.ft_ratio = saved
    pad = seq == 0
    assert not masked[pad].any(), "padding was masked"
    assert masked.any(dim=1).all(), "a row without a mask"
    assert (masked_seq[masked] == net.mask_token).all()
    assert torch.equal(masked_seq[~masked], seq[~masked])
    last = masked[torch.arange(seq.size(0)), lens - 1]
    if ft_ratio == 1.0:
        assert masked.sum(1).eq(1).all() and last.all()
    else:
        rate = masked[~pad].float().mean()
        assert 0.15 < rate < 0.75  # roughly mask_ratio (0.2), plus forced/last-only masks


def test_bert4rec_forward_reads_the_mask_slot(data_root):
    net, _ = build(data_root, "BERT4Rec")
    seq, lens = random_batch(net.n_items, seed=11)
    with torch.no_grad():
        h = net.forward(seq, lens)
        full, full_len = net.append_item(seq, lens, net.mask_token)
        rows = torch.arange(seq.size(0))
        assert (full[rows, full_len - 1] == net.mask_token).all()
        H = net.encode(net.embed_items(full), full, full_len)
        assert torch.allclose(h, H[rows, full_len - 1], atol=1e-6)
        # the full row lost its first item, the others kept every item
        assert full_len.tolist() == [min(n + 1, MAX_LEN) for n in lens.tolist()]
        assert full[1, : MAX_LEN - 1].tolist() == seq[1, 1:].tolist()
        # predict == full_sort_predict at the asked items (bias included)
        items = torch.randint(1, net.n_items, (seq.size(0),))
        p = net.predict({net.ITEM_SEQ: seq, net.ITEM_SEQ_LEN: lens, net.ITEM_ID: items})
        f = net.full_sort_predict({net.ITEM_SEQ: seq, net.ITEM_SEQ_LEN: lens})
        assert torch.allclose(p, f[rows, items], atol=1e-5)


def test_bert4rec_output_bias_is_in_scores_and_loss(data_root):
    net, train_data = build(data_root, "BERT4Rec", loss_type="CE")
    seq, lens = random_batch(net.n_items, seed=12)
    ref = scores(net, seq, lens)
    bias = torch.linspace(0, 1, net.n_items)
    net.output_bias.data += bias
    try:
        assert torch.allclose(scores(net, seq, lens), ref + bias, atol=1e-5)
        _, _ = loss_and_grad(net, first_batch(train_data))
        assert net.output_bias.grad is not None and net.output_bias.grad.abs().sum() > 0
    finally:
        net.output_bias.data -= bias


@pytest.mark.parametrize("train_mode", ["prefix", "sequence"])
@pytest.mark.parametrize("loss_type", ["BCE", "BPR", "CE"])
def test_bert4rec_loss_and_backward(data_root, train_mode, loss_type):
    net, train_data = build(data_root, "BERT4Rec", train_mode, loss_type=loss_type)
    batch = first_batch(train_data)
    assert (TARGET_SEQ_FIELD in batch) == (train_mode == "sequence")
    torch.manual_seed(0)
    loss, grads = loss_and_grad(net, batch)
    assert math.isfinite(loss) and loss > 0
    assert net.item_embedding.weight.grad[net.mask_token].abs().sum() > 0  # the mask token is used
    assert all(g is None or torch.isfinite(g).all() for g in grads)


def test_bert4rec_training_sequence_appends_the_next_item(data_root):
    """In both modes the sequence to mask is the input with its next item appended."""
    for mode in ("prefix", "sequence"):
        net, train_data = build(data_root, "BERT4Rec", mode)
        batch = first_batch(train_data)
        item_seq, item_seq_len, targets, mask = net.training_batch(batch)
        nxt = net.last_target(targets, mask)
        assert torch.equal(nxt, batch[net.POS_ITEM_ID])
        seq, seq_len = net.append_item(item_seq, item_seq_len, nxt)
        assert torch.equal(seq[torch.arange(seq.size(0)), seq_len - 1], nxt)


def test_plugin_registry_finds_the_new_backbones():
    assert get_model("FMLPRec") is FMLPRec
    assert get_model("BERT4Rec") is BERT4Rec
