"""Length-grouped encoding: pay for real items, not for padding.

A batch is a uniform random draw of users, so its rows have very different lengths (Beauty: 8.7x
more padded slots than real items at ``MAX_ITEM_LIST_LENGTH`` 50, and the longest row of a batch
of 256 is ~48 on average, so trimming the batch to its own longest row gains nothing).  Here the
rows of one batch are ordered by length, split into groups, each group is encoded trimmed to its
own longest row, and the outputs are put back in the batch's order.  The batch itself is not
changed (augmentation partners are still drawn from the whole batch).

Exactness: with right padding and an encoder in which position ``t`` sees only positions ``<= t``
(causal: SASRec, GRU4Rec, NextItNet, FMLPRec with its causal filter) or only real positions
(padding-masked attention: BERT4Rec), the outputs at the real positions do not depend on how much
padding follows, so they are the same as the padded computation (tests: every backbone, outputs
and gradients).  Positions beyond a group's longest row are returned as zeros; nothing reads them
(every loss and metric is taken under the padding mask).

Where to cut: the cost of a group is modelled as ``n * l + overhead`` (``n`` rows trimmed to
length ``l``; ``overhead`` in token units is the fixed cost of one more encoder call: kernel
launches, small matmuls).  The cuts minimising the total are found exactly by dynamic programming
over the distinct lengths of the batch (at most ``MAX_ITEM_LIST_LENGTH`` of them).  The default
``group_overhead`` was measured on Beauty (``benchmarks/speed.py --overhead_sweep``, see
``results/speed.md``).
"""
import torch
import torch.nn.functional as F


def plan_groups(lengths, overhead):
    """Cut rows sorted by length into groups minimising ``sum(n_g * l_g) + overhead * n_groups``.

    Args:
        lengths: (B,) int tensor of row lengths (any order).
        overhead: cost of one extra group, in tokens (``float('inf')``: a single group).
    Returns:
        (order, groups): ``order`` (B,) rows sorted by length; ``groups`` a list of
        ``(start, end, max_len)`` slices of ``order``.
    """
    order = torch.argsort(lengths, stable=True)
    sorted_len = lengths[order].tolist()
    B = len(sorted_len)
    if B == 0:
        return order, []
    # distinct lengths and the end index (exclusive) of each run in the sorted order
    values, ends = [], []
    for i, v in enumerate(sorted_len):
        if values and values[-1] == v:
            ends[-1] = i + 1
        else:
            values.append(v)
            ends.append(i + 1)
    m = len(values)
    if overhead == float("inf") or m == 1:
        return order, [(0, B, max(values[-1], 1))]
    best = [0.0] + [float("inf")] * m  # best[j]: cost of the first j runs
    cut = [0] * (m + 1)
    for j in range(1, m + 1):
        end, length = ends[j - 1], values[j - 1]
        for i in range(j):
            start = ends[i - 1] if i else 0
            cost = best[i] + (end - start) * length + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], m
    while j > 0:
        i = cut[j]
        groups.append((ends[i - 1] if i else 0, ends[j - 1], max(values[j - 1], 1)))
        j = i
    return order, groups[::-1]


def grouped_encode(encode, item_emb, item_seq, item_seq_len, overhead, last_only=False):
    """``encode(item_emb, item_seq, item_seq_len)`` over length groups of the batch.

    Returns (B, L, D) like ``encode`` (zeros beyond each group's longest row), or with
    ``last_only`` the (B, D) output at each row's last real item.
    """
    B, L = item_seq.shape
    order, groups = plan_groups(item_seq_len.clamp(0, L), overhead)
    if len(groups) == 1 and groups[0][2] == L:  # nothing to trim
        H = encode(item_emb, item_seq, item_seq_len)
        return gather_last(H, item_seq_len) if last_only else H
    outs = []
    for start, end, length in groups:
        rows = order[start:end]
        lens = item_seq_len[rows]
        H = encode(item_emb[rows, :length], item_seq[rows, :length], lens)
        outs.append(gather_last(H, lens) if last_only else F.pad(H, (0, 0, 0, L - length)))
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(B, device=order.device)
    return torch.cat(outs, 0)[inverse]


def gather_last(H, item_seq_len):
    """(B, D): the output at each row's last real item (position ``len - 1``)."""
    idx = (item_seq_len - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, H.size(-1))
    return H.gather(1, idx).squeeze(1)
