"""Pure tensor operations of the BASRec / SADA data augmentation.

Everything here is stateless and vectorised over the batch: no Python loop
runs over users.  Every random operation takes an optional
``generator: torch.Generator | None``; with a generator the result depends
only on its state (same seed -> same augmentation), without one the global
torch RNG is used.

Conventions (RecBole style)
---------------------------
* ``item_seq``: LongTensor ``(B, L)``, right-padded with item id 0.
* ``item_seq_len``: LongTensor ``(B,)``, number of real items, ``>= 1``.
* Item id 0 is padding: no operation here ever writes it into a real position,
  and padding positions are never modified.
* Embeddings are ``(B, L, D)``; sequence outputs may be ``(B, L, D)`` or
  ``(B, D)``.

Mapping to the BASRec paper (Dang et al., AAAI 2025)
----------------------------------------------------
* Eq. 4   operator rate ~ U(a, b)                 -> :func:`sample_rate`
* Eq. 5   M-Reorder (shuffle a sub-sequence)      -> :func:`m_reorder`
* Eq. 8   M-Substitute (similar-item replacement) -> :func:`m_substitute`
* Eq. 7   representation mixup, lambda ~ Beta     -> :func:`sample_lambda`,
  :func:`mix_representations`
* Eq. 9   adaptive loss weighting                 -> :func:`alw_weights`
* Eq. 10-12 batch shuffle + item-wise / feature-wise nonlinear mixup
  -> :func:`shuffle_partners`, :func:`mixup_weights`, :func:`mix_pair`

SADA extensions (semantic-aware mixing; the SADA proposal gives no formulas,
these are the natural extension of BASRec):
* the mix-in share ``1 - lambda`` is scaled by a semantic relevance in [0, 1]
  (:func:`semantic_relevance`), so semantically unrelated items are mixed
  less; relevance 1 gives back plain BASRec, relevance 0 the original;
* cross-sequence partners from users of the same interest cluster
  (:func:`recbole_sada.model.sada.cluster_partners`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "num_augmented",
    "sample_rate",
    "m_reorder",
    "m_substitute",
    "sample_lambda",
    "mix_representations",
    "effective_lambda",
    "alw_weights",
    "shuffle_partners",
    "mixup_weights",
    "mix_pair",
    "semantic_relevance",
]

# Tolerance used when turning ``rate * len`` into an integer count: floating
# point products such as 0.3 * 10 = 3.0000000000000004 must give 3, not 4.
_CEIL_TOL = 1e-6

RateLike = Union[float, Tensor]


# --------------------------------------------------------------------------
# random helpers (generator aware, device safe)
# --------------------------------------------------------------------------
def _gen_device(device, generator: Optional[torch.Generator]) -> torch.device:
    """Device on which to draw random numbers (the generator's, if given)."""
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def _rand(shape, device, generator=None, dtype=torch.float32) -> Tensor:
    """U[0, 1) of ``shape`` on ``device`` drawn from ``generator``."""
    out = torch.rand(
        shape, generator=generator, device=_gen_device(device, generator), dtype=dtype
    )
    return out.to(device)


def _randn(shape, device, generator=None, dtype=torch.float64) -> Tensor:
    out = torch.randn(
        shape, generator=generator, device=_gen_device(device, generator), dtype=dtype
    )
    return out.to(device)


def _as_batch_rate(rate: RateLike, batch_size: int, device) -> Tensor:
    """Broadcast a scalar or ``(B,)`` rate to a float64 tensor ``(B,)``."""
    r = torch.as_tensor(rate, dtype=torch.float64, device=device)
    if r.dim() == 0:
        r = r.expand(batch_size)
    if r.shape != (batch_size,):
        raise ValueError(f"rate must be a scalar or of shape ({batch_size},), got {tuple(r.shape)}")
    return r


ROUNDINGS = ("ceil", "official")


def num_augmented(rate: RateLike, item_seq_len: Tensor, min_count: int = 0, rounding: str = "ceil") -> Tensor:
    """Number of positions an operator touches: ``ceil(rate * len)``, or ``int(rate * len)``
    (``rounding="official"``: the BASRec code's ``int()``, i.e. floor for positive rates).

    Args:
        rate: float or ``(B,)`` operator rate.
        item_seq_len: ``(B,)`` real lengths.
        min_count: lower clamp (1 for M-Reorder, 0 for M-Substitute; the official code: 0 and 1).
        rounding: ``ceil`` or ``official``.

    Returns:
        LongTensor ``(B,)`` clamped to ``[min_count, len]``.  A tolerance of
        ``1e-6`` absorbs floating point error (``0.3 * 10`` -> 3).
    """
    lens = item_seq_len.to(torch.float64)
    r = _as_batch_rate(rate, item_seq_len.shape[0], item_seq_len.device)
    if rounding == "ceil":
        c = torch.ceil(r * lens - _CEIL_TOL).to(torch.long)
    elif rounding == "official":
        c = torch.floor(r * lens + _CEIL_TOL).to(torch.long)
    else:
        raise ValueError(f"unknown rounding {rounding!r}; expected one of {ROUNDINGS}")
    c = torch.maximum(c, torch.full_like(c, min_count))
    return torch.minimum(c, item_seq_len.to(torch.long))


# --------------------------------------------------------------------------
# Eq. 4: operator rate
# --------------------------------------------------------------------------
def sample_rate(
    batch_size: int,
    rate_min: float,
    rate_max: float,
    device=None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Operator rate per sequence, ``rate ~ U(rate_min, rate_max)`` (Eq. 4).

    Returns:
        float32 tensor ``(B,)`` in ``[rate_min, rate_max)``.
    """
    if rate_max < rate_min:
        raise ValueError("rate_max must be >= rate_min")
    u = _rand((batch_size,), device, generator)
    return rate_min + (rate_max - rate_min) * u


# --------------------------------------------------------------------------
# Eq. 5: M-Reorder
# --------------------------------------------------------------------------
def m_reorder(
    item_seq: Tensor,
    item_seq_len: Tensor,
    rate: RateLike,
    generator: Optional[torch.Generator] = None,
    rounding: str = "ceil",
) -> Tensor:
    """Shuffle one random contiguous window of the real part of every row.

    The window length is ``c = clamp(ceil(rate * len), 1, len)`` and its start
    is uniform in ``[0, len - c]``, so it lies inside the real part; the
    window content is permuted uniformly at random.  ``rate = 0`` gives a
    window of length 1, i.e. the identity.

    ``rounding="official"`` (the BASRec code's ``Reorder``): ``c = int(rate * len)``
    (possibly 0: the identity), at most ``len - 1``, start uniform in ``[0, len - c - 1]``,
    so the window never holds the last item.  The paper (Eq. 5) states neither rule.

    Implementation: every position gets a sort key, its own index outside the
    window and ``start + u`` (``u ~ U[0,1)``, float64) inside it; a stable
    argsort of the keys then keeps all outside positions in place and puts a
    random permutation of the window into the window.

    Args:
        item_seq: LongTensor ``(B, L)`` right-padded with 0.
        item_seq_len: LongTensor ``(B,)`` real lengths (>= 1).
        rate: float or ``(B,)`` tensor.
        generator: optional ``torch.Generator``.

    Returns:
        LongTensor ``(B, L)``; the real part of each row is a permutation of
        the original real part, padding is untouched.
    """
    B, L = item_seq.shape
    device = item_seq.device
    lens = item_seq_len.to(device=device, dtype=torch.long)
    if rounding == "official":
        c = torch.minimum(num_augmented(rate, lens, 0, rounding), (lens - 1).clamp(min=0))
        n_starts = (lens - c).clamp(min=1).to(torch.float64)  # the window ends before the last item
    else:
        c = num_augmented(rate, lens, min_count=1, rounding=rounding)  # (B,)
        n_starts = (lens - c + 1).to(torch.float64)
    u_start = _rand((B,), device, generator, dtype=torch.float64)
    start = torch.minimum(torch.floor(u_start * n_starts).to(torch.long), lens - c)

    pos = torch.arange(L, device=device).unsqueeze(0).expand(B, L)
    in_win = (pos >= start.unsqueeze(1)) & (pos < (start + c).unsqueeze(1))
    u = _rand((B, L), device, generator, dtype=torch.float64)
    keys = torch.where(in_win, start.unsqueeze(1).to(torch.float64) + u, pos.to(torch.float64))
    order = torch.argsort(keys, dim=1, stable=True)
    return torch.gather(item_seq, 1, order)


# --------------------------------------------------------------------------
# Eq. 8: M-Substitute
# --------------------------------------------------------------------------
def m_substitute(
    item_seq: Tensor,
    item_seq_len: Tensor,
    rate: RateLike,
    sim_table: Tensor,
    generator: Optional[torch.Generator] = None,
    rounding: str = "ceil",
) -> Tensor:
    """Replace ``ceil(rate * len)`` distinct random real positions by similar items.

    ``rounding="official"`` (the BASRec code's ``Substitute``): ``max(int(rate * len), 1)``
    positions; with a one-column ``sim_table`` (``substitute_topk: 1``) each gets its top-1
    neighbour, as that code does.

    Each chosen position holding item ``i`` gets a uniformly random *valid*
    entry of ``sim_table[i]``; valid means non-zero (0 marks a missing
    neighbour) and different from ``i`` itself.  If item ``i`` has no valid
    neighbour the position keeps ``i``.  The count is clamped to
    ``[0, len]`` (``rate = 0`` -> no change).

    Args:
        item_seq: LongTensor ``(B, L)`` right-padded with 0.
        item_seq_len: LongTensor ``(B,)`` real lengths.
        rate: float or ``(B,)`` tensor.
        sim_table: LongTensor ``(n_items, k)``, row ``i`` = top-k similar item
            ids of item ``i`` (0-padded; row 0 is ignored).
        generator: optional ``torch.Generator``.

    Returns:
        LongTensor ``(B, L)``: padding untouched, never a new 0, every changed
        entry comes from the sim-table row of the original item.
    """
    B, L = item_seq.shape
    device = item_seq.device
    lens = item_seq_len.to(device=device, dtype=torch.long)
    c = num_augmented(rate, lens, min_count=1 if rounding == "official" else 0, rounding=rounding)  # (B,)
    pos = torch.arange(L, device=device).unsqueeze(0)
    real = pos < lens.unsqueeze(1)

    # c distinct uniform positions among the real ones: rank random keys,
    # padding gets key 2 (> any U[0,1) key) so it is ranked last.
    keys = _rand((B, L), device, generator, dtype=torch.float64)
    keys = torch.where(real, keys, torch.full_like(keys, 2.0))
    rank = torch.argsort(torch.argsort(keys, dim=1, stable=True), dim=1, stable=True)
    chosen = (rank < c.unsqueeze(1)) & real

    table = sim_table.to(device=device, dtype=torch.long)
    neigh = table[item_seq]  # (B, L, k)
    valid = (neigh != 0) & (neigh != item_seq.unsqueeze(-1))
    if neigh.shape[-1] == 0:
        return item_seq.clone()
    # uniform pick among valid entries: largest random key among valid ones
    pick_keys = _rand(neigh.shape, device, generator, dtype=torch.float32)
    pick_keys = torch.where(valid, pick_keys, torch.full_like(pick_keys, -1.0))
    idx = pick_keys.argmax(dim=-1, keepdim=True)
    replacement = torch.gather(neigh, -1, idx).squeeze(-1)
    has_valid = valid.any(dim=-1)
    return torch.where(chosen & has_valid, replacement, item_seq)


# --------------------------------------------------------------------------
# lambda ~ Beta(alpha, alpha)
# --------------------------------------------------------------------------
def _log_gamma_sample(shape, conc: float, device, generator) -> Tensor:
    """log of Gamma(conc, 1) samples (float64), generator aware.

    Marsaglia & Tsang (2000) rejection sampler for ``conc + 1 >= 1``, with the
    boost ``G(conc) = G(conc + 1) * U^(1/conc)`` applied in log space so that
    small concentrations (alpha = 0.2) never underflow to 0.
    """
    a = conc + 1.0
    d = a - 1.0 / 3.0
    cc = 1.0 / (9.0 * d) ** 0.5
    n = 1
    for s in shape:
        n *= int(s)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    for _ in range(1000):  # acceptance > 95% per round: a handful of rounds
        m = todo.numel()
        if m == 0:
            break
        x = _randn((m,), device, generator)
        v = (1.0 + cc * x) ** 3
        logu = torch.log1p(-_rand((m,), device, generator, dtype=torch.float64))  # log U, U in (0,1]
        ok = v > 0
        logv = torch.log(torch.where(ok, v, torch.ones_like(v)))
        ok = ok & (logu < 0.5 * x * x + d - d * v + d * logv)
        out[todo[ok]] = math.log(d) + logv[ok]  # log(d * v)
        todo = todo[~ok]
    if todo.numel() > 0:  # practically unreachable; fall back to the mean
        out[todo] = math.log(a)
    # boost: log G(conc) = log G(conc + 1) + log(U) / conc
    logu = torch.log1p(-_rand((n,), device, generator, dtype=torch.float64))
    return (out + logu / conc).reshape(tuple(shape))


def sample_lambda(
    shape: Union[int, Sequence[int]],
    alpha: float,
    device=None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Mixup weights ``lambda ~ Beta(alpha, alpha)`` of the given shape.

    Uses ``Beta(a, a) = X / (X + Y)`` with ``X, Y ~ Gamma(a)`` computed as
    ``sigmoid(log X - log Y)`` from a generator-aware Gamma sampler (torch's
    ``Beta`` distribution cannot take a generator).

    ``alpha <= 0`` returns ones (lambda = 1 keeps the original, i.e. no
    mixing).

    Returns:
        float32 tensor of ``shape`` in ``[0, 1]``.
    """
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if alpha is None or alpha <= 0:
        return torch.ones(shape, dtype=torch.float32, device=dev)
    lx = _log_gamma_sample(shape, float(alpha), dev, generator)
    ly = _log_gamma_sample(shape, float(alpha), dev, generator)
    return torch.sigmoid(lx - ly).to(torch.float32)


# --------------------------------------------------------------------------
# Eq. 7: representation mixup (+ SADA relevance scaling)
# --------------------------------------------------------------------------
def _expand_to(w: Union[float, Tensor], ref: Tensor) -> Tensor:
    """Append trailing singleton dims so ``w`` ((B,), (B,L), ...) broadcasts to ``ref``."""
    w = torch.as_tensor(w, dtype=ref.dtype, device=ref.device)
    while w.dim() < ref.dim() and w.dim() > 0:
        w = w.unsqueeze(-1)
    return w


def mix_representations(
    E: Tensor,
    E_aug: Tensor,
    lam: Union[float, Tensor],
    relevance: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Single-sequence representation mixup (Eq. 7), optionally relevance-scaled.

    The mix-in share of the augmented representation is
    ``s = (1 - lam) * relevance * mask`` and the result is
    ``E + s * (E_aug - E) = (1 - s) * E + s * E_aug``.  With ``relevance=None``
    this is exactly BASRec's ``lam * E + (1 - lam) * E_aug``.

    Args:
        E: original embeddings ``(B, L, D)``.
        E_aug: embeddings of the augmented sequence ``(B, L, D)``.
        lam: float or tensor ``(B,)``, ``(B, L)`` or ``(B, L, D)`` (weight of
            the ORIGINAL, as in the paper).
        relevance: optional ``(B, L)`` (or ``(B,)``) in ``[0, 1]`` (SADA): the
            share is multiplied by it; 0 -> original kept, 1 -> plain mix.
        mask: optional ``(B, L)`` bool/float, True/1 on real positions; the
            share is zeroed elsewhere.  Without a mask, padding stays equal to
            ``E`` as long as ``E_aug == E`` there, which holds for embeddings
            of :func:`m_reorder` / :func:`m_substitute` outputs (padding
            untouched) -- the result is then bit-identical to ``E``.

    Returns:
        ``(mixed, share)``: ``mixed`` has the shape of ``E``; ``share`` is the
        effective mix-in share broadcastable to ``E`` (e.g. ``(B, 1, 1)``,
        ``(B, L, 1)`` or ``(B, L, D)``).  ``lam = 1`` or ``relevance = 0``
        gives exactly ``E``.
    """
    share = 1.0 - _expand_to(lam, E)
    if relevance is not None:
        share = share * _expand_to(relevance, E)
    if mask is not None:
        share = share * _expand_to(mask.to(E.dtype), E)
    return E + share * (E_aug - E), share


def effective_lambda(share: Tensor, item_seq_len: Optional[Tensor] = None) -> Tensor:
    """Per-sequence effective lambda ``1 - mean(share)`` (for ALW under SADA).

    Args:
        share: the share returned by :func:`mix_representations`, ``(B,)``,
            ``(B, 1, 1)``, ``(B, L, 1)`` or ``(B, L, D)``.
        item_seq_len: optional ``(B,)``; when given and ``share`` has a
            sequence axis of length > 1, the mean runs over real positions only.

    Returns:
        ``(B,)`` float tensor in ``[0, 1]``.  Without relevance scaling it
        equals the sampled lambda.
    """
    s = share
    if s.dim() >= 3:
        s = s.mean(dim=tuple(range(2, s.dim())))  # (B, L or 1)
    if s.dim() == 1:
        return 1.0 - s
    if item_seq_len is not None and s.shape[1] > 1:
        L = s.shape[1]
        m = (torch.arange(L, device=s.device).unsqueeze(0) < item_seq_len.to(s.device).unsqueeze(1)).to(s.dtype)
        mean = (s * m).sum(1) / m.sum(1).clamp(min=1)
    else:
        mean = s.mean(dim=1)
    return 1.0 - mean


# --------------------------------------------------------------------------
# Eq. 9: adaptive loss weighting
# --------------------------------------------------------------------------
def alw_weights(rate: Tensor, lam: Tensor, eps: float = 1e-6, norm: str = "minmax") -> Tensor:
    """Adaptive loss weights of Eq. 9: ``w1 = 1 / (rate * lam)``, min-max normalised.

    Choices:
      * ``rate * lam`` is clamped below by ``eps`` so that ``lam = 0`` (possible
        under Beta(alpha, alpha) with small alpha) gives a finite weight.
      * min-max normalisation runs over the batch (the loss is per sequence),
        so the smallest ``w1`` gets weight 0 and the largest weight 1.
      * if the batch is degenerate (``max - min < eps``: batch of one, or all
        products equal) every weight is 1, i.e. the augmented loss is not
        reweighted rather than switched off.
      * the weights are constants of the loss: computed without gradient.
      * ``norm="log_minmax"`` normalises ``log(w1)`` instead; ``norm="batch_sum"`` returns the
        batch sum of the min-max weights for every sequence (what the official BASRec code
        computes, through broadcasting, in place of a per-sequence weighting).
    With SADA, pass the effective lambda (:func:`effective_lambda`) as ``lam``.

    Args:
        rate: ``(B,)`` operator rates.
        lam: ``(B,)`` mixup lambdas (weight of the original).

    Returns:
        ``(B,)`` float tensor in ``[0, 1]``.
    """
    rate = torch.as_tensor(rate)
    lam = torch.as_tensor(lam)
    with torch.no_grad():
        prod = (rate.detach().to(torch.float64) * lam.detach().to(torch.float64)).reshape(-1)
        w1 = 1.0 / prod.clamp(min=eps)
        if norm == "log_minmax":
            # Beta(alpha, alpha) with alpha < 1 puts mass near lam = 0, so one tiny rate * lam
            # dominates a plain min-max and sends almost every other weight to ~0; on the log
            # scale the ordering of Eq. 9 is kept and the weights stay spread over [0, 1].
            w1 = torch.log(w1)
        elif norm not in ("minmax", "batch_sum"):
            raise ValueError(f"unknown ALW normalisation {norm!r}; expected 'minmax', 'log_minmax' or 'batch_sum'")
        lo, hi = w1.min(), w1.max()
        span = hi - lo
        if not torch.isfinite(span) or span < eps:
            w = torch.ones_like(w1)
        else:
            w = ((w1 - lo) / span).clamp(0.0, 1.0)
        if norm == "batch_sum":
            # the official code's effective weighting: its weighted loss multiplies a (B*L,) loss
            # by a (B, 1) weight, which broadcasts to (B, B*L), so every sequence's loss is
            # scaled by the *batch sum* of the min-max weights, not by its own weight
            w = torch.full_like(w, float(w.sum()))
    out_dtype = lam.dtype if lam.is_floating_point() else torch.float32
    return w.to(out_dtype)


# --------------------------------------------------------------------------
# Eq. 10-12: cross-sequence (nonlinear) mixup
# --------------------------------------------------------------------------
def shuffle_partners(
    batch_size: int,
    device=None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Partner index for the batch shuffle of Eq. 10: a uniform random permutation (fixed points
    allowed, as with a plain shuffle).  SADA's cluster pairing is
    :func:`recbole_sada.model.sada.cluster_partners`.

    Returns:
        LongTensor ``(B,)``.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    u = _rand((batch_size,), dev, generator, dtype=torch.float64)
    return torch.argsort(u, stable=True)


def mixup_weights(
    mode: str,
    B: int,
    L: int,
    D: int,
    alpha: float,
    device=None,
    generator: Optional[torch.Generator] = None,
    relevance: Optional[Tensor] = None,
) -> Tensor:
    """Cross-sequence mixup weights ``Lambda ~ Beta(alpha, alpha)``.

    Shapes: ``"item"`` -> ``(B, L, 1)`` (Eq. 11, one weight per position),
    ``"feature"`` -> ``(B, 1, D)`` (Eq. 12, one per dimension),
    ``"linear"`` -> ``(B, 1, 1)`` (plain mixup; ablation w/o NL).

    ``relevance`` (SADA) scales the mix-in share: ``lam' = 1 - (1 - lam) * rel``
    (relevance 0 -> 1, i.e. keep the original; 1 -> unchanged).  It may be
    ``(B, L)`` for ``"item"`` (relevance between each item and the partner's
    item at the same position) or ``(B,)`` for any mode (sequence level).

    Returns:
        float32 tensor of the shape above, values in ``[0, 1]``.
    """
    shapes = {"item": (B, L, 1), "feature": (B, 1, D), "linear": (B, 1, 1)}
    if mode not in shapes:
        raise ValueError(f"unknown mixup mode {mode!r}; expected one of {sorted(shapes)}")
    lam = sample_lambda(shapes[mode], alpha, device, generator)
    if relevance is not None:
        rel = relevance.to(device=lam.device, dtype=lam.dtype)
        if rel.dim() == 1:
            rel = rel.view(B, 1, 1)
        elif rel.dim() == 2:
            if mode != "item":
                raise ValueError("(B, L) relevance is only meaningful for item-wise mixup")
            rel = rel.view(B, L, 1)
        else:
            raise ValueError("relevance must be (B,) or (B, L)")
        # lam' = 1 - (1 - lam) * rel, via lerp so that rel = 1 returns lam and
        # rel = 0 returns 1 bit-exactly
        lam = torch.lerp(torch.ones_like(lam), lam, rel.expand_as(lam))
    return lam


def mix_pair(lam: Tensor, x: Tensor, x_partner: Tensor) -> Tensor:
    """Cross-sequence mixup of aligned rows (Eq. 11/12): ``lam * x + (1 - lam) * x_partner``.

    BASRec mixes the sequence outputs *and* the positive / negative item vectors of the two
    targets with the same ``lam`` (item-wise: one weight per position, broadcast over the
    feature axis; feature-wise: one per dimension).  ``lam = 1`` gives ``x``, ``lam = 0`` the
    partner.
    """
    return lam * x + (1 - lam) * x_partner


# --------------------------------------------------------------------------
# SADA: semantic relevance
# --------------------------------------------------------------------------
def semantic_relevance(
    sem_a: Tensor, sem_b: Tensor, mode: str = "cosine01", eps: float = 1e-8
) -> Tensor:
    """Semantic relevance in ``[0, 1]`` between two sets of semantic vectors.

    Args:
        sem_a, sem_b: ``(..., d)`` broadcastable (e.g. ``(B, L, d)`` item text
            embeddings of the original and the augmented / partner sequence).
        mode: ``"cosine01"`` -> ``(cos + 1) / 2``; ``"relu"`` ->
            ``clamp(cos, 0, 1)``.
        eps: norm below which a vector counts as zero.

    Returns:
        ``(...)`` tensor in ``[0, 1]``.  Choice: if either vector is zero
        (padding, or an item without text) the relevance is **1**, i.e. the
        mixing falls back to plain BASRec when semantics are unknown
        (rather than suppressing augmentation for such items).
    """
    a = sem_a.float()
    b = sem_b.float()
    na = a.norm(dim=-1)
    nb = b.norm(dim=-1)
    known = (na > eps) & (nb > eps)
    cos = (a * b).sum(-1) / (na.clamp(min=eps) * nb.clamp(min=eps))
    cos = cos.clamp(-1.0, 1.0)
    if mode == "cosine01":
        rel = (cos + 1.0) * 0.5
    elif mode == "relu":
        rel = cos.clamp(0.0, 1.0)
    else:
        raise ValueError(f"unknown relevance mode {mode!r}; expected 'cosine01' or 'relu'")
    return torch.where(known, rel, torch.ones_like(rel))
