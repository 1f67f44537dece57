"""Item-item similarity tables for M-Substitute (BASRec) and SADA.

All similarities expose :meth:`ItemSimilarity.topk`, a LongTensor
``(n_items, k)`` whose row ``i`` holds the ``k`` most similar items of item
``i`` (best first).  Conventions shared by every class:

* item 0 is padding: row 0 is all zeros and 0 is never a neighbour;
* an item is never its own neighbour;
* when an item has fewer than ``k`` valid neighbours the row is right-padded
  with 0 (M-Substitute skips 0 entries);
* ties are broken deterministically by item id (smaller id first);
* scores are evaluated in row chunks, so no dense ``n_items x n_items`` matrix
  is ever materialised (memory safe for ~10^4 items).

Classes
-------
* :class:`CooccurrenceSimilarity` -- collaborative ItemCF-IUF similarity from
  the users' training sequences (the "cosine similarity" of CoSeRec, Liu et
  al. 2021, that BASRec's M-Substitute uses).
* :class:`EmbeddingCosineSimilarity` -- cosine similarity of item vectors
  (e.g. LLM / text semantic embeddings for SADA).
* :class:`BlendedSimilarity` -- collaborative and semantic neighbours blended with weight ``w``
  on their ranks (reciprocal-rank fusion; or raw scores).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = [
    "ItemSimilarity",
    "CooccurrenceSimilarity",
    "EmbeddingCosineSimilarity",
    "BlendedSimilarity",
    "topk_from_scores",
]

DEFAULT_CHUNK = 1024


def topk_from_scores(scores: Tensor, valid: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Deterministic row-wise top-k: highest score first, ties by smaller column.

    Args:
        scores: float tensor ``(R, N)``.
        valid: bool tensor ``(R, N)``; invalid columns are never returned.
        k: number of neighbours.

    Returns:
        ``(ids, vals)``: LongTensor ``(R, k)`` of column ids (0 where fewer
        than ``k`` valid columns exist) and their scores (``-inf`` there).
    """
    R, N = scores.shape
    kk = min(k, N)
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    if R == 0 or kk == 0:
        return (torch.zeros(R, k, dtype=torch.long), torch.full((R, k), -math.inf, dtype=scores.dtype))
    s = scores.masked_fill(~valid, -math.inf)
    # k-th largest value per row (values of topk are deterministic)
    thr = torch.topk(s, kk, dim=1).values[:, -1:]  # (R, 1)
    gt = (s > thr) & valid
    eq = (s == thr) & valid
    need = kk - gt.sum(dim=1, keepdim=True)
    chosen = gt | eq
    # rows with more ties at the threshold than free slots: keep the smallest ids
    over = (eq.sum(dim=1, keepdim=True) > need).squeeze(1).nonzero().flatten()
    if over.numel():
        eq_o = eq[over]
        keep = torch.cumsum(eq_o.to(torch.int32), dim=1) <= need[over]
        chosen[over] = gt[over] | (eq_o & keep)
    # extract the chosen columns in ascending id order (distinct keys -> deterministic)
    col_key = (N - torch.arange(N, dtype=torch.int64)).unsqueeze(0)
    key = torch.where(chosen, col_key, torch.zeros_like(col_key))
    ids = torch.topk(key, kk, dim=1).indices  # ascending id among chosen
    ok = torch.gather(chosen, 1, ids)
    vals = torch.where(ok, torch.gather(s, 1, ids), torch.full_like(s[:, :kk], -math.inf))
    # best first; stable sort keeps ascending id among equal scores
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    ids = torch.gather(ids, 1, order)
    vals = torch.gather(vals, 1, order)
    ok = torch.gather(ok, 1, order)
    ids = torch.where(ok, ids, torch.zeros_like(ids))
    if kk < k:
        ids = torch.cat([ids, torch.zeros(R, k - kk, dtype=torch.long)], dim=1)
        vals = torch.cat([vals, torch.full((R, k - kk), -math.inf, dtype=vals.dtype)], dim=1)
    return ids, vals


class ItemSimilarity:
    """Base class / protocol of an item-item similarity.

    Subclasses implement :meth:`row_scores`; :meth:`topk` is shared.
    """

    n_items: int

    def row_scores(self, rows: Tensor) -> Tuple[Tensor, Tensor]:
        """Scores of the given items against all items.

        Args:
            rows: LongTensor ``(R,)`` of item ids.

        Returns:
            ``(scores, valid)``: float tensor ``(R, n_items)`` (finite, 0 where
            invalid) and bool mask ``(R, n_items)`` of admissible neighbours
            (excludes column 0, the item itself and unknown items).
        """
        raise NotImplementedError

    def topk(self, k: int, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
        """Top-k neighbour table, LongTensor ``(n_items, k)``, row 0 all zeros."""
        if k <= 0:
            raise ValueError("k must be positive")
        out = torch.zeros(self.n_items, k, dtype=torch.long)
        for start in range(1, self.n_items, chunk_size):
            rows = torch.arange(start, min(start + chunk_size, self.n_items), dtype=torch.long)
            scores, valid = self.row_scores(rows)
            ids, _ = topk_from_scores(scores, valid, k)
            out[rows] = ids
        return out

    # helper shared by subclasses
    def _base_valid(self, rows: Tensor) -> Tensor:
        cols = torch.arange(self.n_items, dtype=torch.long).unsqueeze(0)
        return (cols != 0) & (cols != rows.unsqueeze(1)) & (rows.unsqueeze(1) != 0)


SeqInput = Union[Sequence[Sequence[int]], Tuple[Tensor, Tensor]]


def _sequences_to_arrays(train_seqs: SeqInput) -> Iterable[np.ndarray]:
    """Yield one int64 array of non-zero item ids per user."""
    if isinstance(train_seqs, tuple) and len(train_seqs) == 2 and isinstance(train_seqs[0], Tensor):
        item_seq, item_seq_len = train_seqs
        seq = item_seq.detach().cpu().numpy()
        lens = item_seq_len.detach().cpu().numpy()
        for row, n in zip(seq, lens):
            a = np.asarray(row[: int(n)], dtype=np.int64)
            yield a[a != 0]
    else:
        for s in train_seqs:
            a = np.asarray(list(s) if not isinstance(s, np.ndarray) else s, dtype=np.int64).reshape(-1)
            yield a[a != 0]


class CooccurrenceSimilarity(ItemSimilarity):
    """ItemCF-IUF item-item similarity from users' TRAINING sequences.

    For every user ``u`` with distinct item set ``N(u)`` and every pair of
    distinct items ``i != j`` that co-occur in ``u``'s sequence (anywhere, or
    within ``window`` positions of each other when ``window`` is given), the
    pair receives ``1 / log(1 + |N(u)|)`` (inverse user frequency: very active
    users count less).  A pair is counted at most once per user.  The sum is
    cosine-normalised by ``sqrt(n_i * n_j)``, ``n_i`` = number of users with
    item ``i``, so scores lie in ``[0, 1)``.  The diagonal (self) and item 0
    are excluded.

    Only the given sequences are used: pass ONE training sequence per user
    (validation / test targets excluded -- not the RecBole prefix-augmented
    interactions, which would repeat every user many times).

    Args:
        train_seqs: list of item-id lists, or ``(item_seq, item_seq_len)``
            tensors (right-padded with 0).
        n_items: number of item ids including padding 0 (RecBole ``n_items``).
        window: optional co-occurrence window (``|pos_i - pos_j| <= window``).
    """

    def __init__(self, train_seqs: SeqInput, n_items: int, window: Optional[int] = None):
        self.n_items = int(n_items)
        if window is not None and int(window) < 1:
            raise ValueError("window must be >= 1 (or None for the whole sequence)")
        self.window = window
        n = self.n_items
        rows, cols, vals = [], [], []  # windowed pairs (window is not None)
        ui_r, ui_c, ui_w = [], [], []  # user-item incidence with IUF weights
        n_users = 0
        for seq in _sequences_to_arrays(train_seqs):
            if seq.size and (seq.max() >= n or seq.min() < 0):
                raise ValueError("item id out of range [0, n_items)")
            items = np.unique(seq)
            if items.size == 0:
                continue
            uid = n_users
            n_users += 1
            w = 1.0 / math.log(1.0 + items.size)
            ui_r.append(np.full(items.size, uid, dtype=np.int64))
            ui_c.append(items)
            ui_w.append(np.full(items.size, w, dtype=np.float64))
            if window is None or items.size < 2:
                continue
            offsets = range(1, min(int(window), seq.size - 1) + 1)  # seq.size >= 2 here
            x = np.concatenate([seq[:-d] for d in offsets])
            y = np.concatenate([seq[d:] for d in offsets])
            pi = np.concatenate([x, y])
            pj = np.concatenate([y, x])
            m = pi != pj
            key = np.unique(pi[m] * n + pj[m])  # a pair counts once per user
            rows.append(key // n)
            cols.append(key % n)
            vals.append(np.full(key.size, w, dtype=np.float64))
        if n_users:
            r = np.concatenate(ui_r)
            c = np.concatenate(ui_c)
            X = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(n_users, n))
            item_users = np.asarray(X.sum(axis=0)).ravel()
        else:
            X = sp.csr_matrix((0, n))
            item_users = np.zeros(n)
        if window is None:
            if n_users:
                Wx = sp.csr_matrix((np.concatenate(ui_w), (r, c)), shape=(n_users, n))
                C = (X.T @ Wx).tocsr()  # sum_u w_u [i in u][j in u]
            else:
                C = sp.csr_matrix((n, n))
        elif rows:
            C = sp.coo_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
            ).tocsr()  # duplicates (over users) summed
        else:
            C = sp.csr_matrix((n, n))
        inv = np.zeros(n)
        nz = item_users > 0
        inv[nz] = 1.0 / np.sqrt(item_users[nz])
        D = sp.diags(inv)
        S = (D @ C @ D).tocoo()
        keep = (S.row != S.col) & (S.row != 0) & (S.col != 0) & (S.data > 0)  # no self, no padding
        S = sp.csr_matrix((S.data[keep], (S.row[keep], S.col[keep])), shape=(n, n), dtype=np.float64)
        S.sort_indices()
        self._S = S

    def scores(self) -> sp.csr_matrix:
        """Sparse ``(n_items, n_items)`` similarity matrix (self and item 0 excluded)."""
        return self._S

    def topk(self, k: int, chunk_size: int = DEFAULT_CHUNK) -> Tensor:
        """Top-k table straight from the sparse matrix (same result as the dense path).

        Sorts the non-zeros by (row, score desc, column asc) and keeps the
        first ``k`` of each row: O(nnz log nnz), no dense chunks.
        """
        if k <= 0:
            raise ValueError("k must be positive")
        S = self._S.tocoo()
        out = np.zeros((self.n_items, k), dtype=np.int64)
        if S.nnz:
            order = np.lexsort((S.col, -S.data, S.row))
            r, c = S.row[order].astype(np.int64), S.col[order].astype(np.int64)
            row_start = np.searchsorted(r, r, side="left")  # first index of each row
            rank = np.arange(r.size) - row_start
            keep = rank < k
            out[r[keep], rank[keep]] = c[keep]
        return torch.from_numpy(out)

    def row_scores(self, rows: Tensor) -> Tuple[Tensor, Tensor]:
        r = rows.detach().cpu().numpy()
        dense = torch.from_numpy(self._S[r].toarray())
        valid = (dense > 0) & self._base_valid(rows.cpu())
        return torch.where(valid, dense, torch.zeros_like(dense)), valid


class EmbeddingCosineSimilarity(ItemSimilarity):
    """Cosine similarity of item vectors (e.g. semantic / text embeddings).

    Row 0 (padding) and items whose vector is (numerically) zero are neither
    queried nor returned as neighbours.  Scores are computed in row chunks
    (``chunk x n_items``), never as a full dense matrix.

    Args:
        emb: ``(n_items, d)`` tensor or array; row ``i`` is item ``i``.
    """

    def __init__(self, emb: Union[Tensor, np.ndarray], eps: float = 1e-12):
        e = torch.as_tensor(emb).detach().cpu().to(torch.float32)
        if e.dim() != 2:
            raise ValueError("emb must be (n_items, d)")
        self.n_items = e.shape[0]
        norms = e.norm(dim=1)
        self._known = norms > eps
        self._known[0] = False
        self._unit = torch.where(
            self._known.unsqueeze(1), e / norms.clamp(min=eps).unsqueeze(1), torch.zeros_like(e)
        )

    def row_scores(self, rows: Tensor) -> Tuple[Tensor, Tensor]:
        rows = rows.cpu()
        s = (self._unit[rows] @ self._unit.T).clamp(-1.0, 1.0)
        valid = self._base_valid(rows) & self._known.unsqueeze(0) & self._known[rows].unsqueeze(1)
        return torch.where(valid, s, torch.zeros_like(s)), valid


BLEND_MODES = ("rank", "raw")
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al., SIGIR 2009)


def row_ranks(scores: Tensor, valid: Tensor) -> Tensor:
    """1-based rank of every column within its row (best first, ties by smaller id); invalid
    columns rank after every valid one."""
    s = scores.to(torch.float64).masked_fill(~valid, -math.inf)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(1, s.shape[1] + 1, dtype=order.dtype).expand_as(order).contiguous())
    return ranks


class BlendedSimilarity(ItemSimilarity):
    """SADA collaborative-semantic fusion with weight ``w`` on the semantic side.

    ``mode: rank`` (default) blends *ranks*, as reciprocal-rank fusion:
    ``(1 - w) / (60 + rank_collab) + w / (60 + rank_semantic)``, a missing score contributing 0.
    The two scores live on different scales (ItemCF-IUF co-occurrence has a median of ~0.1 on
    Beauty, sentence cosines sit in a narrow high band), so a raw blend is in effect the semantic
    top-k for any ``w > 0``; ranks make ``w`` mean what it says.  ``mode: raw`` is the raw blend
    ``(1 - w) * collab + w * semantic`` (earlier versions).

    A candidate is admissible if it is admissible for a component with non-zero weight (so with
    ``0 < w < 1`` an item with no co-occurrence can still be reached semantically).  ``w = 0``
    reproduces the collaborative top-k exactly, ``w = 1`` the semantic top-k.

    Args:
        collab, semantic: :class:`ItemSimilarity` over the same ``n_items``.
        weight: ``w`` in ``[0, 1]``.
        mode: ``rank`` or ``raw``.
    """

    def __init__(self, collab: ItemSimilarity, semantic: ItemSimilarity, weight: float, mode: str = "rank"):
        if collab.n_items != semantic.n_items:
            raise ValueError("collab and semantic similarities disagree on n_items")
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError("weight must be in [0, 1]")
        if mode not in BLEND_MODES:
            raise ValueError(f"mode must be one of {BLEND_MODES}, got {mode!r}")
        self.collab = collab
        self.semantic = semantic
        self.weight = float(weight)
        self.mode = mode
        self.n_items = collab.n_items

    def row_scores(self, rows: Tensor) -> Tuple[Tensor, Tensor]:
        w = self.weight
        if w == 0.0:
            return self.collab.row_scores(rows)
        if w == 1.0:
            return self.semantic.row_scores(rows)
        sc, vc = self.collab.row_scores(rows)
        ss, vs = self.semantic.row_scores(rows)
        valid = vc | vs
        if self.mode == "raw":
            s = (1.0 - w) * sc.to(torch.float64) + w * ss.to(torch.float64)
        else:
            zero = torch.zeros_like(sc, dtype=torch.float64)
            rc, rs = row_ranks(sc, vc), row_ranks(ss, vs)
            s = (torch.where(vc, (1.0 - w) / (RRF_K + rc.to(torch.float64)), zero)
                 + torch.where(vs, w / (RRF_K + rs.to(torch.float64)), zero))
        return torch.where(valid, s, torch.zeros_like(s)), valid
