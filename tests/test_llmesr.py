"""LLM-ESR baseline: PCA init, retrieval of similar users (train split only), causal cross-attention,
the dual-view model end to end and its teacher caches."""
import numpy as np
import pytest
import torch

from recbole_sada.model.llmesr import CausalCrossAttention, pca_table, similar_users
from recbole_sada.quick_start import prepare, run_recbole_sada
from recbole_sada.utils import get_model
from tests.conftest import write_tiny_dataset


@pytest.fixture
def esr_cfg(small_cfg, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "sada_cache"
    return {**small_cfg, "epochs": 1, "n_clusters": 3, "cache_dir": str(cache), "sim_user_num": 3}


def test_pca_table_zero_rows_and_leading_components():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8)) * np.array([5, 3, 1, 1, 1, 1, 1, 1])
    X[0] = 0  # padding
    X[7] = 0  # an item without text
    P = pca_table(X, 4)
    assert P.shape == (30, 4)
    assert np.all(P[0] == 0) and np.all(P[7] == 0)
    rows = [i for i in range(30) if i not in (0, 7)]
    var = P[rows].var(0)
    assert np.all(np.diff(var) <= 1e-6)  # leading components first
    cov = np.cov(P[rows].T)
    assert np.allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-5)  # uncorrelated scores
    assert np.all(pca_table(X, 12)[:, 8:] == 0)  # beyond the rank: zeros
    # fit on a subset (the items seen in training): the other rows are projected, never fit on
    fit = np.zeros(30, dtype=bool)
    fit[:20] = True
    P1 = pca_table(X, 4, fit)
    X2 = X.copy()
    X2[25] *= 100.0  # an item outside the fit, e.g. one that occurs only in valid/test
    P2 = pca_table(X2, 4, fit)
    assert np.allclose(P1[:25], P2[:25]) and np.allclose(P1[26:], P2[26:])
    assert not np.allclose(P1[25], P2[25]) and np.any(P1[25] != 0)


def test_similar_users_are_other_candidates_by_cosine():
    torch.manual_seed(0)
    U = torch.randn(12, 5)
    U[0] = 0
    cand = torch.ones(12, dtype=torch.bool)
    cand[0] = cand[3] = False
    nb = similar_users(U, cand, 4)
    assert torch.all(nb[0] == -1) and torch.all(nb[3] == -1)
    Un = torch.nn.functional.normalize(U, dim=1)
    for u in torch.nonzero(cand).squeeze(1).tolist():
        row = nb[u].tolist()
        assert u not in row and 3 not in row and 0 not in row
        others = [v for v in range(12) if cand[v] and v != u]
        best = sorted(others, key=lambda v: -float(Un[u] @ Un[v]))[:4]
        assert row == best
    # fewer candidates than k: the rest is -1
    few = torch.zeros(12, dtype=torch.bool)
    few[[1, 2]] = True
    nb = similar_users(U, few, 4)
    assert nb[1].tolist() == [2, -1, -1, -1] and torch.all(nb[5] == -1)


def test_cross_attention_is_causal_and_leaves_padding_zero():
    torch.manual_seed(0)
    att = CausalCrossAttention(8, 2)
    seq = torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    q, kv = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out = att(q, kv, seq)
    assert torch.isfinite(out).all()
    assert torch.all(out[0, 3:] == 0)
    kv2 = kv.clone()
    kv2[:, 2] += 10.0  # change position 2 of the key/value view
    out2 = att(q, kv2, seq)
    assert torch.allclose(out[:, :2], out2[:, :2])  # earlier positions cannot see it
    assert not torch.allclose(out[:, 2], out2[:, 2])
    kv3 = kv.clone()
    kv3[0, 3:] += 10.0  # padding of row 0 is never attended to
    assert torch.allclose(att(q, kv3, seq)[0], out[0])


def _model(esr_cfg, model="LLMESRSASRec", **extra):
    config, data, train_data, _, _ = prepare(model, "tiny", None, {**esr_cfg, **extra}, ())
    return get_model(model)(config, train_data._dataset), data, train_data


def test_neighbours_and_their_sequences_come_from_the_train_split(esr_cfg, tmp_path):
    seqs = write_tiny_dataset(tmp_path)  # the same generator and seed as the fixture's data
    model, data, _ = _model(esr_cfg)
    uid_tok = data.field2id_token[data.uid_field]
    iid_tok = data.field2id_token[data.iid_field]
    L = model.max_seq_length
    for u in range(1, len(uid_tok)):
        train = seqs[int(uid_tok[u][1:])][:-2][-L:]  # leave-one-out: the last two are valid / test
        n = int(model.neighbour_len[u])
        got = [int(iid_tok[i][1:]) for i in model.neighbour_seq[u, :n].tolist()]
        assert got == train
        assert torch.all(model.neighbour_seq[u, n:] == 0)
        nb = model.neighbours[u]
        assert u not in nb.tolist() and torch.all(model.neighbour_len[nb[nb >= 0]] > 0)
    assert int((model.neighbours[1:] >= 0).sum()) > 0


def test_dual_view_scores_and_frozen_semantic_table(esr_cfg):
    model, _, train_data = _model(esr_cfg)
    D = model.item_embedding.embedding_dim
    assert model.output_item_embedding().shape == (model.n_items, 2 * D)
    # the ID table starts from the PCA of the semantic table
    from recbole_sada.data.dataset import training_sequences

    seen = np.zeros(model.n_items, dtype=bool)
    seen[np.concatenate(training_sequences(train_data._dataset)[1])] = True
    pca = torch.as_tensor(pca_table(model.semantic_table.weight.numpy(), D, seen))
    assert torch.allclose(model.item_embedding.weight, pca)
    batch = next(iter(train_data))
    model.train()
    losses = model.calculate_loss(batch)
    assert set(losses) == {"loss_rec", "loss_distill"} and float(losses["loss_distill"].detach()) > 0
    sum(losses.values()).backward()
    assert model.semantic_table.weight.grad is None  # frozen
    assert model.adapter[0].weight.grad is not None and model.item_embedding.weight.grad is not None


def test_epoch_teacher_equals_batch_teacher_of_the_same_weights(esr_cfg):
    model, _, train_data = _model(esr_cfg, distill_teacher="epoch")
    users = torch.arange(1, model.neighbours.size(0))
    model.on_epoch_start(0)
    cached, has = model.teacher(users)
    model.eval()  # the cache is computed without dropout: so is this reference
    model.distill_teacher = "batch"
    fresh, has2 = model.teacher(users)
    assert torch.equal(has, has2)
    assert torch.allclose(cached[has], fresh[has], atol=1e-5)


@pytest.mark.parametrize("model", ["LLMESRSASRec", "LLMESRGRU4Rec"])
def test_llmesr_trains_end_to_end(model, esr_cfg):
    result = run_recbole_sada(model, "tiny", config_dict=esr_cfg)
    assert result["trainer"].loss_names == ["loss_rec", "loss_distill"]
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_ablation_without_distillation_and_cross_attention(esr_cfg):
    result = run_recbole_sada("LLMESRSASRec", "tiny", config_dict={
        **esr_cfg, "use_distill": False, "use_cross_att": False, "id_init": "random", "distill_teacher": "epoch"})
    assert result["trainer"].loss_names == ["loss_rec"]


def test_bidirectional_backbone_is_refused_with_the_reason():
    from recbole_sada.model import grid

    assert "LLMESRBERT4Rec" in grid.UNSUPPORTED and "bidirectional" in grid.UNSUPPORTED["LLMESRBERT4Rec"]


def test_distillation_weight_is_not_basrecs_alpha(esr_cfg):
    # the official BASRec preset sets alpha 0.4 (its Beta mixup): it must not reach LLM-ESR
    model, _, _ = _model(esr_cfg, alpha=0.4)
    assert model.distill_weight == 0.1
    model, _, _ = _model(esr_cfg, distill_weight=0.3)
    assert model.distill_weight == 0.3


def test_adapter_per_distinct_id_and_cached_eval_table(esr_cfg):
    model, _, _ = _model(esr_cfg)
    ids = torch.tensor([[3, 3, 5, 0], [5, 1, 0, 0]])
    ref = model.adapter(model.semantic_table(ids))
    assert torch.allclose(model.semantic_vectors(ids), ref, atol=1e-6)
    model.eval()
    with torch.no_grad():
        t1 = model.output_item_embedding()
        assert model.output_item_embedding() is t1  # reused while evaluating
    model.train()
    with torch.no_grad():
        model.item_embedding.weight.add_(1.0)
    model.eval()
    assert not torch.allclose(model.output_item_embedding(), t1)  # rebuilt after training


def test_composed_adapter_has_the_two_layer_values_and_gradients(esr_cfg):
    model, _, _ = _model(esr_cfg)
    ids = torch.tensor([[3, 3, 5, 0], [5, 1, 0, 0]])
    params = list(model.adapter.parameters())
    two_layer = model.adapter(model.semantic_table(ids))
    ref_grads = torch.autograd.grad(two_layer.square().sum(), params)
    composed = model.semantic_vectors(ids)
    grads = torch.autograd.grad(composed.square().sum(), params)
    assert torch.allclose(composed, two_layer, atol=1e-6)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-4)
    table = model.adapted_table()
    assert torch.allclose(table, model.adapter(model.semantic_table.weight), atol=1e-6)


@pytest.mark.parametrize("backbone", ["SASRec", "GRU4Rec"])
def test_dual_views_grouped_equal_padded_and_two_separate_encodes(esr_cfg, backbone):
    model, _, train_data = _model(esr_cfg, model=f"LLMESR{backbone}")
    assert model.use_cross_att
    batch = next(iter(train_data))
    seq, lens = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    assert len(set(lens.tolist())) > 2  # several length groups
    model.eval()  # no dropout: the forms must agree number for number (up to rounding)
    real = (torch.arange(seq.size(1)).unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(-1)
    model.grouped_encoding, model.group_overhead = True, 0.0
    grouped = model.encode_views(seq, lens)
    model.grouped_encoding = False
    padded = model.encode_views(seq, lens)
    assert torch.allclose(grouped * real, padded * real, atol=1e-5)
    # one encoder call of 2B rows = the two views encoded apart
    id_emb, sem_emb = model.item_embedding(seq), model.semantic_vectors(seq)
    id_emb, sem_emb = model.sem2id(sem_emb, id_emb, seq), model.id2sem(id_emb, sem_emb, seq)
    apart = torch.cat([model.encode(id_emb, seq, lens), model.encode(sem_emb, seq, lens)], dim=-1)
    assert torch.allclose(padded * real, apart * real, atol=1e-5)


def test_one_view_scoring_is_the_views_half_of_the_dual_score(esr_cfg):
    model, _, train_data = _model(esr_cfg)
    D = model.item_embedding.embedding_dim
    batch = next(iter(train_data))
    seq, lens = batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN]
    model.eval()
    with torch.no_grad():
        h = model.forward(seq, lens)
        both = model.full_sort_scores(batch)
        halves = {}
        for view, part in (("id", slice(0, D)), ("semantic", slice(D, 2 * D))):
            model.set_score_view(view)  # the cached evaluation table is rebuilt for the view
            scores = model.full_sort_scores(batch)
            table = torch.cat([model.item_embedding.weight, model.adapted_table()], -1)
            assert torch.allclose(scores, h[:, part] @ table[:, part].t(), atol=1e-5)
            ids = torch.tensor([1, 2, 3])
            assert torch.all(model.item_vectors(ids)[:, D if view == "id" else 0:][:, :D] == 0)
            assert torch.allclose(model.item_vectors(ids)[:, part], table[ids][:, part], atol=1e-6)  # the kept half as trained
            halves[view] = scores
        # the two views' scores add up to the method's score
        assert torch.allclose(halves["id"] + halves["semantic"], both, atol=1e-5)
        model.set_score_view(None)
        assert torch.allclose(model.full_sort_scores(batch), both)
    iso = model.view_isotropy()
    assert set(iso) == {"id", "semantic", "semantic_input"} and all(0 <= v <= 1 + 1e-6 for v in iso.values())
    # the mean cosine over all pairs of real (non-zero) item rows, self-pairs included
    for name, table in (("id", model.item_embedding.weight), ("semantic", model.adapted_table()),
                        ("semantic_input", model.semantic_table.weight)):
        rows = torch.nn.functional.normalize(table[1:][table[1:].norm(dim=1) > 0].detach(), dim=1)
        assert abs(iso[name] - float((rows @ rows.t()).mean())) < 1e-5, name
    with pytest.raises(Exception, match="score view"):
        model.set_score_view("both")
