"""IDEA baseline: environment masks (padding untouched, causal), sub-sequence mixup identity,
the invariance penalties, and the adversarial alternating step through the trainer."""
import pytest
import torch

from recbole_sada.errors import InputError
from recbole_sada.model.idea import gumbel_sigmoid_mask, keep_shortfall, mix_masks, variance_penalty
from recbole_sada.quick_start import prepare, run_recbole_sada
from recbole_sada.utils import get_model


def _model(small_cfg, model="IDEASASRec", **extra):
    config, data, train_data, _, _ = prepare(model, "tiny", None, {**small_cfg, **extra}, ())
    return get_model(model)(config, train_data._dataset), train_data


def test_gumbel_masks_in_range_and_temperature():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6)
    m = gumbel_sigmoid_mask(logits, 0.5)
    assert m.shape == logits.shape and torch.all((m > 0) & (m < 1))
    assert torch.allclose(gumbel_sigmoid_mask(logits, 1.0, noise=False), torch.sigmoid(logits))
    sharp = gumbel_sigmoid_mask(logits, 0.01, noise=False)
    assert torch.all((sharp < 0.01) | (sharp > 0.99) | (logits.abs() < 0.05))  # low temperature: near-binary
    with pytest.raises(InputError):
        gumbel_sigmoid_mask(logits, 0.0)


def test_subsequence_mixup_is_a_mix_of_two_distinct_masks():
    torch.manual_seed(0)
    masks = torch.rand(3, 5, 7)
    envs = mix_masks(masks, 4, 0.4)
    assert envs.shape == (4, 5, 7)
    lo, hi = masks.min(0).values, masks.max(0).values
    assert torch.all(envs >= lo - 1e-6) and torch.all(envs <= hi + 1e-6)  # convex combination
    # with identical sub-sequences every environment is that sub-sequence (lambda has no effect)
    same = masks[:1].expand(3, -1, -1)
    assert torch.allclose(mix_masks(same, 2, 0.4), same[:2])
    # one sub-sequence: every environment is it
    assert torch.equal(mix_masks(masks[:1], 3, 0.4), masks[:1].expand(3, -1, -1))
    # mixing masked sequences == masking with the mixed mask (same item embeddings E)
    E = torch.randn(5, 7, 4)
    lam = torch.rand(5, 1)
    left = lam.unsqueeze(-1) * (masks[0].unsqueeze(-1) * E) + (1 - lam.unsqueeze(-1)) * (masks[1].unsqueeze(-1) * E)
    right = (lam * masks[0] + (1 - lam) * masks[1]).unsqueeze(-1) * E
    assert torch.allclose(left, right, atol=1e-6)


def test_variance_penalty_zero_iff_equal_risks():
    assert float(variance_penalty(torch.tensor([0.7, 0.7, 0.7]))) == 0.0
    assert float(variance_penalty(torch.tensor([0.0, 1.0]))) == pytest.approx(0.25)


def test_environment_masks_keep_padding_zero_and_are_causal(small_cfg):
    model, train_data = _model(small_cfg)
    model.train()
    seq = torch.tensor([[3, 4, 5, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 2]])
    emb = model.embed_items(seq)
    torch.manual_seed(1)
    envs = model.environment_masks(emb, seq)
    assert envs.shape == (model.n_env + 1, 2, 10)
    assert torch.all(envs[:, 0, 3:] == 0)  # padding stays padding
    assert torch.all(envs[-1, 0, :3] == 1) and torch.all(envs[-1, 1] == 1)  # the original sequence
    # the mask at a position depends on that position's item only: changing a later item leaves
    # the earlier masks unchanged (same noise)
    seq2 = seq.clone()
    seq2[1, 6] = 4
    torch.manual_seed(1)
    envs2 = model.environment_masks(model.embed_items(seq2), seq2)
    assert torch.allclose(envs[:, :, :6], envs2[:, :, :6]) and torch.allclose(envs[:, 1, 7:], envs2[:, 1, 7:])


def test_penalties_and_loss_names(small_cfg):
    for invariance in ("vrex", "irmv1"):
        model, train_data = _model(small_cfg, invariance=invariance)
        model.train()
        batch = next(iter(train_data))
        risks, penalty, keep = model.environment_risks(batch)
        assert risks.shape == (model.n_env + 1,) and float(penalty) >= 0
        assert keep.shape == (model.n_env,) and torch.all((keep > 0) & (keep <= 1))
        losses = model.calculate_loss(batch)
        assert set(losses) == {"loss_env", "loss_invariance"}
        sum(losses.values()).backward()
        assert model.item_embedding.weight.grad is not None
        # the recommender's step never trains the generators (masks fixed)
        assert all(p.grad is None for p in model.env_generator.parameters())
    # the adversary's loss reaches the generators
    model.zero_grad()
    (model.adversary_loss(batch)).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.env_generator.parameters())


def test_adversary_is_outside_the_main_optimiser_and_steps_alone(small_cfg):
    from recbole_sada.trainer import PluginTrainer

    model, train_data = _model(small_cfg)
    config = prepare("IDEASASRec", "tiny", None, small_cfg, ())[0]
    trainer = PluginTrainer(config, model)
    main = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    gen = {id(p) for p in model.env_generator.parameters()}
    assert not main & gen and main | gen == {id(p) for p in model.parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    trainer._adversary_step(next(iter(train_data)))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("env_generator.") for n in changed)
    assert all(p.grad is None for p in model.parameters())  # nothing left for the main step


@pytest.mark.parametrize("model", ["IDEASASRec", "IDEAGRU4Rec"])
def test_idea_trains_end_to_end(model, small_cfg):
    result = run_recbole_sada(model, "tiny", config_dict=small_cfg)
    assert result["trainer"].loss_names == ["loss_env", "loss_invariance"]
    assert result["trainer"].adversary_optimizer is not None
    assert 0 <= result["test_result"]["ndcg@10"] <= 1


def test_config_errors_and_refused_backbone(small_cfg):
    from recbole_sada.model import grid

    assert "IDEABERT4Rec" in grid.UNSUPPORTED
    with pytest.raises(InputError, match="invariance"):
        _model(small_cfg, invariance="irm")
    with pytest.raises(InputError, match="two environments"):
        _model(small_cfg, n_env=1, include_original=False)
    with pytest.raises(InputError, match=r"gumbel_temp must be > 0.*--gumbel_temp=") as err:
        _model(small_cfg, gumbel_temp=0)
    assert "\n" not in str(err.value)


def test_keep_shortfall_constrains_the_adversary(small_cfg):
    assert float(keep_shortfall(torch.tensor([0.6, 0.9]), 0.5)) == 0.0
    assert float(keep_shortfall(torch.tensor([0.0, 0.5]), 0.5)) == pytest.approx(0.25)
    # a generator that drops everything pays for it in the adversary's loss
    model, train_data = _model(small_cfg, keep_min=0.5)
    model.train()
    batch = next(iter(train_data))
    torch.manual_seed(0)
    free = float(model.adversary_loss(batch).detach())
    with torch.no_grad():
        model.env_generator.bias.fill_(-50.0)  # keep nothing
    torch.manual_seed(0)
    assert float(model.adversary_loss(batch).detach()) > free + 0.3
    with pytest.raises(InputError, match="keep_min"):
        _model(small_cfg, keep_min=1.5)
