"""Invariants of the BASRec / SADA augmentation tensor ops and similarity tables."""

import math

import numpy as np
import pytest
import torch

from recbole_sada.model import augment as A
from recbole_sada.model.item_similarity import (
    BlendedSimilarity,
    CooccurrenceSimilarity,
    EmbeddingCosineSimilarity,
    ItemSimilarity,
    topk_from_scores,
)

N_ITEMS = 60


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make_batch(B=64, L=20, seed=0, distinct=True):
    """Right-padded batch with lengths 1..L; distinct ids per row (so moves are visible)."""
    g = gen(seed)
    lens = torch.randint(1, L + 1, (B,), generator=g)
    lens[0], lens[1] = 1, L  # edge cases: single item, full row
    seq = torch.zeros(B, L, dtype=torch.long)
    for b in range(B):
        if distinct:
            ids = torch.randperm(N_ITEMS - 1, generator=g)[: lens[b]] + 1
        else:
            ids = torch.randint(1, N_ITEMS, (int(lens[b]),), generator=g)
        seq[b, : lens[b]] = ids
    return seq, lens


def ring_table(n_items=N_ITEMS, k=4):
    """sim_table whose rows hold k distinct neighbours, all != 0 and != the item."""
    t = torch.zeros(n_items, k, dtype=torch.long)
    for i in range(1, n_items):
        t[i] = torch.tensor([((i + j - 1) % (n_items - 1)) + 1 for j in range(1, k + 1)])
    return t


# ---------------------------------------------------------------- rate / count
def test_sample_rate_range_and_seed():
    r = A.sample_rate(1000, 0.2, 0.7, "cpu", gen(1))
    assert r.shape == (1000,)
    assert float(r.min()) >= 0.2 and float(r.max()) < 0.7
    assert torch.equal(r, A.sample_rate(1000, 0.2, 0.7, "cpu", gen(1)))
    assert not torch.equal(r, A.sample_rate(1000, 0.2, 0.7, "cpu", gen(2)))


def test_num_augmented_ceil_is_robust_to_float_error():
    lens = torch.tensor([10, 10, 7, 1, 3])
    c = A.num_augmented(torch.tensor([0.3, 0.7, 0.5, 0.9, 0.0]), lens, min_count=1)
    assert c.tolist() == [3, 7, 4, 1, 1]
    assert A.num_augmented(0.0, lens, min_count=0).tolist() == [0] * 5


# ---------------------------------------------------------------- M-Reorder
def test_reorder_permutation_of_real_part_and_padding_untouched():
    seq, lens = make_batch()
    rate = A.sample_rate(seq.shape[0], 0.1, 0.9, "cpu", gen(3))
    out = A.m_reorder(seq, lens, rate, gen(4))
    assert out.shape == seq.shape and out.dtype == torch.long
    c = A.num_augmented(rate, lens, min_count=1)
    for b in range(seq.shape[0]):
        n = int(lens[b])
        assert torch.equal(out[b, n:], seq[b, n:])  # padding
        assert torch.equal(out[b, :n].sort().values, seq[b, :n].sort().values)  # permutation
        changed = (out[b, :n] != seq[b, :n]).nonzero().flatten()
        if changed.numel():
            # all changes inside one contiguous window of length c
            assert int(changed.max() - changed.min()) + 1 <= int(c[b])


def test_reorder_window_length_and_position():
    # one row of 10 distinct items, rate 0.3 -> window of exactly 3 positions
    seq = torch.tensor([[11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0, 0]])
    lens = torch.tensor([10])
    g = gen(5)
    spans, firsts, lasts = [], [], []
    for _ in range(300):
        out = A.m_reorder(seq, lens, 0.3, g)
        changed = (out[0] != seq[0]).nonzero().flatten()
        if changed.numel():
            spans.append(int(changed.max() - changed.min()) + 1)
            firsts.append(int(changed.min()))
            lasts.append(int(changed.max()))
    assert max(spans) == 3 and min(spans) >= 2  # a shuffle changes >= 2 positions
    assert min(firsts) == 0 and max(lasts) == 9  # window reaches both ends, never padding
    # rate 1 -> whole real part shuffled (can move the first and last item)
    moved_ends = 0
    for _ in range(50):
        out = A.m_reorder(seq, lens, 1.0, g)
        moved_ends += int(out[0, 0] != 11 and out[0, 9] != 20)
    assert moved_ends > 0


def test_reorder_rate_zero_is_identity():
    seq, lens = make_batch(seed=6)
    assert torch.equal(A.m_reorder(seq, lens, 0.0, gen(0)), seq)


def test_reorder_seed_determinism():
    seq, lens = make_batch(seed=7)
    a = A.m_reorder(seq, lens, 0.8, gen(11))
    assert torch.equal(a, A.m_reorder(seq, lens, 0.8, gen(11)))
    assert not torch.equal(a, A.m_reorder(seq, lens, 0.8, gen(12)))


# ---------------------------------------------------------------- M-Substitute
def test_substitute_writes_only_table_ids_exact_count_padding_kept():
    seq, lens = make_batch(seed=8, distinct=False)
    table = ring_table()
    rate = A.sample_rate(seq.shape[0], 0.1, 0.9, "cpu", gen(9))
    out = A.m_substitute(seq, lens, rate, table, gen(10))
    c = A.num_augmented(rate, lens, min_count=0)
    L = seq.shape[1]
    real = torch.arange(L).unsqueeze(0) < lens.unsqueeze(1)
    assert torch.equal(out[~real], seq[~real])  # padding untouched
    assert bool((out[real] != 0).all())  # 0 never produced
    changed = out != seq
    assert torch.equal(changed.sum(1), c)  # exactly ceil(rate*len) positions
    rows = table[seq[changed]]
    assert bool((rows == out[changed].unsqueeze(1)).any(1).all())  # ids come from the row


def test_substitute_float_rate_count_and_all_neighbours_used():
    seq = torch.arange(1, 11).unsqueeze(0)  # len 10
    lens = torch.tensor([10])
    table = ring_table()
    out = A.m_substitute(seq, lens, 0.3, table, gen(0))
    assert int((out != seq).sum()) == 3  # 0.3*10 must not become 4
    seen = set()
    g = gen(1)
    for _ in range(100):
        out = A.m_substitute(seq[:, :1], torch.tensor([1]), 1.0, table, g)
        seen.add(int(out[0, 0]))
    assert seen == set(table[1].tolist())  # every neighbour reachable


def test_substitute_skips_zero_and_self_entries_and_keeps_isolated_items():
    table = torch.zeros(8, 3, dtype=torch.long)
    table[1] = torch.tensor([0, 5, 0])  # one valid neighbour among zeros
    table[2] = torch.tensor([2, 0, 0])  # only itself -> no valid neighbour
    # item 3: all zeros -> no neighbour
    seq = torch.tensor([[1, 2, 3, 1, 0, 0]])
    lens = torch.tensor([4])
    for s in range(20):
        out = A.m_substitute(seq, lens, 1.0, table, gen(s))
        assert out.tolist() == [[5, 2, 3, 5, 0, 0]]


def test_substitute_seed_determinism():
    seq, lens = make_batch(seed=13, distinct=False)
    table = ring_table()
    a = A.m_substitute(seq, lens, 0.5, table, gen(21))
    assert torch.equal(a, A.m_substitute(seq, lens, 0.5, table, gen(21)))
    assert not torch.equal(a, A.m_substitute(seq, lens, 0.5, table, gen(22)))


# ---------------------------------------------------------------- lambda
def test_sample_lambda_beta_moments_range_and_no_mix():
    for alpha in (0.2, 2.0):
        lam = A.sample_lambda((20000,), alpha, "cpu", gen(3))
        assert bool(torch.isfinite(lam).all())
        assert float(lam.min()) >= 0.0 and float(lam.max()) <= 1.0
        assert abs(float(lam.mean()) - 0.5) < 0.02
        assert abs(float(lam.var()) - 1.0 / (4 * (2 * alpha + 1))) < 0.01
    tiny = A.sample_lambda((5000,), 0.02, "cpu", gen(4))
    assert bool(torch.isfinite(tiny).all())
    assert torch.equal(A.sample_lambda((3, 4), 0.0, "cpu", gen(0)), torch.ones(3, 4))
    assert torch.equal(A.sample_lambda(5, -1.0, "cpu"), torch.ones(5))


def test_sample_lambda_seed_determinism():
    a = A.sample_lambda((64, 5), 0.4, "cpu", gen(8))
    assert a.shape == (64, 5)
    assert torch.equal(a, A.sample_lambda((64, 5), 0.4, "cpu", gen(8)))
    assert not torch.equal(a, A.sample_lambda((64, 5), 0.4, "cpu", gen(9)))


# ---------------------------------------------------------------- representation mixup
def _embed(seq, D=8, seed=0):
    table = torch.randn(N_ITEMS, D, generator=gen(seed))
    table[0] = 0.0
    return table[seq]


def test_mix_lambda_one_and_relevance_zero_return_original():
    seq, lens = make_batch(B=16, seed=14)
    E = _embed(seq)
    E_aug = _embed(A.m_reorder(seq, lens, 0.9, gen(1)))
    B, L, _ = E.shape
    mixed, share = A.mix_representations(E, E_aug, torch.ones(B))
    assert torch.equal(mixed, E) and bool((share == 0).all())
    lam = A.sample_lambda((B,), 0.3, "cpu", gen(2))
    mixed, _ = A.mix_representations(E, E_aug, lam, relevance=torch.zeros(B, L))
    assert torch.equal(mixed, E)


def test_mix_relevance_one_equals_plain_mix_and_matches_eq7():
    seq, lens = make_batch(B=16, seed=15)
    E = _embed(seq)
    E_aug = _embed(A.m_substitute(seq, lens, 0.5, ring_table(), gen(1)))
    B, L, D = E.shape
    for lam in (
        A.sample_lambda((B,), 0.3, "cpu", gen(2)),
        A.sample_lambda((B, L), 0.3, "cpu", gen(3)),
        A.sample_lambda((B, L, D), 0.3, "cpu", gen(4)),
    ):
        plain, share = A.mix_representations(E, E_aug, lam)
        with_rel, _ = A.mix_representations(E, E_aug, lam, relevance=torch.ones(B, L))
        assert torch.equal(plain, with_rel)
        lam_b = lam
        while lam_b.dim() < 3:
            lam_b = lam_b.unsqueeze(-1)
        assert torch.allclose(plain, lam_b * E + (1 - lam_b) * E_aug, atol=1e-6)
        assert share.dim() == 3
    # partial relevance lies between original and plain mix
    lam = torch.full((B,), 0.4)
    half, share = A.mix_representations(E, E_aug, lam, relevance=torch.full((B, L), 0.5))
    assert torch.allclose(share, torch.full((B, L, 1), 0.3))
    assert torch.allclose(half, 0.7 * E + 0.3 * E_aug, atol=1e-6)


def test_mix_padding_never_changes():
    seq, lens = make_batch(B=32, seed=16)
    E = _embed(seq)
    B, L, D = E.shape
    pad = torch.arange(L).unsqueeze(0) >= lens.unsqueeze(1)
    lam = A.sample_lambda((B, L, D), 0.3, "cpu", gen(5))
    # embeddings of augmented sequences equal E on padding -> unchanged without a mask
    for aug in (A.m_reorder(seq, lens, 0.9, gen(1)), A.m_substitute(seq, lens, 0.9, ring_table(), gen(2))):
        mixed, _ = A.mix_representations(E, _embed(aug), lam)
        assert torch.equal(mixed[pad], E[pad])
    # arbitrary E_aug + explicit mask
    E_aug = torch.randn(B, L, D, generator=gen(6))
    mixed, share = A.mix_representations(E, E_aug, lam, mask=~pad)
    assert torch.equal(mixed[pad], E[pad])
    assert not torch.equal(mixed[~pad], E[~pad])


def test_effective_lambda():
    B, L, D = 6, 5, 4
    E, E_aug = torch.zeros(B, L, D), torch.ones(B, L, D)
    lam = torch.linspace(0.1, 0.9, B)
    _, share = A.mix_representations(E, E_aug, lam)
    assert torch.allclose(A.effective_lambda(share), lam)
    rel = torch.zeros(B, L)
    rel[:, :2] = 1.0
    _, share = A.mix_representations(E, E_aug, lam, relevance=rel)
    lens = torch.full((B,), 2)
    assert torch.allclose(A.effective_lambda(share, lens), lam)  # real positions fully mixed
    assert torch.allclose(A.effective_lambda(share), 1 - (1 - lam) * 2 / 5)


# ---------------------------------------------------------------- ALW (Eq. 9)
def test_alw_range_extremes_and_direction():
    rate = A.sample_rate(128, 0.1, 0.8, "cpu", gen(1))
    lam = A.sample_lambda((128,), 0.4, "cpu", gen(2))
    w = A.alw_weights(rate, lam)
    assert w.shape == (128,)
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0
    prod = rate * lam
    assert float(w[prod.argmax()]) == 0.0  # largest rate*lam -> smallest 1/x -> 0
    assert float(w[prod.argmin()]) == 1.0
    expect = 1 / prod.double().clamp(min=1e-6)
    expect = (expect - expect.min()) / (expect.max() - expect.min())
    assert torch.allclose(w.double(), expect, atol=1e-5)


def test_alw_degenerate_and_tiny_values():
    assert torch.equal(A.alw_weights(torch.full((7,), 0.3), torch.full((7,), 0.5)), torch.ones(7))
    assert torch.equal(A.alw_weights(torch.tensor([0.4]), torch.tensor([0.2])), torch.ones(1))
    w = A.alw_weights(torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([0.0, 1e-30, 0.5, 1.0]))
    assert bool(torch.isfinite(w).all()) and float(w.min()) >= 0 and float(w.max()) <= 1
    assert float(w[0]) == 1.0 and float(w[3]) == 0.0
    lam = torch.tensor([0.2, 0.6], requires_grad=True)
    assert not A.alw_weights(torch.tensor([0.3, 0.3]), lam).requires_grad


# ---------------------------------------------------------------- cross-sequence mixup
def test_mixup_weight_shapes_and_relevance():
    B, L, D = 8, 5, 6
    assert A.mixup_weights("item", B, L, D, 0.4, "cpu", gen(1)).shape == (B, L, 1)
    assert A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(1)).shape == (B, 1, D)
    assert A.mixup_weights("linear", B, L, D, 0.4, "cpu", gen(1)).shape == (B, 1, 1)
    w = A.mixup_weights("item", B, L, D, 0.4, "cpu", gen(2))
    assert float(w.min()) >= 0 and float(w.max()) <= 1
    w0 = A.mixup_weights("item", B, L, D, 0.4, "cpu", gen(2), relevance=torch.zeros(B, L))
    assert torch.equal(w0, torch.ones(B, L, 1))  # relevance 0 -> original kept
    w1 = A.mixup_weights("item", B, L, D, 0.4, "cpu", gen(2), relevance=torch.ones(B, L))
    assert torch.equal(w1, w)  # relevance 1 -> plain weights
    rel = torch.rand(B, L, generator=gen(3))
    wr = A.mixup_weights("item", B, L, D, 0.4, "cpu", gen(2), relevance=rel)
    assert torch.allclose(1 - wr, (1 - w) * rel.unsqueeze(-1), atol=1e-6)
    assert A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(2), relevance=torch.ones(B)).shape == (B, 1, D)
    with pytest.raises(ValueError):
        A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(2), relevance=torch.ones(B, L))
    with pytest.raises(ValueError):
        A.mixup_weights("bogus", B, L, D, 0.4, "cpu")
    a = A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(5))
    assert torch.equal(a, A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(5)))
    assert not torch.equal(a, A.mixup_weights("feature", B, L, D, 0.4, "cpu", gen(6)))


@pytest.mark.parametrize("mode", ["item", "feature", "linear"])
def test_mix_pair_same_weights_for_h_pos_neg(mode):
    N, D = 10, 4
    H = torch.randn(N, D, generator=gen(1))
    Hp = torch.randn(N, D, generator=gen(2))
    pos, pos_p = 3.0 * H - 1.0, 3.0 * Hp - 1.0  # affine images: any weight mismatch breaks the relation
    lam = A.mixup_weights(mode, 1, N, D, 0.5, "cpu", gen(3))[0]  # (N, 1) item-wise, (1, D) feature-wise
    Hm, pm = A.mix_pair(lam, H, Hp), A.mix_pair(lam, pos, pos_p)
    assert Hm.shape == pm.shape == (N, D)
    assert torch.allclose(pm, 3.0 * Hm - 1.0, atol=1e-5)
    assert torch.equal(A.mix_pair(torch.ones_like(lam), H, Hp), H)
    assert torch.equal(A.mix_pair(torch.zeros_like(lam), H, Hp), Hp)
    assert torch.allclose(A.mix_pair(lam, H, H), H, atol=1e-6)  # a row mixed with itself


def test_shuffle_partners_permutation_and_seed():
    p = A.shuffle_partners(50, "cpu", gen(1))
    assert torch.equal(p.sort().values, torch.arange(50))
    assert torch.equal(p, A.shuffle_partners(50, "cpu", gen(1)))
    assert not torch.equal(p, A.shuffle_partners(50, "cpu", gen(2)))


# ---------------------------------------------------------------- semantic relevance
def test_semantic_relevance_values_and_unknown_fallback():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 2.0]])
    b = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [1.0, 0.0], [0.0, 0.0]])
    r = A.semantic_relevance(a, b)
    assert torch.allclose(r, torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0]))
    r = A.semantic_relevance(a, b, mode="relu")
    assert torch.allclose(r, torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0]))
    x = torch.randn(4, 6, 16, generator=gen(1))
    y = torch.randn(4, 6, 16, generator=gen(2))
    r = A.semantic_relevance(x, y)
    assert r.shape == (4, 6) and float(r.min()) >= 0 and float(r.max()) <= 1
    with pytest.raises(ValueError):
        A.semantic_relevance(x, y, mode="nope")


# ---------------------------------------------------------------- similarity tables
USERS = [[1, 2, 3], [2, 3], [4, 5]]  # item 6 never appears, n_items = 7


def test_cooccurrence_hand_example():
    sim = CooccurrenceSimilarity(USERS, n_items=7)
    S = sim.scores().toarray()
    w3, w2 = 1 / math.log(4), 1 / math.log(3)  # IUF of users with 3 and 2 items
    assert S[2, 3] == pytest.approx((w3 + w2) / math.sqrt(2 * 2))
    assert S[1, 2] == pytest.approx(w3 / math.sqrt(1 * 2))
    assert S[4, 5] == pytest.approx(w2)
    assert np.allclose(S, S.T)
    assert np.all(np.diag(S) == 0) and np.all(S[0] == 0) and np.all(S[:, 0] == 0)
    assert S[1, 4] == 0 and S[3, 5] == 0 and np.all(S[6] == 0)  # only given sequences
    top = sim.topk(3)
    assert top.shape == (7, 3) and top.dtype == torch.long
    assert top.tolist() == [
        [0, 0, 0],
        [2, 3, 0],  # tie 2/3 broken by id
        [3, 1, 0],
        [2, 1, 0],
        [5, 0, 0],
        [4, 0, 0],
        [0, 0, 0],
    ]
    assert not bool((top[1:] == torch.arange(1, 7).unsqueeze(1)).any())  # never self


def test_cooccurrence_tensor_input_and_window():
    seq = torch.tensor([[1, 2, 3], [2, 3, 0], [4, 5, 0]])
    lens = torch.tensor([3, 2, 2])
    a = CooccurrenceSimilarity((seq, lens), n_items=7).scores().toarray()
    b = CooccurrenceSimilarity(USERS, n_items=7).scores().toarray()
    assert np.allclose(a, b)
    win = CooccurrenceSimilarity([[1, 2, 3, 4]], n_items=5, window=1)
    S = win.scores().toarray()
    assert S[1, 2] > 0 and S[2, 3] > 0 and S[1, 3] == 0 and S[1, 4] == 0
    assert win.topk(2)[1].tolist() == [2, 0]


def test_cooccurrence_sparse_topk_matches_dense_path_with_ties():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 40, size=int(rng.integers(1, 6))).tolist() for _ in range(80)]
    sim = CooccurrenceSimilarity(seqs, n_items=40)
    fast = sim.topk(8)
    dense = ItemSimilarity.topk(sim, 8, chunk_size=7)  # generic chunked path
    assert torch.equal(fast, dense)
    S = sim.scores().toarray()
    for i in range(1, 40):  # scores along each row are non-increasing, ties by id
        ids = [j for j in fast[i].tolist() if j]
        vals = [S[i, j] for j in ids]
        assert all(v > 0 for v in vals) and len(ids) == min(8, int((S[i] > 0).sum()))
        assert all((vals[a], -ids[a]) > (vals[a + 1], -ids[a + 1]) for a in range(len(ids) - 1))


def test_embedding_cosine_topk_tiny():
    emb = torch.tensor(
        [[0.0, 0.0], [1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.0, 0.0], [-1.0, 0.0], [0.6, 0.8]]
    )
    sim = EmbeddingCosineSimilarity(emb)
    top = sim.topk(3)
    assert top[0].tolist() == [0, 0, 0]
    assert top[1].tolist() == [2, 6, 3]
    assert top[3].tolist() == [6, 2, 1]
    assert top[4].tolist() == [0, 0, 0]  # zero vector: no neighbours
    assert not bool((top == 4).any())  # ... and never a neighbour
    assert not bool((top[1:] == torch.arange(1, 7).unsqueeze(1)).any())
    assert torch.equal(sim.topk(3, chunk_size=2), top)  # chunking does not matter
    assert sim.topk(10).shape == (7, 10)  # k > n_items: zero-padded
    assert sim.topk(10)[1].tolist()[:5] == [2, 6, 3, 5, 0]


def test_blended_similarity_endpoints_and_mix():
    emb = torch.randn(7, 5, generator=gen(4))
    emb[0] = 0
    collab = CooccurrenceSimilarity(USERS, n_items=7)
    sem = EmbeddingCosineSimilarity(emb)
    assert torch.equal(BlendedSimilarity(collab, sem, 0.0).topk(3), collab.topk(3))
    assert torch.equal(BlendedSimilarity(collab, sem, 1.0).topk(3), sem.topk(3))
    mid = BlendedSimilarity(collab, sem, 0.5, mode="raw")
    top = mid.topk(6, chunk_size=3)
    assert not bool((top[1:] == torch.arange(1, 7).unsqueeze(1)).any())
    assert top[0].tolist() == [0] * 6
    # item 6 has no co-occurrence but semantic neighbours under blending
    assert int(top[6, 0]) != 0
    scores, valid = mid.row_scores(torch.tensor([2]))
    s_c, _ = collab.row_scores(torch.tensor([2]))
    s_s, _ = sem.row_scores(torch.tensor([2]))
    assert torch.allclose(scores[valid], (0.5 * s_c + 0.5 * s_s)[valid].double())


class MatrixSimilarity(ItemSimilarity):
    """Scores from a dense matrix; admissible where the score is > 0."""

    def __init__(self, matrix):
        self.m = torch.as_tensor(matrix, dtype=torch.float64)
        self.n_items = self.m.shape[0]

    def row_scores(self, rows):
        s = self.m[rows]
        valid = (s > 0) & self._base_valid(rows)
        return torch.where(valid, s, torch.zeros_like(s)), valid


def blend_case(collab_scale=1.0):
    n = 8
    collab, sem = torch.zeros(n, n), torch.zeros(n, n)
    for item, score in {2: 0.12, 7: 0.10, 3: 0.08, 4: 0.05}.items():
        collab[1, item] = score * collab_scale
    for item, score in {2: 0.30, 3: 0.50, 4: 0.85, 5: 0.90, 6: 0.88, 7: 0.20}.items():
        sem[1, item] = score
    return MatrixSimilarity(collab), MatrixSimilarity(sem)


def test_rank_blend_gives_collaborative_mixed_semantic_neighbours():
    """substitute_semantic_weight 0 / 0.5 / 1: collaborative / mixed / semantic top-3, whatever
    the scale of the collaborative scores (a raw blend is the semantic list in disguise)."""
    collab, sem = blend_case()
    top = {w: BlendedSimilarity(collab, sem, w).topk(3)[1].tolist() for w in (0.0, 0.5, 1.0)}
    assert top[0.0] == [2, 7, 3] and top[1.0] == [5, 6, 4]
    assert top[0.5] == [2, 3, 4]  # items high in both lists; differs from either list alone
    tiny_collab, _ = blend_case(collab_scale=0.01)
    assert BlendedSimilarity(tiny_collab, sem, 0.5).topk(3)[1].tolist() == top[0.5]  # scale-free
    raw = BlendedSimilarity(collab, sem, 0.5, mode="raw").topk(3)[1].tolist()
    assert raw[0] in (4, 5) and 2 not in raw  # raw scores: the cosines dominate
    with pytest.raises(ValueError, match="mode"):
        BlendedSimilarity(collab, sem, 0.5, mode="sum")


def test_topk_ties_broken_by_id():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.5, 0.9]])
    valid = torch.ones_like(scores, dtype=torch.bool)
    valid[0, 0] = False
    ids, _ = topk_from_scores(scores, valid, 4)
    assert ids.tolist() == [[2, 5, 1, 3]]
