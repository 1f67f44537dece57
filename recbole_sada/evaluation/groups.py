"""HR@K / NDCG@K for groups of users and of items, computed in RecBole's own evaluation pass.

Groups (the long-tail protocol of the BASRec / SADA papers):

* **users by training-sequence length**: ``user_group_edges: [4, 6]`` gives the groups
  ``users[0,4)``, ``users[4,6)`` and ``users[6,inf)`` (lengths counted on the train split only).
* **test items by training popularity**: items sorted by their number of training interactions
  (ties: smaller item id first); the first ``head_ratio`` (default 0.2) of all items form
  ``items:head``, the rest ``items:tail``.  An item never seen in training is a tail item.

Other definitions of the same groups can be computed from the same ranks (``group_sets``, e.g.
LLM-ESR's long-tail split: tail users with fewer than 9 interactions, i.e. fewer than 7 training
items under leave-one-out, and tail items with fewer than 4 training interactions)::

    group_sets: {llmesr: {user_group_edges: [7], item_tail_below: 4}}

Each set gives its own groups (``users[...)``, ``items:head`` / ``items:tail``) with its own
``user_group_edges`` and either ``item_tail_below`` (tail = fewer training interactions than
this) or ``head_ratio``; absent keys take the main definition's values.

Popularity and lengths come from the TRAIN split only (:func:`training_sequences`), so the valid
and test interactions never leak into the grouping.

How the ranks are collected: while RecBole's ``Trainer.evaluate`` runs, :meth:`GroupEvaluator.recording`
wraps the trainer's ``_full_sort_batch_eval`` (an instance attribute shadowing the method, removed
afterwards).  For every positive (user, item) pair of a batch it stores the position of the item in
``torch.topk(scores, max(topk))`` -- the same call RecBole's ``Collector`` makes on the same scores,
so ties are broken identically and one group holding every user reproduces RecBole's HR/NDCG.
Positions beyond ``max(topk)`` are stored as 0 ("not in the list").

Per-user metrics follow RecBole's ``Hit`` and ``NDCG``: ``hit@K`` = 1 if any positive is in the top
K; ``ndcg@K`` = DCG of the positives in the top K over the ideal DCG of ``min(#positives, K)``.  For
an item group a user's positives are restricted to the items of that group (under leave-one-out
every user has exactly one positive, so this is simply "the users whose test item is a head/tail
item").  Every group value is the mean over its users; ``n`` is that number of users.

Full ranking (``eval_args.mode: full``) and sampled ranking (``uni100``, ``pop100``... the
protocol of the LLMSeR / LLM-ESR tables: the positive against N sampled negatives) are both
grouped.  In sampled mode RecBole's ``_neg_sample_batch_eval`` scatters the candidates' scores
into a ``(users, items)`` matrix filled with ``-inf``; the recorder wraps that method too and
reads the same matrix, so the group values again reproduce RecBole's metrics.
"""
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch

from recbole_sada.data.dataset import training_sequences

__all__ = [
    "DEFAULT_USER_GROUP_EDGES",
    "DEFAULT_HEAD_RATIO",
    "RankRecorder",
    "GroupEvaluator",
    "user_train_lengths",
    "item_train_popularity",
    "head_item_mask",
    "user_group_labels",
    "metrics_from_ranks",
    "group_metrics",
    "format_group_table",
]

DEFAULT_USER_GROUP_EDGES = (4, 6)
DEFAULT_HEAD_RATIO = 0.2


# ---------------------------------------------------------------------------- train statistics
def _is_sequential(train_dataset):
    return train_dataset.config["ITEM_LIST_LENGTH_FIELD"] in train_dataset.inter_feat.columns


def user_train_lengths(train_dataset, n_users=None):
    """Number of training interactions of every user (array indexed by remapped user id).

    Sequential splits: the length of :func:`training_sequences` (a user without any training
    sample, possible only when the train part is a single item in prefix mode, counts as 0);
    other splits (general recommenders): the user's rows in the train split.
    """
    n_users = n_users or train_dataset.user_num
    lengths = np.zeros(n_users, dtype=np.int64)
    if _is_sequential(train_dataset):
        uids, seqs = training_sequences(train_dataset)
        lengths[uids] = [len(s) for s in seqs]
    else:
        uid = train_dataset.inter_feat[train_dataset.uid_field].numpy()
        lengths += np.bincount(uid, minlength=n_users)[:n_users]
    return lengths


def item_train_popularity(train_dataset, n_items=None):
    """Number of training interactions of every item (array indexed by remapped item id)."""
    n_items = n_items or train_dataset.item_num
    if _is_sequential(train_dataset):
        _, seqs = training_sequences(train_dataset)
        items = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.int64)
    else:
        items = train_dataset.inter_feat[train_dataset.iid_field].numpy()
    return np.bincount(items, minlength=n_items)[:n_items].astype(np.int64)


def head_item_mask(popularity, head_ratio=DEFAULT_HEAD_RATIO, padding=True):
    """Boolean mask of the head items: the ``round(head_ratio * n)`` most popular real items.

    Args:
        popularity (array): training interaction count per item id.
        head_ratio (float): share of the items (0..1) that form the head.
        padding (bool): id 0 is RecBole's padding item; it is neither head nor counted in ``n``.
    """
    if not 0.0 <= float(head_ratio) <= 1.0:
        raise ValueError(f"head_ratio must be in [0, 1], got {head_ratio}")
    popularity = np.asarray(popularity)
    first = 1 if padding else 0
    ids = np.arange(first, len(popularity))
    n_head = int(round(float(head_ratio) * len(ids)))
    # most popular first, ties broken by the smaller item id (stable sort of ids)
    order = ids[np.argsort(-popularity[first:], kind="stable")]
    mask = np.zeros(len(popularity), dtype=bool)
    mask[order[:n_head]] = True
    return mask


def _check_group_sets(sets):
    """``group_sets`` as ``{name: {user_group_edges, item_tail_below, head_ratio}}`` (checked)."""
    if not sets:
        return {}
    if not isinstance(sets, dict):
        raise ValueError(f"group_sets must map a name to its definition, e.g. {{llmesr: {{user_group_edges: [7], item_tail_below: 4}}}}, got {sets!r}")
    out = OrderedDict()
    for name, spec in sets.items():
        spec = dict(spec or {})
        unknown = set(spec) - {"user_group_edges", "item_tail_below", "head_ratio"}
        if unknown:
            raise ValueError(f"group_sets.{name}: unknown key(s) {sorted(unknown)}; use user_group_edges, item_tail_below or head_ratio")
        if spec.get("user_group_edges") is not None:
            spec["user_group_edges"] = _check_edges(spec["user_group_edges"])
        below = spec.get("item_tail_below")
        if below is not None and (isinstance(below, bool) or not isinstance(below, int) or below < 1):
            raise ValueError(f"group_sets.{name}.item_tail_below must be an integer >= 1, got {below!r}")
        if spec.get("head_ratio") is not None and not 0.0 <= float(spec["head_ratio"]) <= 1.0:
            raise ValueError(f"group_sets.{name}.head_ratio must be in [0, 1], got {spec['head_ratio']}")
        out[str(name)] = spec
    return out


def _check_edges(edges):
    edges = [int(e) for e in edges]
    if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"user_group_edges must be increasing positive integers, got {edges}")
    return edges


def user_group_labels(edges):
    """Labels of the user groups for ``edges``: ``[4, 6]`` -> ``users[0,4)``, ``users[4,6)``, ``users[6,inf)``."""
    bounds = [0] + _check_edges(edges) + [None]
    return [f"users[{lo},{'inf' if hi is None else hi})" for lo, hi in zip(bounds, bounds[1:])]


# ---------------------------------------------------------------------------- metrics
def metrics_from_ranks(users, ranks, topk):
    """Mean per-user HR@K and NDCG@K from the ranks of positive (user, item) pairs.

    Args:
        users (array): user of each positive pair (any hashable ids, one entry per pair).
        ranks (array): 1-based position of the pair's item in the user's ranked list; 0 (or any
            value > max K) when it is not in the top ``max(topk)``.
        topk (list[int]): cut-offs.

    Returns:
        OrderedDict: ``n`` (number of users), then ``hit@K`` and ``ndcg@K`` for each K (floats,
        unrounded; None when there is no user).
    """
    users = np.asarray(users)
    ranks = np.asarray(ranks, dtype=np.int64)
    out = OrderedDict()
    if users.size == 0:
        out["n"] = 0
        out.update((f"{name}@{k}", None) for name in ("hit", "ndcg") for k in topk)
        return out
    _, user_idx = np.unique(users, return_inverse=True)
    n_users = int(user_idx.max()) + 1
    n_pos = np.bincount(user_idx, minlength=n_users)
    out["n"] = n_users
    valid = ranks > 0
    gain = np.zeros(len(ranks))
    gain[valid] = 1.0 / np.log2(ranks[valid] + 1.0)
    ndcg = {}
    for k in topk:
        in_top = valid & (ranks <= k)
        hits = np.bincount(user_idx, weights=in_top.astype(float), minlength=n_users) > 0
        dcg = np.bincount(user_idx, weights=np.where(in_top, gain, 0.0), minlength=n_users)
        ideal_gains = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1.0))
        idcg = ideal_gains[np.minimum(n_pos, k) - 1]
        out[f"hit@{k}"] = float(hits.mean())
        ndcg[f"ndcg@{k}"] = float((dcg / idcg).mean())
    out.update(ndcg)  # RecBole's order: every hit@K, then every ndcg@K
    return out


def group_metrics(
    users, items, ranks, user_lengths, head_mask, topk, edges=DEFAULT_USER_GROUP_EDGES, decimals=None
):
    """HR/NDCG of every group (see the module docstring).

    Args:
        users, items, ranks (arrays): one entry per positive (user, item) pair.
        user_lengths (array): training length per user id.
        head_mask (array[bool]): head flag per item id.
        topk (list[int]): cut-offs.
        edges (list[int]): user-length group edges.
        decimals (int): round the metrics (RecBole's ``metric_decimal_place``); None keeps floats.

    Returns:
        OrderedDict: ``{"all": {...}, "users[0,4)": {...}, ..., "items:head": {...},
        "items:tail": {...}}``, each an OrderedDict with ``n`` and ``hit@K`` / ``ndcg@K``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    ranks = np.asarray(ranks, dtype=np.int64)
    user_lengths = np.asarray(user_lengths)
    head_mask = np.asarray(head_mask, dtype=bool)
    edges = _check_edges(edges)
    groups = OrderedDict()
    groups["all"] = metrics_from_ranks(users, ranks, topk)
    group_of_user = np.searchsorted(np.asarray(edges), user_lengths[users], side="right")
    for g, label in enumerate(user_group_labels(edges)):
        sel = group_of_user == g
        groups[label] = metrics_from_ranks(users[sel], ranks[sel], topk)
    is_head = head_mask[items]
    groups["items:head"] = metrics_from_ranks(users[is_head], ranks[is_head], topk)
    groups["items:tail"] = metrics_from_ranks(users[~is_head], ranks[~is_head], topk)
    if decimals is not None:
        for values in groups.values():
            for key, value in values.items():
                if key != "n" and value is not None:
                    values[key] = round(value, decimals)
    return groups


def format_group_table(groups, title=None):
    """Plain-text table: one row per group (size, then HR/NDCG@K)."""
    if not groups:
        return ""
    metric_keys = [k for k in next(iter(groups.values())) if k != "n"]
    width = max(12, max(len(name) for name in groups) + 2)
    header = f"{'group':<{width}}{'n':>7}" + "".join(f"{k:>10}" for k in metric_keys)
    lines = ([title] if title else []) + [header, "-" * len(header)]
    for name, values in groups.items():
        cells = "".join(
            f"{'-':>10}" if values[k] is None else f"{values[k]:>10.4f}" for k in metric_keys
        )
        lines.append(f"{name:<{width}}{values['n']:>7}{cells}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- collection
class RankRecorder:
    """Collects the top-``max(topk)`` position of every positive (user, item) pair of a full-sort
    evaluation pass (see the module docstring)."""

    def __init__(self, uid_field, topk):
        self.uid_field = uid_field
        self.max_k = max(topk)
        self.users, self.items, self.ranks = [], [], []

    def __len__(self):
        return sum(len(r) for r in self.ranks)

    def add(self, interaction, scores, positive_u, positive_i, user_of_row=None):
        """Record one batch (the four values ``_full_sort_batch_eval`` returns).  In sampled mode
        the rows of ``interaction`` are (user, candidate) pairs, so ``user_of_row`` gives the user
        id of every row of ``scores`` instead."""
        k = min(self.max_k, scores.shape[-1])
        _, topk_idx = torch.topk(scores, k, dim=-1)
        positive_u = positive_u.to(topk_idx.device)
        positive_i = positive_i.to(topk_idx.device)
        match = topk_idx[positive_u] == positive_i.unsqueeze(1)
        found = match.any(dim=1)
        rank = torch.where(found, match.int().argmax(dim=1) + 1, torch.zeros_like(positive_i))
        if user_of_row is None:
            user_of_row = interaction[self.uid_field]
        user_ids = user_of_row.to(topk_idx.device)[positive_u]
        self.users.append(user_ids.cpu().numpy())
        self.items.append(positive_i.cpu().numpy())
        self.ranks.append(rank.cpu().numpy())

    def arrays(self):
        """``(users, items, ranks)`` as int64 arrays."""
        if not self.ranks:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        return tuple(np.concatenate(parts).astype(np.int64) for parts in (self.users, self.items, self.ranks))


class GroupEvaluator:
    """Group metrics for one model run.

    >>> groups = GroupEvaluator(config, train_data._dataset)
    >>> with groups.recording(trainer):
    ...     test_result = trainer.evaluate(test_data)
    >>> groups.result()          # OrderedDict of groups, or None when nothing was recorded

    Config keys: ``user_group_edges`` (default ``[4, 6]``), ``head_ratio`` (default 0.2), ``topk``,
    ``metric_decimal_place``.
    """

    def __init__(self, config, train_dataset):
        self.topk = list(config["topk"])
        edges = config["user_group_edges"]
        self.edges = _check_edges(DEFAULT_USER_GROUP_EDGES if edges is None else edges)
        ratio = config["head_ratio"]
        self.head_ratio = DEFAULT_HEAD_RATIO if ratio is None else float(ratio)
        if not 0.0 <= self.head_ratio <= 1.0:
            raise ValueError(f"head_ratio must be in [0, 1], got {self.head_ratio}")
        self.decimals = config["metric_decimal_place"]
        self.uid_field = config["USER_ID_FIELD"]
        self.train_dataset = train_dataset
        self.recorder = None
        self.group_sets = _check_group_sets(config["group_sets"])

    @property
    def user_lengths(self):
        """Training length per user id (computed on first use)."""
        if "_user_lengths" not in vars(self):
            self._user_lengths = user_train_lengths(self.train_dataset)
        return self._user_lengths

    @property
    def item_popularity(self):
        """Training interactions per item id (computed on first use)."""
        if "_item_popularity" not in vars(self):
            self._item_popularity = item_train_popularity(self.train_dataset)
        return self._item_popularity

    @property
    def head_mask(self):
        """Head flag per item id (computed on first use)."""
        if "_head_mask" not in vars(self):
            self._head_mask = head_item_mask(self.item_popularity, self.head_ratio)
        return self._head_mask

    @contextmanager
    def recording(self, trainer):
        """Within the block, every full-sort or sampled batch ``trainer`` evaluates is recorded
        (a new recording each time the block is entered)."""
        self.recorder = RankRecorder(self.uid_field, self.topk)
        recorder, uid_field = self.recorder, self.uid_field
        full, sampled = trainer._full_sort_batch_eval, trainer._neg_sample_batch_eval

        def recording_full(batched_data):
            out = full(batched_data)
            recorder.add(*out)
            return out

        def recording_sampled(batched_data):
            out = sampled(batched_data)
            interaction, scores, positive_u, positive_i = out
            if scores.dim() == 2:  # ranking (a value-type evaluation has nothing to rank)
                row_idx = batched_data[1].to(scores.device)
                user_of_row = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
                user_of_row[row_idx] = interaction[uid_field].to(scores.device).long()
                recorder.add(interaction, scores, positive_u, positive_i, user_of_row=user_of_row)
            return out

        trainer._full_sort_batch_eval = recording_full
        trainer._neg_sample_batch_eval = recording_sampled
        try:
            yield self
        finally:
            for name, wrapper in (("_full_sort_batch_eval", recording_full), ("_neg_sample_batch_eval", recording_sampled)):
                if vars(trainer).get(name) is wrapper:
                    delattr(trainer, name)

    def result(self):
        """Group metrics of the last recording, or None if nothing was recorded."""
        if self.recorder is None or len(self.recorder) == 0:
            return None
        users, items, ranks = self.recorder.arrays()
        return group_metrics(
            users, items, ranks, self.user_lengths, self.head_mask, self.topk, self.edges, self.decimals
        )

    def set_results(self):
        """``{set name: groups}`` of the ``group_sets`` definitions on the last recording's ranks
        (``{}`` when none is configured or nothing was recorded)."""
        if not self.group_sets or self.recorder is None or len(self.recorder) == 0:
            return {}
        users, items, ranks = self.recorder.arrays()
        out = OrderedDict()
        for name, spec in self.group_sets.items():
            edges = spec.get("user_group_edges") or self.edges
            if spec.get("item_tail_below") is not None:
                head = self.item_popularity >= int(spec["item_tail_below"])
                head[0] = False
            else:
                ratio = spec.get("head_ratio")
                head = self.head_mask if ratio is None else head_item_mask(self.item_popularity, ratio)
            out[name] = group_metrics(users, items, ranks, self.user_lengths, head, self.topk, edges, self.decimals)
        return out
