"""SADA: fusion gate, cluster pairing and its fallbacks, switches back to BASRec, end-to-end runs."""
import pytest
import torch

from recbole_sada.model.sada import cluster_partners, popularity_gate
from recbole_sada.quick_start import run_recbole_sada

BASREC_SWITCHES = {
    "use_fusion": False,
    "use_cluster_pairing": False,
    "use_adaptive_mix": False,
    "substitute_semantic_weight": 0.0,
}


@pytest.fixture
def sada_cfg(small_cfg, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "sada_cache"
    return {**small_cfg, "epochs": 2, "stage1_epochs": 1, "n_clusters": 3, "cache_dir": str(cache)}


def test_popularity_gate_monotone_and_zero_for_padding():
    counts = torch.tensor([0, 0, 1, 5, 10, 100, 1000])
    g = popularity_gate(counts, scale=1.0, pivot=10, power=1.0)
    assert g[0] == 0.0
    assert torch.all(g[1:-1] >= g[2:])  # decreasing in popularity
    assert g[1] == 1.0 and abs(g[4] - 0.5) < 1e-6 and g[-1] < 0.02
    assert torch.all((g >= 0) & (g <= 1))


def test_cluster_pairing_prefers_same_cluster():
    torch.manual_seed(0)
    nearest = torch.tensor([[1, 2], [0, 2], [1, 0]])
    clusters = torch.tensor([0, 0, 1, 1, 1, 2, -1])
    for _ in range(20):
        perm, case = cluster_partners(clusters, nearest)
        for b in range(5):  # rows with a same-cluster partner in the batch
            assert case[b] == 0 and clusters[perm[b]] == clusters[b] and perm[b] != b
        assert case[5] == 1 and clusters[perm[5]] == 1  # cluster 2 alone: nearest present is 1
        assert case[6] == 2 and perm[6] != 6  # unknown cluster: random


def test_cluster_pairing_adjacent_order():
    nearest = torch.tensor([[2, 1], [0, 2], [0, 1]])
    clusters = torch.tensor([0, 1, 1])  # cluster 0's nearest is 2 (absent), then 1
    perm, case = cluster_partners(clusters, nearest)
    assert case[0] == 1 and clusters[perm[0]] == 1


def test_switches_reproduce_basrec_exactly(sada_cfg):
    basrec = run_recbole_sada("BASRecSASRec", "tiny", config_dict=sada_cfg)
    sada = run_recbole_sada("SADASASRec", "tiny", config_dict={**sada_cfg, **BASREC_SWITCHES})
    assert sada["test_result"] == basrec["test_result"]
    assert sada["best_valid_result"] == basrec["best_valid_result"]


def test_switches_reproduce_basrec_exactly_on_the_official_preset(sada_cfg):
    """The same with the official BASRec code's loss composition (4 views, 3 + 3 mixes, sums,
    batch_sum ALW, official rounding, top-1 substitution, negatives outside the history)."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    preset = yaml.safe_load((root / "properties" / "preset" / "basrec_official.yaml").read_text())
    schedule = {"epochs", "stage1_epochs", "valid_start_epoch", "stopping_step", "valid_metric", "torch_threads"}
    cfg = {**sada_cfg, **{k: v for k, v in preset.items() if k not in schedule}, "single_batched": True}
    assert cfg["n_single_views"] == 4 and cfg["n_item_mixes"] == 3 and cfg["alw_norm"] == "batch_sum"
    basrec = run_recbole_sada("BASRecSASRec", "tiny", config_dict=cfg)
    sada = run_recbole_sada("SADASASRec", "tiny", config_dict={**cfg, **BASREC_SWITCHES})
    assert sada["test_result"] == basrec["test_result"]
    assert sada["best_valid_result"] == basrec["best_valid_result"]


@pytest.mark.parametrize("backbone", ["SASRec", "GRU4Rec", "FMLPRec", "NextItNet"])
def test_sada_trains_with_all_modules(backbone, sada_cfg):
    result = run_recbole_sada("SADA" + backbone, "tiny", config_dict=sada_cfg)
    trainer = result["trainer"]
    assert trainer.loss_names == ["loss_main", "loss_ssa", "loss_csa"]
    stats = trainer.epoch_stats
    assert {"pair_same_cluster", "pair_adjacent_cluster", "pair_random"} <= set(stats)
    assert {"sim_reorder", "sim_substitute", "sim_cross_item", "sim_cross_feature"} <= set(stats)
    assert all(-1.0 <= stats[k] <= 1.0 for k in stats if k.startswith("sim_"))
    assert stats["pair_same_cluster"] > 0


@pytest.mark.parametrize("gate", ["learned", "uniform"])
def test_other_gates_and_id_output(gate, sada_cfg):
    result = run_recbole_sada("SADASASRec", "tiny", config_dict={**sada_cfg, "fusion_gate": gate, "fusion_output": "id"})
    assert result["test_result"]["ndcg@10"] >= 0


def test_fusion_changes_representation_of_tail_items_only_by_gate(sada_cfg):
    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    config, _, train, _, _ = prepare("SADASASRec", "tiny", config_dict={**sada_cfg, "fusion_init_std": 0.02})
    model = get_model("SADASASRec")(config, train._dataset)
    ids = torch.arange(model.n_items)
    fused = model.embed_items(ids)
    plain = model.item_embedding(ids)
    diff = (fused - plain).norm(dim=-1)
    assert diff[0] == 0  # padding untouched
    gate = model.fixed_gate
    sem = model.semantic_proj(model.item_semantic).norm(dim=-1)
    assert torch.allclose(diff[1:], (gate * sem)[1:], atol=1e-5)


def test_starts_from_a_backbone_checkpoint(sada_cfg):
    """SADA (and BASRec) can fine-tune a trained SASRec: its parameters are loaded, SADA's own
    projection starts fresh; a checkpoint with parameters the model lacks is refused."""
    base = run_recbole_sada("SASRec", "tiny", config_dict={**sada_cfg, "stage1_epochs": 0})
    ckpt = base["model_file"]
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    sada = run_recbole_sada("SADASASRec", "tiny", config_dict={**sada_cfg, "pretrained_path": ckpt, "epochs": 1})
    assert sada["trainer"].loss_names == ["loss_main", "loss_ssa", "loss_csa"]  # stage 2 from the start
    assert sada["epochs_run"] == 1
    sada_ckpt = sada["model_file"]
    from recbole_sada.errors import InputError

    with pytest.raises(InputError, match="unexpected parameters"):  # one-line CLI error (exit 2)
        run_recbole_sada("BASRecSASRec", "tiny", config_dict={**sada_cfg, "pretrained_path": sada_ckpt, "epochs": 1})
    # the loaded backbone weights are the checkpoint's (checked on a fresh load without training)
    from recbole_sada.quick_start import prepare
    from recbole_sada.trainer import PluginTrainer
    from recbole_sada.utils import get_model

    config, _, train, _, _ = prepare("SADASASRec", "tiny", config_dict={**sada_cfg, "pretrained_path": ckpt})
    model = get_model("SADASASRec")(config, train._dataset)
    PluginTrainer(config, model)._load_weights(ckpt, "loaded")
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v)


def test_zero_initialised_fusion_starts_as_the_backbone(sada_cfg):
    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    config, _, train, _, _ = prepare("SADASASRec", "tiny", config_dict=sada_cfg)
    assert config["fusion_init_std"] == 0.0
    model = get_model("SADASASRec")(config, train._dataset)
    ids = torch.arange(model.n_items)
    assert torch.equal(model.embed_items(ids), model.item_embedding(ids))
    # but the projection learns from the first step (tail items carry gate > 0)
    model.train()
    model.train_stage = 1
    loss = model.calculate_loss(next(iter(train)))["loss_main"]
    loss.backward()
    assert model.semantic_proj.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------ one item table per step
def _sada_model(sada_cfg, **extra):
    from recbole.utils import init_seed

    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    config, _, train, _, _ = prepare("SADASASRec", "tiny", config_dict={**sada_cfg, **extra})
    init_seed(config["seed"], True)
    net = get_model("SADASASRec")(config, train._dataset)
    with torch.no_grad():  # a non-zero projection, so that fusion changes the vectors
        net.semantic_proj.weight.normal_(std=0.1)
    return net, train


def test_step_rows_compute_each_id_once():
    from recbole_sada.model.sada import StepRows

    table = torch.randn(30, 4)
    seen = []
    rows = StepRows(lambda ids: (seen.extend(ids.tolist()), table[ids] * 2)[1])
    a = torch.tensor([[3, 1, 3, 0], [7, 7, 1, 2]])
    assert torch.equal(rows.get(a), table[a] * 2)
    b = torch.tensor([2, 9, 29, 3, 9])
    assert torch.equal(rows.get(b), table[b] * 2)
    assert sorted(seen) == sorted(set(seen)) == [0, 1, 2, 3, 7, 9, 29]


@pytest.mark.parametrize("loss_type", ["BCE", "CE"])
def test_sada_step_fuses_each_item_once_with_the_same_loss(sada_cfg, loss_type):
    """The step's loss and gradients equal the per-term full-table computation, while only the
    rows the step reads are fused (BCE) or the table once (CE)."""
    from recbole_sada.model.basrec import BASRecMixin

    net, train = _sada_model(sada_cfg, loss_type=loss_type, stage1_epochs=0)
    net.eval()  # no dropout: both paths see the same network
    batch = next(iter(train))
    fused_rows = []
    fuse = net.fuse

    def counting_fuse(ids, emb):
        fused_rows.append(ids.numel())
        return fuse(ids, emb)

    net.fuse = counting_fuse
    results = []
    for path in (BASRecMixin.calculate_loss, type(net).calculate_loss):
        fused_rows.clear()
        net.zero_grad()
        torch.manual_seed(5)
        loss = sum(path(net, batch).values())
        loss.backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads, sum(fused_rows)))
    (ref, g_ref, n_ref), (new, g_new, n_new) = results
    assert new == pytest.approx(ref, abs=1e-5)
    for name in g_ref:
        assert torch.allclose(g_ref[name], g_new[name], atol=1e-6, rtol=1e-4), name
    if loss_type == "CE":
        assert n_new <= net.n_items + batch[net.ITEM_SEQ].numel() * 3  # the table once (+ input rows)
    else:
        assert n_new <= net.n_items  # each touched item once, never the whole table per loss term
    assert n_ref >= 3 * net.n_items > n_new  # the old path fused the table in every loss term


def test_eval_table_is_cached_until_parameters_change(sada_cfg):
    net, _ = _sada_model(sada_cfg)
    net.eval()
    with torch.no_grad():
        first = net.output_item_embedding()
        assert net.output_item_embedding() is first
        net.semantic_proj.weight.add_(0.5)  # an update: the cached table is stale
        second = net.output_item_embedding()
    assert second is not first and not torch.allclose(second, first)
    net.load_state_dict(net.state_dict())  # a reload rebuilds it too
    with torch.no_grad():
        assert net.output_item_embedding() is not second


@pytest.mark.parametrize("mode", ["relu", "cosine01"])
def test_relevance_at_real_pairs_only_equals_the_full_computation(sada_cfg, mode):
    from recbole_sada.model import augment as A
    from recbole_sada.quick_start import prepare
    from recbole_sada.utils import get_model

    config, _, train, _, _ = prepare("SADASASRec", "tiny", config_dict={**sada_cfg, "relevance_mode": mode})
    model = get_model("SADASASRec")(config, train._dataset)
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, model.n_items, (6, 9), generator=g)
    b = torch.randint(0, model.n_items, (6, 9), generator=g)
    a[:, 6:] = 0  # padding tails
    b[0, :] = 0
    full = A.semantic_relevance(model.item_semantic[a], model.item_semantic[b], mode=mode)
    got = model.relevance(a, b)
    assert got.shape == full.shape and torch.equal(got, full)
    assert torch.all(got[:, 6:] == 1) and torch.all(got[0] == 1)  # padding pairs: plain BASRec mixing
    col = model.relevance(a, b[:, :1])  # broadcasting, as (B, L) against (B, 1)
    assert torch.equal(col, A.semantic_relevance(model.item_semantic[a], model.item_semantic[b[:, :1]], mode=mode))
