"""IDEA (Liao et al., "Mitigating Distribution Shifts in Sequential Recommendation: An Invariance
Perspective", SIGIR 2025) as a baseline of the plugin, over any causal plugin backbone.

IDEA learns preferences that stay stable across *environments*, simulated from each training
sequence in three steps:

1. **Environment generator** (``n_subseq`` learned sub-sequences).  Generator ``k`` scores every
   item of the sequence as a potential noise item and keeps it with a relaxed Bernoulli
   (Gumbel-sigmoid) mask ``m_k,t = sigmoid((g_k(e_t) + log u - log(1 - u)) / gumbel_temp)``,
   ``u ~ U(0, 1)``; the sub-sequence is ``m_k * E`` (item embeddings scaled, padding stays zero).
2. **Sub-sequence mixup** (``n_env`` environments).  Each environment mixes two distinct
   sub-sequences of the same user, ``lam * m_i * E + (1 - lam) * m_j * E`` with
   ``lam ~ Beta(mix_alpha, mix_alpha)`` per sequence.  Because both come from the same ``E``, this
   is the sequence masked by the mixed mask ``lam * m_i + (1 - lam) * m_j``
   (:func:`mix_masks`; the unit tests pin the identity).
3. **Invariant risk minimisation across environments**.  Each environment's recommendation risk
   ``R_e`` (the backbone's loss on the environment's encoded sequence, the same targets and the
   same sampled negatives in every environment) enters

       loss = mean_e R_e + invariance_weight * P({R_e})

   with ``invariance: vrex`` (``P`` = the variance of the risks, the V-REx form of IRM; what
   public re-implementations of IDEA compute) or ``irmv1`` (``P`` = the mean over environments of
   the squared gradient of ``R_e`` with respect to a dummy scale on the scores, at 1: IRMv1).

**Alternating training** (through the plugin's trainer, no second loop).  The generators are an
*adversary*: per training batch, :class:`recbole_sada.trainer.PluginTrainer` first takes one step of
a separate optimiser over :meth:`adversary_parameters` that *maximises* ``P`` (environments on
which the recommender's risk differs most), then the usual step of the recommender (every other
parameter) on ``loss`` with the masks fixed.  The adversary's parameters are outside the main
optimiser; the adversary's gradients never touch the recommender.  Unconstrained, the adversary
has a trivial optimum: drop every item (an empty environment beside the whole sequence maximises
the risk variance); on Beauty it reached a keep rate of 0.001 within 20 epochs.  So the adversary
also pays ``keep_weight * mean_e max(0, keep_min - keep_e)`` (:func:`keep_shortfall`), ``keep_e``
the share of the real items environment ``e`` keeps: the environments drop *some* items (the
paper's "potential noise items"), never the whole sequence.  ``keep_min: 0`` is the unconstrained
adversary.

Where the paper's text was not available to this implementation, the choices are the plugin's and
are marked so in ``properties/model/IDEA.yaml``: the generator scores each position from its own
item embedding (a two-layer MLP per generator), so the mask at position ``t`` never depends on
later items, which keeps ``train_mode: sequence`` (the next item at every position) free of
future information; ``include_original: True`` adds the unmasked sequence as one more
environment (the model is tested on whole sequences).  The paper's robustness experiments with
injected fake items are not part of the model.

``IDEABERT4Rec`` is refused by the grid (cloze-trained; the environments here are trained on next
items).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_sada.errors import InputError

PENALTIES = ("vrex", "irmv1")


def gumbel_sigmoid_mask(logits, temp, noise=True):
    """Relaxed Bernoulli keep-probabilities in (0, 1) of the same shape as ``logits``.

    ``noise=False`` gives the deterministic ``sigmoid(logits / temp)`` (used at no point of
    training; for inspection and tests)."""
    if temp <= 0:
        raise InputError(f"gumbel_temp must be > 0, got {temp}")
    if noise:
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        logits = logits + torch.log(u) - torch.log1p(-u)
    return torch.sigmoid(logits / temp)


def mix_masks(masks, n_env, alpha, generator=None):
    """(n_env, B, L) mixed masks: environment ``e`` is ``lam * masks[i] + (1 - lam) * masks[j]``
    for two distinct sub-sequences ``i != j`` drawn uniformly and ``lam ~ Beta(alpha, alpha)`` per
    row.  With one sub-sequence every environment is that sub-sequence.

    Args:
        masks: (K, B, L) keep-probabilities of the K sub-sequences.
    """
    K, B, _ = masks.shape
    if K == 1:
        return masks.expand(n_env, -1, -1)
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    out = []
    for _ in range(n_env):
        pair = torch.randperm(K, generator=generator)[:2]
        lam = beta.sample((B, 1)).to(masks.device, masks.dtype)
        out.append(lam * masks[pair[0]] + (1 - lam) * masks[pair[1]])
    return torch.stack(out)


def keep_shortfall(keep, keep_min):
    """Mean hinge ``max(0, keep_min - keep_e)`` over environments: zero while every environment
    keeps at least ``keep_min`` of the sequence's items (on average over the batch)."""
    return torch.relu(keep_min - keep).mean()


def variance_penalty(risks):
    """V-REx: the (biased) variance of the environment risks (a 1-d tensor)."""
    return ((risks - risks.mean()) ** 2).mean()


class EnvironmentGenerator(nn.Module):
    """``n_subseq`` position-wise scorers: (B, L, D) item embeddings -> (K, B, L) mask logits."""

    def __init__(self, dim, n_subseq, hidden):
        super().__init__()
        self.first = nn.Linear(dim, n_subseq * hidden)
        self.second = nn.Parameter(torch.empty(n_subseq, hidden))
        self.bias = nn.Parameter(torch.full((n_subseq,), 2.0))  # start by keeping most items
        nn.init.normal_(self.second, std=hidden ** -0.5)
        self.n_subseq, self.hidden = n_subseq, hidden

    def forward(self, item_emb):
        B, L, _ = item_emb.shape
        h = F.relu(self.first(item_emb)).view(B, L, self.n_subseq, self.hidden)
        logits = (h * self.second).sum(-1) + self.bias  # (B, L, K)
        return logits.permute(2, 0, 1)


class IDEAMixin:
    """Environments from learned sub-sequences and their mixup, invariance across them."""

    properties_name = "IDEA"
    needs_causal = True
    causal_reason = "its environments are"
    _abstract_plugin = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.setup_idea(config)

    def setup_idea(self, config):
        def number(key, low, kind=float, strict=False):
            value = config[key]
            try:
                value = kind(value)
            except (TypeError, ValueError):
                raise InputError(f"{key} must be a number, got {config[key]!r} (set --{key}=<number>; "
                                     f"defaults in properties/model/IDEA.yaml)") from None
            if value < low or (strict and value == low):
                raise InputError(f"{key} must be {'>' if strict else '>='} {low}, got {value} (set --{key}=<number>; "
                                     f"defaults in properties/model/IDEA.yaml)")
            return value

        self.n_subseq = number("n_subseq", 1, int)
        self.n_env = number("n_env", 1, int)
        self.gumbel_temp = number("gumbel_temp", 0.0, strict=True)
        self.mix_alpha = number("mix_alpha", 0.0, strict=True)
        self.invariance_weight = number("invariance_weight", 0.0)
        self.keep_min = number("keep_min", 0.0)
        if self.keep_min > 1:
            raise InputError(f"keep_min must be in [0, 1], got {self.keep_min} (--keep_min=0.5)")
        self.keep_weight = number("keep_weight", 0.0)
        self.include_original = bool(config["include_original"])
        self.invariance = config["invariance"]
        if self.invariance not in PENALTIES:
            raise InputError(f"invariance must be one of {PENALTIES}, got {self.invariance!r} (--invariance=vrex)")
        if self.n_env + int(self.include_original) < 2:
            raise InputError("IDEA needs at least two environments: n_env >= 2, or n_env 1 with include_original: True")
        hidden = number("generator_hidden", 1, int)
        self.env_generator = EnvironmentGenerator(self.item_embedding.embedding_dim, self.n_subseq, hidden)
        self._stats = {"penalty": 0.0, "keep": 0.0, "n": 0}

    # ------------------------------------------------------------------ adversary (trainer API)
    def adversary_parameters(self):
        """Parameters trained by the trainer's second optimiser to maximise the penalty."""
        return list(self.env_generator.parameters())

    def adversary_loss(self, interaction):
        """Loss the adversary step minimises: ``-P`` (the generators maximise the penalty); the
        recommender's parameters get no gradient from it (the trainer differentiates it with
        respect to :meth:`adversary_parameters` only)."""
        if self.train_stage == 1 or self.invariance_weight == 0:
            return None
        _, penalty, keep = self.environment_risks(interaction, detach_masks=False)
        return -penalty + self.keep_weight * keep_shortfall(keep, self.keep_min)

    # ------------------------------------------------------------------ environments
    def environment_masks(self, item_emb, item_seq, detach=True):
        """(n_env [+1], B, L) masks of the environments; padding positions are 0."""
        logits = self.env_generator(item_emb.detach())  # embeddings are the generators' input features
        if detach:
            logits = logits.detach()
        masks = gumbel_sigmoid_mask(logits, self.gumbel_temp)
        envs = mix_masks(masks, self.n_env, self.mix_alpha)
        if self.include_original:
            envs = torch.cat([envs, torch.ones_like(envs[:1])])
        return envs * (item_seq > 0).unsqueeze(0)

    def environment_risks(self, interaction, detach_masks=True):
        """(risks (E,), penalty, keep rate of each simulated environment (n_env,)) of one batch."""
        item_seq, item_seq_len, targets, mask = self.training_batch(interaction)
        item_emb = self.embed_items(item_seq)
        envs = self.environment_masks(item_emb, item_seq, detach=detach_masks)
        negatives = None if self.loss_type == "CE" else self.sample_negatives(targets, item_seq)
        E = envs.size(0)
        B = item_seq.size(0)
        # all environments of the batch in one encoder call
        emb = (envs.unsqueeze(-1) * item_emb.unsqueeze(0)).reshape(E * B, *item_emb.shape[1:])
        H = self.encode_grouped(emb, item_seq.repeat(E, 1), item_seq_len.repeat(E))
        H = self.select_outputs(H, item_seq_len.repeat(E), targets.repeat(E, 1)).view(E, B, -1, H.size(-1))
        scale = torch.ones((), device=H.device, requires_grad=self.invariance == "irmv1")
        risks = torch.stack([self.rec_loss(scale * H[e], targets, mask, negatives=negatives) for e in range(E)])
        if self.invariance == "vrex":
            penalty = variance_penalty(risks)
        else:
            grads = [torch.autograd.grad(r, scale, create_graph=True)[0] for r in risks]
            penalty = torch.stack(grads).pow(2).mean()
        real = (item_seq > 0).sum().clamp(min=1)
        keep = envs[: self.n_env].sum((1, 2)) / real  # (n_env,) share of the real items each keeps
        return risks, penalty, keep

    # ------------------------------------------------------------------ loss
    def calculate_loss(self, interaction):
        if self.train_stage == 1:
            return super().calculate_loss(interaction)
        risks, penalty, keep = self.environment_risks(interaction)
        self._stats["penalty"] += float(penalty.detach())
        self._stats["keep"] += float(keep.mean())
        self._stats["n"] += 1
        return {"loss_env": risks.mean() + self.regularization(),
                "loss_invariance": self.invariance_weight * penalty}

    def pop_epoch_stats(self):
        """Per-epoch mean invariance penalty and mean keep rate of the environments' items."""
        n = self._stats["n"]
        if not n:
            return None
        out = {"invariance_penalty": self._stats["penalty"] / n, "env_keep_rate": self._stats["keep"] / n}
        self._stats = {"penalty": 0.0, "keep": 0.0, "n": 0}
        return out
